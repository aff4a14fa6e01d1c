"""The comparison report, built from run folders written by hand in the docs/internals.md format."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from seglab.data.classes import ClassMap
from seglab.errors import DataError, SeglabError
from seglab.metrics import metrics_from_confusion
from seglab.report import (
    GallerySample,
    ModelResult,
    ReportInfo,
    is_finished_run,
    load_run,
    pareto_front,
    recipe_differences,
    write_report,
)
from seglab.report.tables import active_columns, comparison_markdown, table_rows

CLASSMAP = ClassMap(
    names=("sky", "road", "car", "person"),
    colors=((128, 128, 128), (128, 64, 128), (64, 0, 128), (220, 20, 60)),
)


def make_run_folder(
    root: Path, name: str, *, skill: float, epochs: int = 3, seed: int = 0, lr: float = 0.01
) -> Path:
    """A finished run folder in the contract's format; ``skill`` in 0..1 sets how accurate it is."""
    rng = np.random.default_rng(seed)
    run = root / name
    (run / "model").mkdir(parents=True)
    n = CLASSMAP.num_classes
    support = np.array([4000, 6000, 1500, 300])
    cm = np.zeros((n, n), dtype=np.int64)
    for i, total in enumerate(support):
        correct = int(total * skill)
        wrong = rng.multinomial(total - correct, np.ones(n - 1) / (n - 1))
        cm[i, i] = correct
        cm[i, [j for j in range(n) if j != i]] = wrong
    metrics = metrics_from_confusion(cm, CLASSMAP.names, include_confusion=False)
    metrics.update(split="test", num_images=12, train_time_s=30.0 + 100 * skill, epochs=epochs)
    (run / "metrics.json").write_text(json.dumps(metrics, allow_nan=True))
    np.save(run / "confusion.npy", cm)
    with (run / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["epoch", "train_loss", "val_loss", "val_miou", "val_pixel_acc", "lr", "time_s"]
        )
        for epoch in range(epochs):
            progress = (epoch + 1) / epochs
            writer.writerow(
                [
                    epoch,
                    2.0 - progress * skill,
                    2.1 - progress * skill,
                    skill * progress,
                    0.5 + 0.4 * progress,
                    lr,
                    10 * (epoch + 1),
                ]
            )
    recipe = {"model": {"name": name}, "data": {"spec": "folder:x"}, "optim": {"lr": lr}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "model" / "config.json").write_text(json.dumps({"model": {"name": name}}))
    return run


def make_results(root: Path) -> list[ModelResult]:
    """Three reused runs with benchmark figures: a fast weak, a balanced and a slow strong model."""
    specs = [("fastnet", 0.55, 8.0, 1.2e6), ("midnet", 0.75, 20.0, 5e6), ("bignet", 0.8, 90.0, 4e7)]
    results = []
    for seed, (name, skill, latency, params) in enumerate(specs):
        result = load_run(make_run_folder(root, name, skill=skill, seed=seed))
        result.bench = {
            "params": params,
            "size_mb": params * 4 / 1e6,
            "gflops": params / 1e5,
            "latency_ms": latency,
            "device": "cpu",
            "input": "64x64",
        }
        results.append(result)
    return results


def make_gallery(results: list[ModelResult], count: int = 2) -> list[GallerySample]:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(count):
        truth = rng.integers(0, CLASSMAP.num_classes, size=(24, 32))
        truth[:2] = CLASSMAP.ignore_index
        image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        preds = {r.label: np.where(rng.random((24, 32)) < 0.7, truth % 4, 0) for r in results}
        samples.append(GallerySample(f"img{i}", image, truth, preds))
    return samples


def test_load_run_reads_every_contract_file(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, "unet", skill=0.7, epochs=4)
    assert is_finished_run(run)
    result = load_run(run)
    assert result.label == "unet" and result.status == "reused"
    assert len(result.history) == 4 and result.history[-1]["val_miou"] == pytest.approx(0.7)
    assert result.confusion.shape == (4, 4)
    assert result.epochs == 4 and result.train_time_s == pytest.approx(100.0)
    assert result.per_class_iou(list(CLASSMAP.names))[0] == pytest.approx(
        result.metrics["per_class"]["sky"]["iou"]
    )


def test_unfinished_or_broken_runs_are_recognised(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, "a", skill=0.5)
    (run / "model" / "config.json").unlink()
    assert not is_finished_run(run)  # no model/: training did not finish
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    assert not is_finished_run(broken)
    with pytest.raises(DataError, match="not valid JSON"):
        load_run(broken)
    with pytest.raises(DataError, match="run folder not found"):
        load_run(tmp_path / "missing")


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(10.0, 0.5), (20.0, 0.7), (15.0, 0.4), (30.0, 0.7), (40.0, 0.9)]
    assert pareto_front(points) == [0, 1, 4]
    assert pareto_front([(5.0, 0.3)]) == [0]


def test_recipe_differences_flag_unfair_comparisons(tmp_path: Path) -> None:
    a = load_run(make_run_folder(tmp_path, "a", skill=0.5, lr=0.01))
    b = load_run(make_run_folder(tmp_path, "b", skill=0.6, lr=0.01))
    assert recipe_differences([a, b]) == {}  # only model.name differs: fair
    c = load_run(make_run_folder(tmp_path, "c", skill=0.6, lr=0.1))
    assert recipe_differences([a, c]) == {"optim.lr": {"a": 0.01, "c": 0.1}}


def test_table_marks_best_values_and_hides_empty_columns(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    columns = active_columns(results)
    keys = [c.key for c in columns]
    assert "gpu_mem_mb" not in keys  # no GPU was used
    assert keys[:5] == ["miou", "pixel_acc", "mean_acc", "mean_dice", "f1_macro"]
    rows = table_rows(results, columns)
    miou = keys.index("miou")
    latency = keys.index("latency_ms")
    assert [row[miou].best for row in rows] == [False, False, True]
    assert [row[latency].best for row in rows] == [True, False, False]
    assert rows[0][latency].text == "8.0"
    markdown = comparison_markdown(results)
    assert markdown.count("\n") == len(results) + 1
    assert f"**{100 * results[2].metrics['miou']:.1f}**" in markdown


def test_write_report_writes_html_markdown_json_and_figures(tmp_path: Path) -> None:
    results = make_results(tmp_path / "runs")
    gallery = make_gallery(results)
    info = ReportInfo(title="Test comparison", data="folder:x", command="seglab compare ...")
    files = write_report(results, CLASSMAP, tmp_path / "compare", gallery=gallery, info=info)

    html = files.html.read_text()
    # Self-contained: every image is a data URI and nothing is fetched from elsewhere.
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    assert "<script" not in html
    assert html.count('class="plot"') == 4  # pareto, per-class, curves, confusion
    assert html.count('class="gallery-img"') == 2 * (2 + len(results))
    for result in results:
        assert result.label in html

    document = json.loads(files.results.read_text())
    assert [m["label"] for m in document["models"]] == ["fastnet", "midnet", "bignet"]
    assert document["pareto_front"] == ["fastnet", "midnet", "bignet"]
    assert document["models"][0]["metrics"]["miou"] == pytest.approx(results[0].metrics["miou"])
    assert document["classes"]["names"] == list(CLASSMAP.names)
    for relative in document["figures"].values():
        assert (files.folder / relative).is_file()
    for row in document["gallery"]:
        assert all((files.folder / rel).is_file() for rel in row)

    markdown = files.markdown.read_text()
    assert "| Model | mIoU %" in markdown
    assert "](figures/miou_vs_latency.png)" in markdown
    assert "## Predictions" in markdown


def test_report_flags_a_dominated_model_and_rewrites_atomically(tmp_path: Path) -> None:
    results = make_results(tmp_path / "runs")
    results[2].bench["latency_ms"] = 5.0  # bignet is now fastest and most accurate
    out = tmp_path / "compare"
    (out / "stale.txt").parent.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    write_report(results, CLASSMAP, out)
    assert not (out / "stale.txt").exists()  # the folder is replaced as a whole
    document = json.loads((out / "results.json").read_text())
    assert document["pareto_front"] == ["bignet"]
    assert document["gallery"] == []


def test_report_without_benchmarks_or_history_still_renders(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path, "solo", skill=0.6)
    (run / "history.csv").unlink()
    (run / "confusion.npy").unlink()
    result = load_run(run)
    files = write_report([result], CLASSMAP, tmp_path / "out")
    html = files.html.read_text()
    assert html.count('class="plot"') == 1  # only per-class IoU has data
    assert "Latency" not in html


def test_report_rejects_duplicate_labels_and_empty_input(tmp_path: Path) -> None:
    result = load_run(make_run_folder(tmp_path, "x", skill=0.5))
    with pytest.raises(SeglabError, match="unique"):
        write_report([result, result], CLASSMAP, tmp_path / "out")
    with pytest.raises(SeglabError, match="no models"):
        write_report([], CLASSMAP, tmp_path / "out")
