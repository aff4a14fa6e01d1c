"""The report's significance section: paired differences in mIoU and the ranking groups."""

from __future__ import annotations

from typing import Any

from seglab.report.tables import markdown_table


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def pair_rows(significance: dict[str, Any]) -> list[list[str]]:
    """``[A - B, difference, interval, p (bootstrap), p (permutation), verdict]`` per pair."""
    rows = []
    for pair in significance["pairs"]:
        low, high = pair["interval"]
        rows.append([
            f"{pair['a']} - {pair['b']}",
            _points(pair["difference"]),
            f"[{_points(low)}, {_points(high)}]",
            f"{pair['p_bootstrap']:.3g}",
            f"{pair['p_permutation']:.3g}",
            "significant" if pair["significant"] else "not significant",
        ])
    return rows


HEADER = ["pair", "mIoU difference (points)", "interval", "p (bootstrap)", "p (permutation)",
          "verdict"]


def significance_context(significance: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the HTML template shows, or None without a significance table."""
    if not significance:
        return None
    return {
        "header": HEADER,
        "rows": pair_rows(significance),
        "ranking": significance["ranking"],
        "method": significance["method"],
        "level": int(round(100 * significance["level"])),
        "num_images": significance["num_images"],
        "left_out": significance.get("left_out") or [],
    }


def significance_markdown(significance: dict[str, Any] | None) -> str:
    """The report.md section (empty without a significance table)."""
    if not significance:
        return ""
    level = int(round(100 * significance["level"]))
    lines = [
        "",
        "## Which differences are real",
        "",
        f"Ranking (models in braces are not distinguishable at {level}%): "
        f"**{significance['ranking']}**",
        "",
        markdown_table(HEADER, pair_rows(significance)),
        "",
        f"{significance['method']} ({significance['num_images']} images.)",
    ]
    if significance.get("left_out"):
        lines += ["", "Left out (no per-image counts): " + ", ".join(significance["left_out"])]
    return "\n".join(lines) + "\n"
