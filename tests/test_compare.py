"""``seglab compare`` end to end on a tiny synthetic dataset (real training, seconds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.compare import compare, parse_model_entry
from seglab.errors import ConfigError

TINY_RECIPE = [
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "data.num_workers=0",
    "augment.crop_size=null",
    "augment.scale_range=null",
    "optim.name=adamw",
    "optim.lr=0.003",
    "trainer.early_stop_patience=null",
    "trainer.checkpoint_every_n_steps=null",
    "trainer.progress=false",
    "eval.num_panels=0",
]
TINY_MODELS = ["unet:base_channels=4,depth=2", "unet:base_channels=8,depth=2"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    from seglab.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(root, n_train=8, n_val=4, n_test=4, size=(32, 32), num_classes=3)
    return f"folder:{root}"


@pytest.fixture(scope="module")
def first_compare(tiny_data: str, tmp_path_factory: pytest.TempPathFactory):
    runs = tmp_path_factory.mktemp("runs")
    messages: list[str] = []
    outcome = compare(
        TINY_MODELS,
        tiny_data,
        overrides=TINY_RECIPE,
        name="tiny",
        epochs=2,
        runs_root=runs,
        gallery_size=2,
        progress=messages.append,
    )
    return runs, outcome, messages


def test_parse_model_entry_reads_per_model_options() -> None:
    assert parse_model_entry("unet:base_channels=16,depth=3") == (
        "unet",
        {"base_channels": "16", "depth": "3"},
        "unet-base_channels16-depth3",
    )
    assert parse_model_entry("pspnet_resnet18") == ("pspnet_resnet18", {}, "pspnet_resnet18")
    assert parse_model_entry("unet:depth=2,label=small") == ("unet", {"depth": "2"}, "small")
    with pytest.raises(ConfigError, match="key=value"):
        parse_model_entry("unet:base_channels")


def test_compare_trains_benchmarks_and_reports(first_compare) -> None:
    runs, outcome, messages = first_compare
    assert [r.status for r in outcome.results] == ["trained", "trained"]
    for result in outcome.results:
        assert (runs / "tiny" / result.label / "metrics.json").is_file()
        assert 0.0 <= result.metrics["miou"] <= 1.0
        assert len(result.history) == 2
        assert result.bench["params"] > 0 and result.bench["latency_ms"] > 0
        assert result.bench["gflops"] > 0 and result.bench["size_mb"] > 0
    # The wider U-Net has more parameters: the benchmark measured each model, not one.
    assert outcome.results[1].bench["params"] > outcome.results[0].bench["params"]
    document = json.loads(outcome.report.results.read_text())
    assert [m["label"] for m in document["models"]] == [r.label for r in outcome.results]
    assert len(document["gallery"]) == 2 and len(document["gallery"][0]) == 4
    html = outcome.report.html.read_text()
    assert html.count('class="plot"') == 4
    assert "All trained models share one recipe" in html
    assert any(m.startswith("training unet-base_channels4") for m in messages)


def test_rerun_reuses_finished_runs_and_evaluates_folders(first_compare, tiny_data: str) -> None:
    runs, first, _ = first_compare
    run_dir = runs / "tiny" / first.results[0].label
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    messages: list[str] = []
    # A registry name with a finished run is reused; a model folder is evaluated as it is.
    outcome = compare(
        [TINY_MODELS[0], str(runs / "tiny" / first.results[1].label / "model")],
        tiny_data,
        overrides=TINY_RECIPE,
        name="tiny",
        epochs=2,
        runs_root=runs,
        gallery_size=1,
        progress=messages.append,
    )
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp  # not retrained
    assert any("reusing finished run" in m for m in messages)
    assert [r.status for r in outcome.results] == ["reused", "evaluated"]
    evaluated = outcome.results[1]
    assert evaluated.metrics["miou"] == pytest.approx(first.results[1].metrics["miou"], abs=1e-6)


def test_cli_compare_reports_bad_input_without_traceback(tiny_data: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["compare", "unet:depth", "--data", tiny_data, "--runs-root", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "key=value" in result.output
    assert "Traceback" not in result.output


def test_shared_recipe_options_stay_with_their_own_model(tiny_data: str, tmp_path: Path) -> None:
    # The recipe's options (torchvision weights) are not options of a U-Net: they must not leak.
    recipe = tmp_path / "lraspp.yaml"
    recipe.write_text(
        "model:\n  name: lraspp_mobilenet_v3_large\n"
        "  options: {weights: null, backbone_weights: null}\n"
    )
    outcome = compare(
        ["unet:base_channels=4,depth=2"],
        tiny_data,
        recipe=str(recipe),
        overrides=TINY_RECIPE,
        name="mixed",
        epochs=1,
        runs_root=tmp_path / "runs",
        gallery_size=1,
        progress=lambda _: None,
    )
    run = tmp_path / "runs" / "mixed" / "unet-base_channels4-depth2"
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["model"]["options"]["base_channels"] == 4
    assert "weights" not in saved["model"]["options"]
    assert len(outcome.results) == 1


def test_family_entries_get_one_folder_and_labels_are_folder_safe() -> None:
    assert parse_model_entry("smp:unet/resnet34:encoder_depth=4")[2] == (
        "smp_unet_resnet34-encoder_depth4"
    )
    with pytest.raises(ConfigError, match="label='a/b' names a run folder"):
        parse_model_entry("unet:label=a/b")


def test_a_finished_run_of_another_recipe_is_refused_naming_the_difference(
        first_compare, tiny_data: str) -> None:
    runs, first, _ = first_compare
    run_dir = runs / "tiny" / first.results[0].label
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    with pytest.raises(ConfigError) as info:
        compare([TINY_MODELS[0]], tiny_data, overrides=TINY_RECIPE, name="tiny", epochs=3,
                runs_root=runs, gallery_size=1, progress=lambda message: None)
    message = str(info.value)
    assert str(run_dir) in message
    assert "trainer.max_epochs: the run had 2, this asks 3" in message
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp  # untouched
