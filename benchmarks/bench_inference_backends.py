"""Inference backends side by side: eager fp32, bf16, compile (freezing), ONNX Runtime fp32/int8.

For each torchvision model at 360x480, batch 1 (CamVid-11's size), every backend of
``seglab bench`` named below is prepared once (compiled / exported, not timed), then the
backends take turns: each round times ``--passes`` forward passes of every backend in turn,
for ``--rounds`` rounds, so a change in machine load hits all of them alike. Reported: the
median pass (ms) over all rounds, its ratio to eager fp32 of the same model (above 1 is
faster), and each backend's argmax agreement with eager fp32 on two CamVid-11 test images
(a fast backend that changes the masks is not a correct one).

With ``--miou-model DIR`` (a trained CamVid-11 model folder) the CamVid-11 test mIoU (233
images at 360x480, void ignored) is measured for eager fp32, ONNX Runtime fp32 and the int8
export, so the accuracy change of int8 is a measured number, not a claim.

    OMP_WAIT_POLICY=PASSIVE SEGLAB_DATA=/path/to/data \
        python benchmarks/bench_inference_backends.py \
        [--models lraspp_mobilenet_v3_large,fcn_resnet50,deeplabv3_resnet50] \
        [--backends eager,bf16,compile_freezing,bf16_compile_freezing,onnxruntime,\
                    onnxruntime_int8] \
        [--rounds 5] [--passes 2] [--miou-model studies/camvid11_lraspp_pruned/trials/5/model]

Prints a table per model as it goes, then one JSON document (``--json-out`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.bench.backends import prepare
from seglab.export import normalised, parity, parity_images

SIZE = (360, 480)
MODELS = "lraspp_mobilenet_v3_large,fcn_resnet50,deeplabv3_resnet50"
BACKENDS = "eager,bf16,compile_freezing,bf16_compile_freezing,onnxruntime,onnxruntime_int8"


def _forward(prepared: Any, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One pass the way seglab.bench times it (memory format and autocast per backend)."""
    if prepared.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = prepared.autocast
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                                enabled=dtype is not None):
        out = prepared.forward(x)
    return (out["out"] if isinstance(out, dict) else out).float()


def bench_model(name: str, backends: list[str], rounds: int, passes: int,
                num_classes: int) -> dict[str, Any]:
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes, weights=None, backbone_weights=None).eval()
    images, origin = parity_images(SIZE, 2)
    x_check = normalised(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = x_check[:1]
    with torch.inference_mode():
        reference = model(x_check)["out"]
    prepared, setup_s, agreement, errors = {}, {}, {}, {}
    for backend in backends:
        started = time.perf_counter()
        try:
            item = prepare(model, backend, torch.device("cpu"), SIZE, 1)
            if backend.startswith("onnx"):
                answer = item.forward(x_check[:1])["out"]
                answer = torch.cat([answer, item.forward(x_check[1:])["out"]])
            else:
                if item.channels_last:
                    model.to(memory_format=torch.channels_last)
                answer = torch.cat([_forward(item, model, x_check[i:i + 1]) for i in range(2)])
                _forward(item, model, x)  # compiled backends: a second warm-up pass
        except Exception as exc:  # noqa: BLE001 - a failing backend is a row, not the end
            errors[backend] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print(f"  {name} / {backend} failed: {errors[backend]}", flush=True)
            continue
        setup_s[backend] = time.perf_counter() - started
        agreement[backend] = parity(reference, answer)
        prepared[backend] = item
        print(f"  {name} / {backend}: ready in {setup_s[backend]:.1f} s, argmax agreement "
              f"{agreement[backend]['argmax_agreement']:.4%}", flush=True)
    times: dict[str, list[float]] = {b: [] for b in prepared}
    for _ in range(rounds):
        for backend, item in prepared.items():
            for _ in range(passes):
                started = time.perf_counter()
                if backend.startswith("onnx"):
                    item.forward(x)
                else:
                    _forward(item, model, x)
                times[backend].append(1000 * (time.perf_counter() - started))
    for item in prepared.values():
        if item.cleanup is not None:
            item.cleanup()
    model.to(memory_format=torch.contiguous_format)
    median = {b: statistics.median(t) for b, t in times.items()}
    base = median.get("eager")
    rows = []
    for backend in backends:
        if backend in errors:
            rows.append({"backend": backend, "error": errors[backend]})
            continue
        rows.append({
            "backend": backend,
            "median_ms": round(median[backend], 1),
            "min_ms": round(min(times[backend]), 1),
            "speedup_vs_eager_fp32": round(base / median[backend], 2) if base else None,
            "argmax_agreement_vs_fp32": round(agreement[backend]["argmax_agreement"], 5),
            "max_abs_diff_vs_fp32": float(f"{agreement[backend]['max_abs_diff']:.3g}"),
            "setup_s": round(setup_s[backend], 1),
        })
    return {"model": name, "weights": "untrained (timing does not depend on weights)",
            "check_images": origin, "rows": rows}


def _camvid_test(root: Path) -> list[tuple[Path, Path]]:
    images = sorted((root / "camvid11" / "test").glob("*.png"))
    return [(p, root / "camvid11" / "testannot" / p.name) for p in images]


def miou_change(folder: Path, calibration: int) -> dict[str, Any]:
    """CamVid-11 test mIoU of a trained model: eager fp32, ONNX Runtime fp32 and int8."""
    import tempfile

    from PIL import Image

    from seglab.artifacts.loader import load_inference_model
    from seglab.export import OnnxSegmenter, export_model
    from seglab.metrics import metrics_from_confusion
    from seglab.metrics.confusion import confusion_matrix
    from seglab.paths import data_root

    loaded = load_inference_model(folder)
    pairs = _camvid_test(data_root())
    classes = loaded.classmap.num_classes
    result: dict[str, Any] = {"model": str(folder), "test_images": len(pairs)}
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        int8 = Path(scratch) / "int8.onnx"
        export_model(folder, "onnx", fp32, input_size=SIZE)
        report = export_model(folder, "onnx", int8, input_size=SIZE, int8="static",
                              calibration_count=calibration)
        result["int8_calibration"] = report["int8"]["calibration"]
        result["bytes"] = {"fp32": report["int8"]["fp32_bytes"], "int8": report["bytes"]}
        runners = {
            "eager_fp32": lambda x: loaded.model(x)["out"],
            "onnxruntime_fp32": OnnxSegmenter(fp32),
            "onnxruntime_int8": OnnxSegmenter(int8),
        }
        confusion = {k: torch.zeros(classes, classes, dtype=torch.int64) for k in runners}
        agree = {k: [] for k in runners}
        for image_path, mask_path in pairs:
            with Image.open(image_path) as image:
                array = np.asarray(image.convert("RGB").resize(SIZE[::-1], Image.BILINEAR))
            with Image.open(mask_path) as mask:
                truth = torch.from_numpy(np.asarray(mask.resize(SIZE[::-1], Image.NEAREST))
                                         .astype(np.int64))[None]
            x = normalised(torch.from_numpy(array.copy()).permute(2, 0, 1)[None],
                           loaded.mean, loaded.std)
            predictions = {}
            for key, run in runners.items():
                with torch.inference_mode():
                    out = run(x)
                predictions[key] = (out["out"] if isinstance(out, dict) else out).argmax(1)
                confusion[key] += confusion_matrix(predictions[key], truth, classes,
                                                   ignore_index=classes)
            for key in runners:
                agree[key].append((predictions[key] == predictions["eager_fp32"]).float()
                                  .mean().item())
    for key in runners:
        scores = metrics_from_confusion(confusion[key].numpy(), include_confusion=False)
        result[key] = {"miou": round(100 * scores["miou"], 2),
                       "pixel_acc": round(100 * scores["pixel_acc"], 2),
                       "argmax_agreement_vs_eager": round(statistics.fmean(agree[key]), 5)}
    result["int8_miou_change"] = round(result["onnxruntime_int8"]["miou"]
                                       - result["eager_fp32"]["miou"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--backends", default=BACKENDS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--miou-model", type=Path, default=None)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    import os
    import platform

    document: dict[str, Any] = {
        "tool": "benchmarks/bench_inference_backends.py",
        "input": list(SIZE), "batch": 1, "rounds": args.rounds, "passes": args.passes,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_start": list(os.getloadavg()),
        "models": [],
    }
    for name in [m for m in args.models.split(",") if m]:
        print(f"{name}:", flush=True)
        result = bench_model(name, backends, args.rounds, args.passes, args.num_classes)
        document["models"].append(result)
        for row in result["rows"]:
            if "error" in row:
                print(f"  {row['backend']:<22} failed: {row['error']}")
                continue
            print(f"  {row['backend']:<22} {row['median_ms']:>8.1f} ms  "
                  f"x{row['speedup_vs_eager_fp32']:<5} agreement "
                  f"{row['argmax_agreement_vs_fp32']:.4%}", flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(document, indent=1))
    if args.miou_model is not None:
        document["int8_miou"] = miou_change(args.miou_model, args.calibration)
        print(json.dumps(document["int8_miou"], indent=1), flush=True)
    document["load_average_at_end"] = list(os.getloadavg())
    if args.json_out:
        args.json_out.write_text(json.dumps(document, indent=1))
    print(json.dumps(document))


if __name__ == "__main__":
    main()
