"""Export parity and CPU latency: ONNX Runtime and TorchScript vs eager PyTorch, side by side.

For each model: export to ONNX and TorchScript at the input size (static axes, batch 1),
then on CamVid-11 test images resized to that size (random images when the data is absent;
the output says which) report max |logit difference| and argmax agreement against eager fp32
PyTorch, and the median batch-1 latency of eager fp32, eager bf16 autocast, TorchScript and
ONNX Runtime, all in one process with the same thread count, the backends taking turns in
every repeat. Trained weights come from the
run folders when they exist; other models are built untrained (said in the table).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_export_parity.py [--images 8] \
        [--input 360x480] [--repeats 5] [--threads 2]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seglab.export import (
    OnnxSegmenter,
    TorchScriptSegmenter,
    export_model,
    normalised,
    parity,
    parity_images,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "lraspp_mobilenet_v3_large": ROOT / "runs" / "camvid11_lraspp" / "model",
    "deeplabv3_resnet50": None,
    "pspnet_resnet18": ROOT / "runs" / "camvid11_pspnet_r18" / "model",
    "unet": ROOT / "runs" / "camvid11_unet" / "model",
}


def _source(name: str, folder: Path | None):
    """(what to export, eager model, weights label)."""
    from seglab.artifacts.pretrained import from_pretrained
    from seglab.models import build_model

    if folder is not None and (folder / "config.json").is_file():
        model, _ = from_pretrained(folder)
        return folder, model.eval(), f"trained ({folder.relative_to(ROOT)})"
    torch.manual_seed(0)
    model = build_model(name, num_classes=11).eval()
    return model, model, "untrained"


def _interleaved_medians(calls: dict[str, Callable[[], object]], warmup: int,
                         repeats: int) -> dict[str, float]:
    """Median ms per backend, the backends taking turns in each repeat.

    Taking turns spreads the load of a shared machine over all backends alike, where timing
    one backend after another would hand one of them a quiet minute and another a busy one.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_one(name: str, folder: Path | None, images: torch.Tensor, size, args,
              workdir: Path) -> dict:
    source, model, weights = _source(name, folder)
    result: dict = {"model": name, "weights": weights}
    exported = {}
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        report = export_model(source, fmt, workdir / f"{name}.{suffix}", input_size=size,
                              parity_count=1)
        result[f"{fmt}_export_s"] = report["export_seconds"]
        result[f"{fmt}_mb"] = round(report["bytes"] / 1e6, 1)
    exported["onnx"] = OnnxSegmenter(workdir / f"{name}.onnx", threads=args.threads)
    exported["torchscript"] = TorchScriptSegmenter(workdir / f"{name}.pt")
    x = normalised(images, exported["onnx"].mean, exported["onnx"].std)
    model = model.to(memory_format=torch.channels_last)  # as the inference path runs it
    with torch.no_grad():
        reference = torch.cat([model(x[i : i + 1])["out"] for i in range(len(x))])
        for fmt, segmenter in exported.items():
            check = parity(reference, segmenter(x)["out"])
            result[f"{fmt}_max_abs_diff"] = check["max_abs_diff"]
            result[f"{fmt}_argmax_agreement"] = check["argmax_agreement"]

        one = x[:1].contiguous()
        one_cl = one.to(memory_format=torch.channels_last)

        def bf16() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(one_cl)

        timings = {
            "eager_fp32": lambda: model(one_cl),
            "eager_bf16": bf16,
            "torchscript": lambda: exported["torchscript"](one),
            "onnxruntime": lambda: exported["onnx"](one),
        }
        for backend, ms in _interleaved_medians(timings, args.warmup, args.repeats).items():
            result[f"{backend}_ms"] = round(ms, 1)
    base = result["eager_fp32_ms"]
    for backend in ("eager_bf16", "torchscript", "onnxruntime"):
        result[f"{backend}_vs_fp32"] = round(base / result[f"{backend}_ms"], 2)
    return result


def print_table(rows: list[dict], meta: dict) -> None:
    print(f"inputs: {meta['images']} {meta['inputs']} at {meta['input'][0]}x{meta['input'][1]}; "
          f"latency batch 1, median of {meta['repeats']} interleaved runs after "
          f"{meta['warmup']} warm-up, "
          f"{meta['threads']} threads")
    print(f"{'model':28} {'weights':10} {'ONNX max|d|':>11} {'ONNX agree':>10} "
          f"{'TS max|d|':>10} {'TS agree':>9} | {'fp32 ms':>8} {'bf16 ms':>13} "
          f"{'TS ms':>13} {'ORT ms':>13}")
    for r in rows:
        print(
            f"{r['model']:28} {r['weights'].split(' ')[0]:10} {r['onnx_max_abs_diff']:11.2e} "
            f"{r['onnx_argmax_agreement']:10.4%} {r['torchscript_max_abs_diff']:10.2e} "
            f"{r['torchscript_argmax_agreement']:9.4%} | {r['eager_fp32_ms']:8.1f} "
            f"{r['eager_bf16_ms']:7.1f} x{r['eager_bf16_vs_fp32']:<4} "
            f"{r['torchscript_ms']:7.1f} x{r['torchscript_vs_fp32']:<4} "
            f"{r['onnxruntime_ms']:7.1f} x{r['onnxruntime_vs_fp32']:<4}"
        )
    print("(xN = speed-up over eager fp32; >1 is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="360x480", help="input HxW")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    height, width = (int(v) for v in args.input.lower().split("x"))
    torch.set_num_threads(args.threads)
    images, origin = parity_images((height, width), args.images)
    meta = {"input": [height, width], "images": len(images), "inputs": origin,
            "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
            "torch": torch.__version__}
    import onnxruntime

    meta["onnxruntime"] = onnxruntime.__version__
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench_one(name, MODELS.get(name), images, (height, width), args,
                                  Path(tmp)))
            print(f"  {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    print_table(rows, meta)
    print(json.dumps({**meta, "results": rows}))


if __name__ == "__main__":
    main()
