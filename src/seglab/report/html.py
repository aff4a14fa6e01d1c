# ruff: noqa: E501  (the HTML/CSS template reads better unwrapped)
"""report.html: one self-contained file (inline CSS, images as data URIs, no scripts).

The template lives in this module (not a package-data file) so the report renders from any
install, wheel or editable, without packaging configuration.
"""

from __future__ import annotations

import base64
from typing import Any

import jinja2

STYLE = """
  :root { --ink:#1d2430; --muted:#5d6878; --line:#dfe3ea; --accent:#2f6fdf; --best:#e7f5ea; --bg:#f6f7fa; }
  * { box-sizing: border-box; }
  body { margin:0; font: 15px/1.5 -apple-system, "Segoe UI", "Liberation Sans", Helvetica, Arial, sans-serif;
         color:var(--ink); background:var(--bg); }
  header { background:#1d2430; color:#fff; padding:28px 40px 22px; }
  header h1 { margin:0 0 6px; font-size:26px; font-weight:600; }
  header p { margin:0; color:#c5cbd6; }
  main { max-width:1400px; margin:0 auto; padding:24px 24px 60px; }
  section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:20px 24px; margin:0 0 22px; }
  h2 { font-size:19px; margin:0 0 12px; }
  p.note { color:var(--muted); margin:6px 0 0; font-size:13.5px; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(210px, 1fr)); gap:14px; margin-bottom:22px; }
  .card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 18px; }
  .card .k { color:var(--muted); font-size:12.5px; text-transform:uppercase; letter-spacing:.04em; }
  .card .v { font-size:17px; font-weight:600; margin-top:2px; overflow-wrap:anywhere; }
  .card .s { color:var(--muted); font-size:13px; }
  table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
  th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
  th { background:#f0f2f6; font-weight:600; font-size:13px; }
  /* At 1,400 px every column shows: headers and model names wrap instead of scrolling. */
  table.comparison th { white-space:normal; }
  table.comparison th, table.comparison td { padding:6px 7px; }
  table.comparison td:first-child { white-space:normal; overflow-wrap:anywhere; text-align:left; min-width:11em; }
  table.comparison td:first-child .tag { margin-left:0; margin-right:4px; }
  th:first-child, td:first-child { text-align:left; }
  td.best { background:var(--best); font-weight:700; }
  .scroll { overflow-x:auto; }
  .tag { display:inline-block; font-size:11px; padding:1px 7px; border-radius:9px; margin-left:6px;
         background:#eef2fb; color:var(--accent); vertical-align:middle; }
  .tag.pareto { background:#fff3d6; color:#8a5a00; }
  figure { margin:0; }
  figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
  .gallery { border-collapse:separate; border-spacing:6px; width:auto; }
  .gallery th { background:none; text-align:center; font-size:13px; border:none; }
  .gallery td { border:none; padding:0; text-align:center; vertical-align:top; white-space:normal; }
  .gallery img { width:210px; height:auto; display:block; border-radius:4px; image-rendering:pixelated; }
  .gallery .cap { font-size:11.5px; color:var(--muted); }
  .legend { display:flex; flex-wrap:wrap; gap:6px 16px; margin:4px 0 12px; font-size:13px; }
  .legend span.sw { display:inline-block; width:14px; height:14px; border-radius:3px; border:1px solid #0003;
                    vertical-align:-2px; margin-right:5px; }
  details summary { cursor:pointer; color:var(--accent); margin-top:10px; }
  code { background:#f0f2f6; padding:1px 5px; border-radius:4px; font-size:13px; }
  ul.plain { margin:6px 0 0; padding-left:20px; }
  .warn { border-left:4px solid #e0a100; padding-left:12px; }
"""

# The head, header and summary cards of the page; the study report (study/page.py) shares
# them, with its own sections after.
PAGE_HEAD = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style | safe }}</style>
</head>
<body>
<header>
  <h1>{{ title }}</h1>
  <p>{{ subtitle }}</p>
</header>
<main>

<div class="cards">
{% for card in cards %}
  <div class="card"><div class="k">{{ card.key }}</div><div class="v">{{ card.value }}</div><div class="s">{{ card.sub }}</div></div>
{% endfor %}
</div>
"""

TEMPLATE = PAGE_HEAD + r"""
<section id="table">
  <h2>Comparison</h2>
  <div class="scroll">
  <table class="comparison">
    <thead><tr><th>Model</th>{% for c in columns %}<th>{{ c.title }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for row in rows %}
      <tr><td>{{ row.label }}<br>{% if row.pareto %}<span class="tag pareto" title="on the mIoU-vs-latency Pareto front">Pareto</span>{% endif %}<span class="tag">{{ row.status }}</span></td>
      {% for cell in row.cells %}<td{% if cell.best %} class="best"{% endif %}>{{ cell.text }}</td>{% endfor %}</tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  <p class="note">Accuracy on the <b>{{ split }}</b> split{% if num_images %} ({{ num_images }} images){% endif %}; best value of each column highlighted.
  {{ bench_note }}</p>
  {% if differences %}
  <div class="warn"><p><b>The models were not trained under one recipe.</b> Settings that differ:</p>
  <table><thead><tr><th>setting</th>{% for label in labels %}<th>{{ label }}</th>{% endfor %}</tr></thead><tbody>
  {% for key, values in differences.items() %}<tr><td><code>{{ key }}</code></td>{% for label in labels %}<td>{{ values.get(label, '–') }}</td>{% endfor %}</tr>{% endfor %}
  </tbody></table></div>
  {% elif fair %}<p class="note">All trained models share one recipe (only <code>model.*</code> differs).</p>{% endif %}
</section>

{% if significance %}
<section id="significance">
  <h2>Which differences are real</h2>
  <p>Ranking ({{ significance.level }}% level; models in braces are not distinguishable): <b>{{ significance.ranking }}</b></p>
  <div class="scroll"><table class="significance">
    <thead><tr>{% for h in significance.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for row in significance.rows %}<tr>{% for cell in row %}<td{% if loop.last and cell == "significant" %} class="best"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
    </tbody>
  </table></div>
  <p class="note">{{ significance.method }} {{ significance.num_images }} images.{% if significance.left_out %} Left out (no per-image counts): {{ significance.left_out | join(", ") }}.{% endif %}</p>
</section>
{% endif %}

{% if seeds %}
<section id="seeds">
  <h2>Over training seeds</h2>
  <ul class="plain">{% for line in seeds %}<li>{{ line }}</li>{% endfor %}</ul>
  <p class="note">Mean ± sample standard deviation over the seeds, and the Student-t 95% interval of the mean: what the training seed moves, which the per-image intervals cannot see.</p>
</section>
{% endif %}

{% if per_image %}
<section id="per-image">
  <h2>Per-image scores</h2>
  <figure><img class="spread" src="{{ per_image.uri }}" alt="Per-image mIoU"></figure>
  <p class="note">Each dot is one image's mIoU (over the classes in its truth or prediction); the boxes span the middle half.</p>
  <table><thead><tr><th>Model</th><th>hardest images (mIoU %, worst class IoU %)</th></tr></thead><tbody>
  {% for row in per_image.worst %}<tr><td>{{ row.label }}</td><td style="text-align:left; white-space:normal">{% for i in row.images %}<code>{{ i.image }}</code> {{ i.miou }} ({{ i.worst }}){% if not loop.last %}; {% endif %}{% endfor %}</td></tr>{% endfor %}
  </tbody></table>
  {% for row in per_image.worst if row.panels %}
  <h3 class="worst-model">{{ row.label }}: its hardest images</h3>
  <div class="scroll"><table class="gallery worst" data-model="{{ row.label }}">
    <thead><tr>{% for cell in row.panels[0] %}<th>{{ cell.title }}</th>{% endfor %}</tr></thead>
    <tbody>{% for cells in row.panels %}<tr>{% for cell in cells %}<td><img class="gallery-img" src="{{ cell.uri }}" alt="{{ row.label }} {{ cell.title }}"><div class="cap">{{ cell.caption }}</div></td>{% endfor %}</tr>{% endfor %}</tbody>
  </table></div>
  {% endfor %}
  {% if per_image.worst | selectattr("panels") | list %}<p class="note">Each model run again on its own hardest images: the error map shows its wrong pixels in red (ignored pixels black).</p>{% endif %}
</section>
{% endif %}

{% for fig in figures %}
<section id="{{ fig.id }}">
  <h2>{{ fig.title }}</h2>
  <figure><img class="plot" src="{{ fig.uri }}" alt="{{ fig.title }}"></figure>
  {% if fig.note %}<p class="note">{{ fig.note }}</p>{% endif %}
  {% if fig.id == "per-class" and per_class_rows %}
  <details><summary>Per-class IoU table</summary>
  <div class="scroll"><table><thead><tr><th>Class</th>{% for label in labels %}<th>{{ label }}</th>{% endfor %}</tr></thead><tbody>
  {% for row in per_class_rows %}<tr><td>{{ row.name }}</td>{% for cell in row.cells %}<td{% if cell.best %} class="best"{% endif %}>{{ cell.text }}</td>{% endfor %}</tr>{% endfor %}
  </tbody></table></div></details>
  {% endif %}
</section>
{% endfor %}

{% if gallery %}
<section id="gallery">
  <h2>Predictions</h2>
  <div class="legend">{% for name, rgb in legend %}<span><span class="sw" style="background:rgb({{ rgb[0] }},{{ rgb[1] }},{{ rgb[2] }})"></span>{{ name }}</span>{% endfor %}
  <span><span class="sw" style="background:#000"></span>ignored</span></div>
  <div class="scroll">
  <table class="gallery">
    <thead><tr>{% for cell in gallery[0] %}<th>{{ cell.title }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for row in gallery %}<tr>{% for cell in row %}<td><img class="gallery-img" src="{{ cell.uri }}" alt="{{ cell.title }}"><div class="cap">{{ cell.caption }}</div></td>{% endfor %}</tr>{% endfor %}
    </tbody>
  </table>
  </div>
  <p class="note">Captions: pixel accuracy and mIoU of each model on that image alone.</p>
</section>
{% endif %}

<section id="method">
  <h2>How this was measured</h2>
  <ul class="plain">
    <li>Scores come from one dataset-level confusion matrix per model (not averages of per-image scores); mIoU averages the classes present in the truth or the prediction; ignored pixels are not counted.</li>
    {% for line in method %}<li>{{ line }}</li>{% endfor %}
  </ul>
  <p class="note">Models:</p>
  <ul class="plain">{% for row in rows %}<li><b>{{ row.label }}</b> ({{ row.status }}): <code>{{ row.source }}</code></li>{% endfor %}</ul>
  <p class="note">Generated by seglab {{ version }} on {{ created }}.{% if command %} Command: <code>{{ command }}</code>{% endif %}</p>
</section>

</main>
</body>
</html>
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """Bytes as a ``data:`` URI, so the page needs no other file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_page(template: str, context: dict[str, Any]) -> str:
    """Render a page template (``PAGE_HEAD`` + sections), HTML-escaping every value."""
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(template).render(**context)


def render_html(context: dict[str, Any]) -> str:
    """Render the compare report page."""
    return render_page(TEMPLATE, {"style": STYLE, **context})
