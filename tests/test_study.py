"""Studies: search-space parsing and errors, a tiny study end to end, resume, storages, grid,
two worker processes on one storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from seglab.artifacts.rundir import is_finished, read_history
from seglab.cli.main import app
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.errors import ConfigError
from seglab.study import best_recipe, load_results, load_spec, parse_space, run_study
from seglab.study.pruning import TrialReporter
from seglab.study.space import validate_space
from seglab.study.storage import host_id, is_dead, open_storage, owner_attrs, storage_url

BASE = {
    "data": {"spec": "synthetic:/nonexistent", "batch_size": 4, "num_workers": 0},
    "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
}


# --- search spaces and study files (no training) ---------------------------------------------


def test_space_parses_every_kind_and_samples_recipe_values() -> None:
    space = parse_space({
        "optim.lr": {"log_uniform": [1e-4, 1e-2]},
        "optim.momentum": {"uniform": [0.8, 0.95], "step": 0.05},
        "loss.class_weight_params.X": {"int": [10, 100], "step": 10},
        "augment.crop_size": {"choice": [[32, 32], [24, 24]]},
        "model.name": {"choice": {
            "unet": {"model.options.depth": {"choice": [2, 3]}},
            "lraspp_mobilenet_v3_large": {
                "model.options": {"weights": None}, "model.freeze": "last:2"},
        }},
    })  # fmt: skip
    validate_space(space, BASE)
    assert space.keys[:3] == ["optim.lr", "optim.momentum", "loss.class_weight_params.X"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_models = set()
    for _ in range(12):
        params, fixed = space.sample(study.ask())
        assert 1e-4 <= params["optim.lr"] <= 1e-2
        assert params["loss.class_weight_params.X"] % 10 == 0
        assert params["augment.crop_size"] in ([32, 32], [24, 24])  # lists survive Optuna
        seen_models.add(params["model.name"])
        if params["model.name"] == "unet":
            assert params["model.options.depth"] in (2, 3) and not fixed
        else:
            assert "model.options.depth" not in params
            assert fixed == {"model.options": {"weights": None}, "model.freeze": "last:2"}
    assert seen_models == {"unet", "lraspp_mobilenet_v3_large"}


def test_conditional_grid_is_the_union_of_each_choice_s_product() -> None:
    space = parse_space({
        "model.name": {"choice": {
            "fcn_resnet50": {"model.freeze": {"choice": ["last:1", "last:2"]}},
            "lraspp_mobilenet_v3_large": {
                "model.freeze": {"choice": ["last:1", "last:2", "last:3"]}},
        }},
        "optim.name": {"choice": ["sgd", "adam"]},
    })  # fmt: skip
    points = space.grid()
    assert len(points) == (2 + 3) * 2
    decoded = [space.decode(p)[0] for p in points]
    assert len({json.dumps(d, sort_keys=True) for d in decoded}) == len(points)
    assert {"model.name": "lraspp_mobilenet_v3_large", "model.freeze": "last:3",
            "optim.name": "adam"} in decoded  # fmt: skip


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optim.lrr": {"uniform": [0.1, 0.2]}}, "field 'lrr' in optim (did you mean optim.lr?)"),
        ({"optimizer.lr": {"uniform": [0.1, 0.2]}}, "unknown recipe field 'optimizer'"),
        ({"optim.lr.x": {"uniform": [0.1, 0.2]}}, "optim.lr is a value"),
        ({"optim": {"choice": [1, 2]}}, "is a whole section"),
        ({"optim.lr": {"uniform": [0.2, 0.1]}}, "low 0.2 must be below high 0.1"),
        ({"optim.lr": {"log_uniform": [0, 0.1]}}, "log scale needs low > 0"),
        ({"optim.lr": {"uniform": [-0.1, 0.1]}}, "optim.lr = -0.1"),
        ({"data.batch_size": {"choice": [1, 4]}}, "data.batch_size = 1"),
        ({"data.batch_size": {"int": [2.5, 8]}}, "whole numbers"),
        ({"optim.name": {"choice": []}}, "non-empty list"),
        ({"optim.name": {"choice": ["sgd", "sgd"]}}, "lists a value twice"),
        ({"optim.name": {"choice": ["sgd", "lion"]}}, "optim.name = 'lion'"),
        ({"optim.lr": 0.1}, "expected a dimension"),
        ({"optim.lr": {"normal": [0, 1]}}, "expected a dimension"),
        ({"optim.lr": {"uniform": [0.1, 0.2], "step": 1}}, "larger than the range"),
        ({"model.name": {"choice": ["unet", "unett"]}}, "unknown model 'unett'"),
        ({"optim.lr": {"uniform": [0.1, 0.2]}, "model.name": {"choice": {
            "unet": {"optim.lr": {"uniform": [0.2, 0.3]}}}}}, "optim.lr set twice"),
    ],
)
def test_bad_spaces_are_errors_naming_the_key(space: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_space(parse_space(space), BASE)
    assert message in str(info.value)


def test_grid_refuses_a_continuous_range() -> None:
    with pytest.raises(ConfigError, match="optim.lr: a grid needs a finite set"):
        validate_space(parse_space({"optim.lr": {"log_uniform": [1e-3, 1e-1]}}), BASE, grid=True)
    grid = parse_space({"optim.lr": {"uniform": [0.01, 0.03], "step": 0.01}}).grid()
    assert [p["optim.lr"] for p in grid] == [0.01, 0.02, 0.03]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pruner": "median", "objective": {"metric": "miou"}}, "needs a per-epoch objective"),
        ({"pruner": "median", "objective": [{"metric": "val_miou"},
          {"metric": "latency_ms", "direction": "minimize"}]}, "pruner needs a single objective"),
        ({"objective": {"metric": "val_mious"}}, "unknown metric 'val_mious'"),
        ({"sampler": "cmaes"}, "sampler.name"),
        ({"trails": 3}, "trails: unknown key"),
        ({"grid": True, "sampler": "random"}, "conflicts with sampler 'random'"),
    ],
)
def test_bad_study_files_are_errors(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec({"name": "s", "base": BASE, "space": {"optim.lr": {"uniform": [0.01, 0.1]}},
                   **changes})  # fmt: skip
    assert message in str(info.value)


def test_base_recipe_path_and_the_shipped_study_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="base recipe 'nope.yaml' not found"):
        load_spec({"name": "s", "base": "nope.yaml"}).base_mapping()
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path))  # the files use ${SEGLAB_DATA}
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # base paths as the README runs them
    files = sorted(Path(__file__).resolve().parents[1].glob("configs/studies/*.yaml"))
    assert len(files) >= 5
    for path in files:
        spec = load_spec(path)
        spec.validate_all()  # every field and value checked against the Recipe


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_samplers_are_seeded_per_trial_number(name: str) -> None:
    from seglab.study.sampling import make_sampler
    from seglab.study.spec import SamplerSpec

    space = parse_space({"optim.lr": {"log_uniform": [1e-4, 1e-1]},
                         "optim.name": {"choice": ["sgd", "adam", "rmsprop"]}})  # fmt: skip

    def draws(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(SamplerSpec(name=name), seed, None))
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(space.sample(trial)[0])
            study.tell(trial, 0.5)
        return out

    first, again, other = draws(0), draws(0), draws(1)
    assert first == again  # one worker: reproducible
    assert first[0] != first[1] and first[0] != other[0]  # two workers' trials 0 and 1 differ


def test_reporter_reports_each_epoch_and_prunes_a_trial_behind() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))  # fmt: skip
    good = study.ask()
    for epoch, value in enumerate([0.5, 0.6, 0.7], start=1):
        good.report(value, epoch)
    study.tell(good, 0.7)

    trial = study.ask()
    seen = []
    reporter = TrialReporter(trial, "val_miou", on_epoch=lambda e, v: seen.append((e, v)))
    trainer = SimpleNamespace(callback_metrics={"val_miou": 0.55}, current_epoch=0)
    reporter.on_validation_end(trainer, None)
    reporter.on_train_epoch_end(trainer, None)  # 0.55 vs median 0.5: goes on
    reporter.on_train_epoch_start(trainer, None)
    trainer = SimpleNamespace(callback_metrics={"val_miou": 0.1}, current_epoch=1)
    reporter.on_validation_end(trainer, None)
    reporter.on_train_epoch_end(trainer, None)  # behind: stops as the next epoch starts
    with pytest.raises(optuna.TrialPruned, match=r"pruned after epoch 2 \(val_miou 0.1000\)"):
        reporter.on_train_epoch_start(trainer, None)
    assert seen == [(1, 0.55), (2, 0.1)]
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.55, 2: 0.1}


def test_storage_addresses_and_dead_trials(tmp_path: Path) -> None:
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert storage_url("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"
    assert storage_url(str(tmp_path / "j.log"), tmp_path) == f"journal:{tmp_path / 'j.log'}"
    with pytest.raises(ConfigError, match="neither a SQLAlchemy URL"):
        storage_url("somewhere", tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert not is_dead(owner_attrs())
    assert is_dead({**owner_attrs(), "seglab_pid": int(gone.stdout)})
    assert is_dead({"seglab_host": "elsewhere", "seglab_pid": 1, "seglab_heartbeat": 0.0})
    assert not is_dead({"seglab_host": "elsewhere", "seglab_pid": 1, "seglab_heartbeat": 1e12})
    assert host_id() == owner_attrs()["seglab_host"]


# --- studies that train (tiny synthetic data) ------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=6, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _study(data: Path, name: str, **changes) -> dict:
    base = {
        "data": {"spec": f"folder:{data}", "batch_size": 3, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32], "scale_range": None},
        "trainer": {"max_epochs": 2, "checkpoint_every_n_steps": None, "precision": "fp32",
                    "channels_last": False},
        "eval": {"num_panels": 0},
    }  # fmt: skip
    spec = {"name": name, "base": base, "space": {"optim.lr": {"log_uniform": [1e-3, 1e-1]},
            "optim.name": {"choice": ["sgd", "adam"]}}, "trials": 3, "seed": 0}  # fmt: skip
    spec.update(changes)
    return spec


class _PruneOdd(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial after its first epoch (a deterministic pruner)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


@pytest.fixture(scope="module")
def study_dir(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studies")
    spec_path = out / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(_study(synthetic, "tiny", pruner="median")))
    mp = pytest.MonkeyPatch()
    mp.setattr("seglab.study.sampling.make_pruner", lambda spec: _PruneOdd())
    try:
        result = CliRunner().invoke(
            app, ["study", "run", str(spec_path), "--out", str(out), "--json"]
        )
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout is exactly the JSON document
    assert doc["finished"] == 3
    return out / "tiny"


def test_a_three_trial_study_writes_run_folders_results_and_report(study_dir: Path) -> None:
    results = load_results(study_dir)
    states = {t["number"]: t["state"] for t in results["trials"]}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE"}
    assert [t["number"] for t in results["trials"]][-1] == 1  # pruned after the complete ones
    for trial in results["trials"]:
        assert set(trial) >= {"number", "state", "params", "value", "run_dir", "time_s"}
        assert set(trial["params"]) == {"optim.lr", "optim.name"}
        run = Path(trial["run_dir"])
        assert run == study_dir / "trials" / str(trial["number"])
        if trial["state"] == "COMPLETE":
            assert is_finished(run)  # an ordinary run folder: eval/predict/export/compare
            assert trial["value"] == pytest.approx(trial["metrics"]["val_miou"])
            assert trial["epochs"] == 2
        else:
            assert len(read_history(run)) == 1 and (run / "checkpoints" / "best.ckpt").is_file()
            assert trial["value"] == pytest.approx(trial["intermediate"]["1"])
    complete = [t for t in results["trials"] if t["state"] == "COMPLETE"]
    assert results["best"]["number"] == max(complete, key=lambda t: t["value"])["number"]
    assert results["pruning"]["pruned"] == 1 and results["pruning"]["estimated_saved_s"] > 0

    recipe = best_recipe(study_dir)
    best_run = study_dir / "trials" / str(results["best"]["number"])
    trial_recipe = Recipe.from_yaml(best_run / "recipe.yaml")
    assert recipe.optim == trial_recipe.optim and recipe.name == "tiny-best"
    html = (study_dir / "report.html").read_text()
    for needle in ("Trials, best first", "Optimisation history", "Slice plots",
                   "Parallel coordinates", "Per-epoch scores", "data:image/png;base64,"):
        assert needle in html, needle  # fmt: skip

    shown = CliRunner().invoke(app, ["study", "show", str(study_dir), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["finished"] == 3
    best = CliRunner().invoke(app, ["study", "best", "tiny", "--out", str(study_dir.parent)])
    assert best.exit_code == 0 and yaml.safe_load(best.stdout)["name"] == "tiny-best"


def test_rerun_after_a_kill_fails_the_dead_trial_and_reaches_the_count(
    study_dir: Path, synthetic: Path
) -> None:
    # A trial left RUNNING by a process that died (what SIGKILL mid-trial leaves behind).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    url = storage_url(None, study_dir)
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    orphan = study.ask()
    for key, value in {**owner_attrs(), "seglab_pid": int(dead.stdout)}.items():
        study._storage.set_trial_system_attr(orphan._trial_id, key, value)

    notes = []
    outcome = run_study(_study(synthetic, "tiny", pruner="median"), trials=4,
                        out=study_dir.parent, progress=notes.append)  # fmt: skip
    states = {t["number"]: t["state"] for t in outcome.results["trials"]}
    assert states[orphan.number] == "FAIL"
    assert outcome.results["finished"] == 4 and len(states) == 5  # nothing lost, nothing twice
    assert any(e.kind == "note" and f"trial {orphan.number} was interrupted" in e.message
               for e in notes)  # fmt: skip
    again = run_study(_study(synthetic, "tiny", pruner="median"), trials=4, out=study_dir.parent)
    assert len(again.results["trials"]) == 5 and again.stopped == "done"  # nothing re-run

    with pytest.raises(ConfigError, match="different base recipe, space or objective"):
        changed = _study(synthetic, "tiny", space={"optim.lr": {"uniform": [0.01, 0.1]}})
        run_study(changed, out=study_dir.parent)


def test_grid_sweep_on_a_journal_file(synthetic: Path, tmp_path: Path) -> None:
    journal = tmp_path / "sweep.log"
    spec = _study(synthetic, "sweep", grid=True, trials=None,
                  space={"optim.name": {"choice": ["sgd", "adam"]}})  # fmt: skip
    outcome = run_study(spec, storage=str(journal), out=tmp_path)
    assert journal.is_file() and not (tmp_path / "sweep" / "study.db").exists()
    assert sorted(t["params"]["optim.name"] for t in outcome.results["trials"]) == ["adam", "sgd"]
    (table,) = outcome.results["grid_tables"]
    assert table["rows"] == "optim.name" and len(table["cells"]) == 2
    assert "optim.name -&gt; val_miou" in (tmp_path / "sweep" / "report.html").read_text()
    # Two objectives on a SQLite URL: values per trial, a Pareto front.
    spec["objective"] = [{"metric": "val_miou"},
                         {"metric": "train_time_s", "direction": "minimize"}]  # fmt: skip
    pareto = run_study(spec, name="sweep_db", storage=f"sqlite:///{tmp_path}/other.db",
                       out=tmp_path)
    assert pareto.results["finished"] == 2 and (tmp_path / "other.db").is_file()
    for trial in pareto.results["trials"]:
        assert trial["values"] == [trial["metrics"]["val_miou"], trial["metrics"]["train_time_s"]]
    assert pareto.results["pareto"] and pareto.results["best"]["number"] in pareto.results["pareto"]
    assert "pareto" in pareto.files and "Pareto front" in pareto.files["report"].read_text()


def test_two_workers_share_one_storage_without_duplicates(synthetic: Path, tmp_path: Path) -> None:
    spec = _study(synthetic, "pair", grid=True, trials=None, space={
        "optim.name": {"choice": ["sgd", "adam"]}, "optim.lr": {"choice": [0.01, 0.03]}})
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "seglab", "study", "run", str(path), "--out", str(tmp_path),
               "--json"]  # fmt: skip
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]  # fmt: skip
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    results = load_results(tmp_path / "pair")
    trials = results["trials"]
    assert results["counts"]["COMPLETE"] == 4 and len(trials) == 4
    points = {(t["params"]["optim.name"], t["params"]["optim.lr"]) for t in trials}
    assert len(points) == 4  # every grid point once
    finished = [json.loads(out)["finished"] for out, _err in outputs]  # one JSON doc each
    assert max(finished) == 4


def test_the_report_s_train_command_parses_and_best_recipes_keep_the_data_root(
        study_dir: Path, tmp_path: Path) -> None:
    import re
    import shlex

    import typer.main

    from seglab.study.report import portable_data_spec

    html = (study_dir / "report.html").read_text()
    command = re.search(r"<code>(seglab train [^<]+)</code>", html).group(1)
    args = shlex.split(command.replace("&#39;", "'"))[2:]
    group = typer.main.get_command(app)
    with group.make_context("seglab", ["train", *args]) as ctx:
        train = group.get_command(ctx, "train")
        parsed = train.make_context("train", list(args), parent=ctx)  # no "No such option"
    assert Path(parsed.params["recipe"]) == study_dir / "best_recipe.yaml"
    assert Recipe.from_yaml(parsed.params["recipe"]).name == "tiny-best"
    # A path under the data root is written back as ${SEGLAB_DATA}; others stay as they are.
    root = tmp_path / "data"
    (root / "camvid11").mkdir(parents=True)
    assert portable_data_spec(f"camvid:{root}/camvid11", root) == "camvid:${SEGLAB_DATA}/camvid11"
    assert portable_data_spec(f"folder:{root}", root) == "folder:${SEGLAB_DATA}"
    assert portable_data_spec("folder:/elsewhere/x", root) == "folder:/elsewhere/x"
    assert portable_data_spec("camvid:${SEGLAB_DATA}/c", root) == "camvid:${SEGLAB_DATA}/c"
