"""seglab's training step vs torchvision's reference training step, side by side, on CamVid-11.

The reference (``references/segmentation/train.py`` of torchvision) is reproduced here: its
model builders (``lraspp_mobilenet_v3_large``; ``deeplabv3_resnet50`` with the aux head, aux
loss weight 0.5, aux head at 10x the learning rate), its PIL transforms (random resize of the
short side to 0.5-2.0x its 360 px, horizontal flip, pad + random crop 320, to tensor,
ImageNet normalisation), its loader (batch 8, 2 workers, shuffled, drop_last) and its loop
(fp32, NCHW, SGD lr 0.01 momentum 0.9 wd 1e-4, poly LR stepped per iteration, ``loss.item()``
every iteration). seglab runs its own engine (``train_one``: Lightning, bf16 autocast +
channels_last by default) on the same images, crop, scale range, flip, batch and optimiser.
In fp32 (``auto`` on a CPU without bf16 hardware) seglab trains the dilated convolutions that
mostly read padding (DeepLabV3's ASPP rates 24 and 36) by taps
(``seglab.models.cpu_speedups.TapConv2d``: one oneDNN product per tap, MKL weight gradients),
the other stride-1 3x3 convolutions of 128+ channels (256+ with AVX-512 kernels) and ASPP's
rate 12 by Winograd F(4x4, 3x3) or F(5x5, 3x3) (``seglab.models.winograd``, MKL products),
and with AVX2 kernels the wide 1x1 convolutions' weight gradients by MKL
(``PointwiseConv2d``): to stand in for an AVX2-only CPU set
``MKL_ENABLE_INSTRUCTIONS=AVX2`` beside ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``,
which MKL ignores.

Each measurement is a fresh process. The seglab process imports seglab first (passive
OpenMP waiting, one thread per physical core); by default the reference process gets the
same OpenMP settings, so the ratio compares the training steps alone.
``--reference-openmp default`` leaves the reference process OpenMP's own defaults instead
(spin-waiting), as a user of the reference script gets them; on a loaded machine that costs
the reference much more than the step does (see ``bench_busy_machine.py``). seglab's training
also keeps freed tensor memory for reuse (``seglab.allocator``); the reference process runs
with glibc's default allocator unless ``--reference-allocator seglab`` gives it the same.

On a GPU (``--device cuda``) both sides run there: the reference loop in fp32 NCHW as its
script does, seglab with its default AMP (bf16 where supported, else fp16 + grad scaler) and
channels_last; the JSON line adds each side's peak GPU memory. ``--synthetic N`` trains on N
generated ``--crop``-sized images instead of CamVid (no data needed: the GPU check uses it).

Steps ``1..warmup`` are left out (start-up, worker spawn, kernel selection); the next
``steps`` are timed, data loading included. Models and sides are interleaved within each
repeat (the side that goes first alternates). A last row times the two data pipelines alone
(2 workers). Prints a table, then one JSON line.

    SEGLAB_DATA=... python benchmarks/bench_train_throughput.py [--repeats 2] [--steps 4]
    python benchmarks/bench_train_throughput.py --device cuda --models deeplabv3 \
        --crop 512x1024 --batch 8 --synthetic 96 --workers 8
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("lraspp", "deeplabv3")
TV_NAMES = {"lraspp": "lraspp_mobilenet_v3_large", "deeplabv3": "deeplabv3_resnet50"}
CROP, BATCH, WORKERS, BASE = (320, 320), 8, 2, 360  # BASE: CamVid's short side (360x480)
DEVICE, SYNTHETIC = "cpu", ""  # set from the command line (see _configure)
LR, MOMENTUM, WEIGHT_DECAY, EPOCHS = 0.01, 0.9, 1e-4, 30
VOID = 11  # CamVid-11's void index, ignored as 255


def _configure(args: argparse.Namespace) -> None:
    """Crop, batch, workers, device and data of this process (module-level, as the loops read)."""
    global CROP, BATCH, WORKERS, BASE, DEVICE, SYNTHETIC
    h, _, w = args.crop.lower().partition("x")
    CROP = (int(h), int(w or h))
    BATCH, WORKERS, DEVICE, SYNTHETIC = args.batch, args.workers, args.device, args.data_root
    if SYNTHETIC:
        BASE = min(CROP)  # the generated images are crop-sized


def _data_spec() -> str:
    if SYNTHETIC:
        return f"folder:{SYNTHETIC}"
    return f"camvid:{os.environ.get('SEGLAB_DATA', '')}/camvid11"


def _camvid(split: str = "train") -> list[tuple[Path, Path]]:
    if SYNTHETIC:  # the folder: layout of seglab.data.synthetic
        images = sorted((Path(SYNTHETIC) / "images" / split).glob("*.png"))
        return [(p, Path(SYNTHETIC) / "masks" / split / p.name) for p in images]
    root = Path(os.environ.get("SEGLAB_DATA", "")) / "camvid11"
    images = sorted((root / split).glob("*.png"))
    if not images:
        raise SystemExit(f"no CamVid-11 images in {root / split}: set SEGLAB_DATA")
    return [(p, root / f"{split}annot" / p.name) for p in images]


# --- the reference: dataset, transforms, model, loop ------------------------------------------

def _reference_loader():
    import numpy as np
    import torch
    import torchvision.transforms.functional as F
    from PIL import Image
    from torchvision.transforms import InterpolationMode, RandomCrop

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    class CamVid(torch.utils.data.Dataset):
        def __init__(self, pairs):
            self.pairs = pairs

        def __len__(self):
            return len(self.pairs)

        def __getitem__(self, i):
            image = Image.open(self.pairs[i][0]).convert("RGB")
            target = Image.open(self.pairs[i][1])
            size = random.randint(int(0.5 * BASE), int(2.0 * BASE))  # RandomResize
            image = F.resize(image, size)
            target = F.resize(target, size, interpolation=InterpolationMode.NEAREST)
            if random.random() < 0.5:  # RandomHorizontalFlip
                image, target = F.hflip(image), F.hflip(target)
            w, h = image.size  # RandomCrop with pad_if_smaller (image 0, target 255)
            if h < CROP[0] or w < CROP[1]:
                pad = (0, 0, max(CROP[1] - w, 0), max(CROP[0] - h, 0))
                image, target = F.pad(image, pad, fill=0), F.pad(target, pad, fill=255)
            top, left, ch, cw = RandomCrop.get_params(image, CROP)
            image, target = F.crop(image, top, left, ch, cw), F.crop(target, top, left, ch, cw)
            image = F.convert_image_dtype(F.pil_to_tensor(image), torch.float)
            image = F.normalize(image, mean=mean, std=std)
            target = torch.as_tensor(np.array(target), dtype=torch.int64)
            if not SYNTHETIC:
                target[target == VOID] = 255
            return image, target

    return torch.utils.data.DataLoader(CamVid(_camvid()), batch_size=BATCH, shuffle=True,
                                       num_workers=WORKERS, drop_last=True,
                                       pin_memory=DEVICE.startswith("cuda"))


def reference_step_rate(model_name: str, warmup: int, steps: int) -> float:
    import torch
    import torchvision.models.segmentation as tvseg

    torch.manual_seed(0)
    aux = model_name == "deeplabv3"
    kwargs = {"aux_loss": True} if aux else {}
    model = getattr(tvseg, TV_NAMES[model_name])(weights=None, weights_backbone=None,
                                                 num_classes=_num_classes(), **kwargs)
    device = torch.device(DEVICE)
    model.to(device)
    params = [{"params": [p for p in model.backbone.parameters() if p.requires_grad]},
              {"params": [p for p in model.classifier.parameters() if p.requires_grad]}]
    if aux:
        params.append({"params": list(model.aux_classifier.parameters()), "lr": LR * 10})
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    loader = _reference_loader()
    iters = len(loader) * EPOCHS
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda x: (1 - x / iters) ** 0.9)

    def criterion(inputs, target):
        losses = {k: torch.nn.functional.cross_entropy(x, target, ignore_index=255)
                  for k, x in inputs.items()}
        return losses["out"] + 0.5 * losses["aux"] if "aux" in losses else losses["out"]

    model.train()
    start, done = None, 0
    for image, target in loader:
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        loss = criterion(model(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss.item()  # the reference's MetricLogger reads the loss every iteration
        done += 1
        if done == warmup:
            _sync(device)
            start = time.perf_counter()
        elif done == warmup + steps:
            _sync(device)
            return steps * BATCH / (time.perf_counter() - start)
    raise SystemExit("the train split has too few batches for warmup + steps")


def _num_classes() -> int:
    if SYNTHETIC:
        from seglab.data.formats import open_source

        return open_source(_data_spec()).classmap.num_classes
    return 11


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device) -> float | None:
    """Peak GPU memory allocated by tensors over the whole run, warm-up included (None on CPU)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def loader_rate(loader, warmup: int, batches: int) -> float:
    """Images/s of a loader alone, after ``warmup`` batches (worker start-up)."""
    if warmup + batches > len(loader):
        raise SystemExit(f"the train split has {len(loader)} batches, fewer than asked")
    batches_iter = iter(loader)
    for _ in range(warmup):
        next(batches_iter)
    start = time.perf_counter()
    for _ in range(batches):
        next(batches_iter)
    return batches * BATCH / (time.perf_counter() - start)


# --- seglab ----------------------------------------------------------------------------------

def _seglab_recipe(model_name: str, limit: int, precision: str):
    from seglab.config import Recipe

    options = {"weights": None, "backbone_weights": None}
    if model_name == "deeplabv3":
        options["aux"] = True
    return Recipe.from_dict({
        "name": f"throughput_{model_name}",
        "data": {"spec": _data_spec(), "batch_size": BATCH, "num_workers": WORKERS,
                 "val_split": None},
        "model": {"name": TV_NAMES[model_name], "options": options},
        "augment": {"crop_size": list(CROP), "scale_range": [0.5, 2.0], "hflip": 0.5},
        "loss": {"name": "ce", "aux_weight": 0.5},
        "optim": {"name": "sgd", "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
        "schedule": {"name": "poly", "power": 0.9},
        "trainer": {"max_epochs": 1, "limit_train_batches": limit, "progress": False,
                    "precision": precision, "channels_last": precision != "fp32",
                    "accelerator": "gpu" if DEVICE.startswith("cuda") else "cpu",
                    "devices": [int(DEVICE.partition(":")[2] or 0)]
                    if DEVICE.startswith("cuda") else 1},
    })


def seglab_step_rate(model_name: str, warmup: int, steps: int, precision: str) -> float:
    from seglab.engine.speed import SpeedReport
    from seglab.engine.training import train_one

    report = SpeedReport(warmup=warmup, batches=steps, stream=io.StringIO())
    with tempfile.TemporaryDirectory() as tmp:
        train_one(_seglab_recipe(model_name, warmup + steps, precision), Path(tmp) / "run",
                  evaluate_split=None, callbacks=[report])
    return report.images_per_s


def seglab_loader():
    from seglab.data.datamodule import SegDataModule
    from seglab.data.transforms import train_transform

    transform = train_transform(CROP, scale_range=(0.5, 2.0), hflip=0.5)
    return SegDataModule(_data_spec(), batch_size=BATCH, num_workers=WORKERS,
                         train_transform=transform).train_dataloader()


# --- orchestration ---------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    side = args.worker
    _configure(args)
    if side.startswith("seglab") or args.reference_openmp == "seglab":
        import seglab  # noqa: F401  (its OpenMP defaults, before torch loads)
    import torch

    allocator = "default"
    if side == "seglab" or (side == "reference" and args.reference_allocator == "seglab"):
        from seglab.allocator import keep_freed_memory

        allocator = "keeps freed memory" if keep_freed_memory()[0] else "default"
    if side == "reference":
        rate = reference_step_rate(args.model, args.warmup, args.steps)
    elif side == "seglab":
        rate = seglab_step_rate(args.model, args.warmup, args.steps, args.precision)
    elif side == "reference-loader":
        rate = loader_rate(_reference_loader(), 2, args.loader_batches)
    else:
        rate = loader_rate(seglab_loader(), 2, args.loader_batches)
    print(json.dumps({"img_s": rate, "threads": torch.get_num_threads(),
                      "peak_mem_mb": peak_memory_mb(DEVICE) if "loader" not in side else None,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                      "allocator": allocator}))


def _run(side: str, args: argparse.Namespace, model: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--model", model or "lraspp",
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--precision",
           args.precision, "--loader-batches", str(args.loader_batches),
           "--reference-openmp", args.reference_openmp, "--reference-allocator",
           args.reference_allocator, "--crop", args.crop,
           "--batch", str(args.batch), "--workers", str(args.workers), "--device", args.device,
           "--data-root", args.data_root]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{side} {model} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out at the start")
    parser.add_argument("--steps", type=int, default=4, help="steps timed after the warmup")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="seglab's trainer.precision (auto: bf16 + channels_last on CPU)")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--reference-openmp", default="seglab", choices=["seglab", "default"],
                        help="OpenMP settings of the reference process (default: seglab's)")
    parser.add_argument("--reference-allocator", default="default",
                        choices=["default", "seglab"],
                        help="the reference process's malloc policy (default: glibc's own)")
    parser.add_argument("--crop", default="320", help="training crop, H or HxW")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="data loader workers per side")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="train on N generated crop-sized images instead of CamVid")
    parser.add_argument("--loader", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the two data pipelines alone")
    parser.add_argument("--data-root", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lraspp", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["reference", "seglab", "reference-loader",
                                             "seglab-loader"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be >= 1")
    if args.worker:
        worker(args)
        return
    models = args.models.split(",")
    if set(models) - set(MODELS):
        raise SystemExit(f"--models: choose from {MODELS}")
    start = time.perf_counter()
    _configure(args)
    if args.synthetic:
        return _with_synthetic(args, models, start)
    _compare(args, models, start)


def _with_synthetic(args: argparse.Namespace, models: list[str], start: float) -> None:
    from seglab.data.synthetic import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        args.data_root = str(make_synthetic(Path(tmp) / "synthetic", n_train=args.synthetic,
                                            n_val=0, n_test=0, size=CROP))
        _compare(args, models, start)


def _compare(args: argparse.Namespace, models: list[str], start: float) -> None:
    rates: dict[str, dict[str, list[float]]] = {m: {"reference": [], "seglab": []}
                                                for m in models}
    info: dict[str, dict] = {}
    peaks: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for model in models:
            sides = ("reference", "seglab") if repeat % 2 == 0 else ("seglab", "reference")
            for side in sides:
                row = _run(side, args, model)
                rates[model][side].append(row["img_s"])
                peaks.setdefault(model, {})[side] = row["peak_mem_mb"]
                info[side] = {"threads": row["threads"], "omp_wait_policy": row["omp_wait_policy"],
                              "allocator": row["allocator"]}
                print(f"repeat {repeat + 1} {model:10s} {side:9s} {row['img_s']:.2f} img/s",
                      file=sys.stderr, flush=True)
    loaders = {side: _run(f"{side}-loader", args)["img_s"] if args.loader else float("nan")
               for side in ("reference", "seglab")}
    summary = {}
    print(f"{'model':10s} {'reference img/s':>15s} {'seglab img/s':>12s} {'ratio':>6s}")
    for model in models:
        ref, ours = (statistics.median(rates[model][s]) for s in ("reference", "seglab"))
        summary[model] = {"reference_img_s": round(ref, 3), "seglab_img_s": round(ours, 3),
                          "ratio": round(ours / ref, 3), "peak_mem_mb": peaks[model],
                          "runs": {s: [round(v, 3) for v in vs] for s, vs in rates[model].items()}}
        print(f"{model:10s} {ref:15.2f} {ours:12.2f} {ours / ref:5.2f}x  peak MB "
              f"{peaks[model]['reference']} / {peaks[model]['seglab']}")
    print(f"data loader alone ({WORKERS} workers): reference {loaders['reference']:.1f} img/s, "
          f"seglab {loaders['seglab']:.1f} img/s")
    wall = round(time.perf_counter() - start, 1)
    print(f"wall time {wall} s; 1-minute load average at the end {os.getloadavg()[0]:.2f}")
    print(json.dumps({"benchmark": "train_throughput", "crop": list(CROP), "batch": BATCH,
                      "device": args.device, "synthetic_images": args.synthetic,
                      "workers": WORKERS, "warmup": args.warmup, "steps": args.steps,
                      "repeats": args.repeats, "seglab_precision": args.precision,
                      "reference_openmp": args.reference_openmp,
                      "models": summary, "loader_img_s": {k: round(v, 1) for k, v in
                                                          loaders.items()},
                      "processes": info, "cpus": os.cpu_count(), "wall_seconds": wall}))


if __name__ == "__main__":
    main()
