"""Time to accuracy on CamVid-11: test mIoU against wall minutes, headline recipe vs reference.

Trains each recipe from scratch with seglab's engine (``train_one``, exactly what ``seglab
train RECIPE`` runs) and, while it trains, snapshots the model's weights every
``--every-minutes`` of wall time. The snapshots are scored on the test split (233 images,
360x480 labels) after training, with the same evaluation as the final score, so scoring costs
the run nothing; the last row of each recipe is the run's own final test score.

Recipes:

- ``headline``: ``configs/camvid11_time_to_accuracy.yaml``.
- ``reference``: torchvision's ``references/segmentation/train.py`` recipe as a seglab
  recipe (LR-ASPP MobileNetV3-Large from scratch, random resize 0.5-2.0 of the full-size
  images, crop 320x320, flip, batch 8, SGD lr 0.01 momentum 0.9 wd 1e-4, poly, fp32 NCHW, no
  class weights, the 21-minute budget of RESULTS.md's reference row), or any
  ``configs/camvid11_*reference*.yaml`` when one exists.

``--openmp-defaults`` runs with OpenMP's own settings (torch loaded before seglab), as the
reference script runs; ``--append`` adds this run's rows to those already in ``--csv``.

Writes ``--csv`` (recipe, minutes since the command started, training minutes, epoch, test
mIoU, pixel accuracy, 1-minute load average) and a figure beside it (``.png``).

    SEGLAB_DATA=../shared/data python benchmarks/bench_time_to_accuracy.py \\
        --recipes headline reference --csv benchmarks/time_to_accuracy.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ROOT / "configs" / "camvid11_time_to_accuracy.yaml"
COLUMNS = ("recipe", "wall_min", "train_min", "epoch", "test_miou", "test_pixel_acc", "load1")

REFERENCE = {
    "name": "camvid11_tv_reference",
    "data": {"spec": "camvid:${SEGLAB_DATA}/camvid11", "batch_size": 8, "eval_batch_size": 8,
             "num_workers": 2, "cache": "off"},  # the reference script decodes every epoch
    "augment": {"scale_range": [0.5, 2.0], "crop_size": [320, 320], "hflip": 0.5},
    "model": {"name": "lraspp_mobilenet_v3_large",
              "options": {"weights": None, "backbone_weights": None}},
    "loss": {"name": "ce"},
    "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001},
    "schedule": {"name": "poly", "power": 0.9},
    "trainer": {"max_epochs": 200, "max_minutes": 19.5, "precision": "fp32",
                "channels_last": False, "early_stop_patience": None,
                "checkpoint_every_n_steps": None, "seed": 0},
}


def _load1() -> float:
    return os.getloadavg()[0]


def reference_recipe() -> Any:
    """``configs/camvid11_*reference*.yaml`` when present, else :data:`REFERENCE`."""
    from seglab.config import Recipe

    shipped = sorted((ROOT / "configs").glob("camvid11_*reference*.yaml"))
    if shipped:
        return Recipe.from_yaml(shipped[0])
    return Recipe.from_dict(copy.deepcopy(REFERENCE), source="bench reference recipe")


def _snapshotter(every_s: float, start: float, out: list[dict[str, Any]]) -> Any:
    """A Lightning callback keeping a CPU copy of the weights every ``every_s`` wall seconds
    (checked after each training batch; a copy of a few M parameters takes milliseconds)."""
    import lightning as L

    class Snapshots(L.Callback):
        def __init__(self) -> None:
            self.next_at = start + every_s

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            now = time.monotonic()
            if now < self.next_at:
                return
            self.next_at = now + every_s
            state = {k: v.detach().to("cpu", copy=True) for k, v in
                     pl_module.model.state_dict().items()}
            out.append({"wall_s": now - start, "epoch": trainer.current_epoch + 1,
                        "state": state, "load1": _load1()})

    return Snapshots()


def _score_snapshot(state: dict[str, Any], run_dir: Path, recipe: Any, source: Any,
                    work: Path) -> dict[str, Any]:
    """Test metrics of one weight snapshot, through the run's own evaluation path (the run's
    ``model/`` folder, its inference settings, with the snapshot's weights)."""
    import torch

    from seglab.artifacts import rundir
    from seglab.artifacts.pretrained import from_pretrained, save_pretrained
    from seglab.engine.evaluation import evaluate

    model, config = from_pretrained(rundir.model_dir(run_dir))
    model.load_state_dict(state)
    model.to(memory_format=torch.contiguous_format)
    save_pretrained(model, work / "model", classmap=source.classmap,
                    mean=recipe.data.mean or None, std=recipe.data.std or None,
                    extra={k: config[k] for k in ("inference", "recipe") if k in config})
    return evaluate(work / "model", source, "test", out_dir=work / "eval", num_panels=0,
                    batch_size=recipe.data.eval_batch_size, num_workers=recipe.data.num_workers,
                    precision=recipe.trainer.precision)


def run_recipe(label: str, recipe: Any, every_min: float, work: Path) -> list[dict[str, Any]]:
    """Train ``recipe`` with snapshots; rows of :data:`COLUMNS` (the final score last)."""
    from seglab.data.formats import open_source
    from seglab.engine.training import train_one

    start = time.monotonic()
    snaps: list[dict[str, Any]] = []
    run_dir = work / label / "run"
    final = train_one(recipe, run_dir,
                      callbacks=[_snapshotter(every_min * 60, start, snaps)]).metrics
    end_s, end_load = time.monotonic() - start, _load1()
    print(f"{label}: test mIoU {100 * final['miou']:.2f} after {end_s / 60:.2f} min "
          f"({final['epochs']} epochs, load {end_load:.1f})", flush=True)
    source = open_source(recipe.data.spec, **recipe.data.options)
    rows = []
    for i, snap in enumerate(snaps):
        scored = _score_snapshot(snap["state"], run_dir, recipe, source, work / label / f"s{i}")
        rows.append({"recipe": label, "wall_min": snap["wall_s"] / 60, "train_min": None,
                     "epoch": snap["epoch"], "test_miou": 100 * scored["miou"],
                     "test_pixel_acc": 100 * scored["pixel_acc"], "load1": snap["load1"]})
        print(f"  snapshot {snap['wall_s'] / 60:.1f} min: {rows[-1]['test_miou']:.2f}", flush=True)
    rows.append({"recipe": label, "wall_min": end_s / 60, "train_min": final["train_time_s"] / 60,
                 "epoch": final["epochs"], "test_miou": 100 * final["miou"],
                 "test_pixel_acc": 100 * final["pixel_acc"], "load1": end_load})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else
                                 f"{row[k]:.3f}" if isinstance(row[k], float) else row[k])
                             for k in COLUMNS})


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_csv` (numbers back as floats/ints, blanks as None)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in COLUMNS[1:]:
            value = row.get(key) or None
            row[key] = None if value is None else int(value) if key == "epoch" else float(value)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == label]
        ax.plot([0.0] + [r["wall_min"] for r in mine], [0.0] + [r["test_miou"] for r in mine],
                marker="o", label=label)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"goal {target}")
    ax.axvline(21, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("wall minutes since the command started")
    ax.set_ylabel("CamVid-11 test mIoU (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["headline", "reference"],
                        help="headline, reference or recipe YAML paths")
    parser.add_argument("--every-minutes", type=float, default=3.0,
                        help="snapshot interval in wall minutes")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides applied to every recipe (e.g. trainer.max_minutes=2)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "time_to_accuracy.csv")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: temp)")
    parser.add_argument("--target", type=float, default=46.4)
    parser.add_argument("--openmp-defaults", action="store_true",
                        help="load torch before seglab, so OpenMP keeps its own settings "
                        "(spin-waiting, its thread count), as torchvision's script runs")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in --csv (another run's recipes) and plot all")
    args = parser.parse_args()

    if args.openmp_defaults:
        import torch  # noqa: F401  (OpenMP reads its settings now, before seglab sets any)
    import seglab  # noqa: F401  (thread defaults before torch loads)
    from seglab.config import Recipe
    from seglab.errors import SeglabError

    if "SEGLAB_DATA" not in os.environ and not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("set SEGLAB_DATA to the folder holding camvid11/")
    rows: list[dict[str, Any]] = read_csv(args.csv) if args.append and args.csv.is_file() else []
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        work = args.work or Path(tmp)
        for entry in args.recipes:
            try:
                if entry == "headline":
                    recipe = Recipe.from_yaml(HEADLINE, list(args.set))
                elif entry == "reference":
                    recipe = Recipe.from_dict(reference_recipe().to_dict(), list(args.set))
                else:
                    recipe = Recipe.from_yaml(Path(entry), list(args.set))
            except SeglabError as exc:
                sys.exit(f"{entry}: {exc}")
            rows += run_recipe(Path(entry).stem if entry.endswith(".yaml") else entry,
                               recipe, args.every_minutes, work)
            write_csv(rows, args.csv)
    plot(rows, args.csv.with_suffix(".png"), args.target)
    print(f"wrote {args.csv} and {args.csv.with_suffix('.png')}")


if __name__ == "__main__":
    main()
