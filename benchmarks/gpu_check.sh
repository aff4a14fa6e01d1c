#!/usr/bin/env bash
# The GPU paths in one short run (a few minutes on one GPU):
#   1. the CUDA tests that skip on CPU (tests/test_gpu_check.py, the CUDA test of inference);
#   2. one training-step benchmark: DeepLabV3-ResNet50 + aux head, 512x1024 crops, batch 8,
#      seglab's engine vs the torchvision reference loop (img/s, peak GPU memory);
#   3. `seglab bench` CUDA rows (eager fp32, fp16, bf16, compile) for fcn_resnet101 and
#      deeplabv3_resnet101 (time, MB, GPU memory);
#   4. `seglab predict` on a generated video.
#
# usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--device cuda:N]
#   --dry-run  the same steps on the CPU with tiny sizes and small models (LR-ASPP
#              MobileNetV3 instead of the ResNets): what CI runs, no GPU needed
#   --out      where the logs and JSON go (default: a new folder under /tmp)
# Every step prints its figures and keeps them in DIR/<step>.log (JSON in DIR/<step>.json),
# ready for benchmarks/RESULTS.md.
set -euo pipefail

DRY=0
OUT=""
DEVICE="cuda"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d /tmp/seglab-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
cd "$ROOT"

if [[ $DRY -eq 1 ]]; then
  DEVICE="cpu"
  # Tiny sizes and small models: the flow, not the figures.
  TRAIN_MODEL=lraspp
  TRAIN_ARGS=(--crop 64x64 --batch 2 --synthetic 4 --warmup 1 --steps 1 --workers 0)
  BENCH_ARGS=(--input 64x64 --batch 1 --repeats 1 --warmup 1 --backend eager,bf16)
  BENCH_MODELS=(lraspp_mobilenet_v3_large)
  VIDEO=(4 64 96)        # frames, height, width
  PREDICT_MODEL=lraspp_mobilenet_v3_large
  CUDA_TESTS=(tests/test_gpu_check.py -k "cuda and not dry_run")
else
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA GPU visible to torch here (use --dry-run on a CPU)" >&2
    exit 1
  fi
  TRAIN_MODEL=deeplabv3
  TRAIN_ARGS=(--crop 512x1024 --batch 8 --synthetic 112 --warmup 3 --steps 10 --workers 8)
  BENCH_ARGS=(--input 512x1024 --batch 1,8 --repeats 20 --warmup 5
              --backend eager,fp16,bf16,compile)
  BENCH_MODELS=(fcn_resnet101 deeplabv3_resnet101)
  VIDEO=(48 512 1024)
  PREDICT_MODEL=deeplabv3_resnet101
  CUDA_TESTS=(tests/test_gpu_check.py
              "tests/test_inference.py::test_cuda_fp16_autocast_follows_the_model_device"
              -k "not dry_run")
fi

say() { printf '\n== %s ==\n' "$*"; }
started=$(date +%s)
"$PYTHON" - <<'EOF' | tee "$OUT/machine.log"
import os, platform, torch
print(f"torch {torch.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, "
              f"bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("no CUDA GPU: dry run on the CPU")
EOF

say "1/4 CUDA tests"
# On a CPU these skip, which is what the dry run shows (the reasons are listed).
"$PYTHON" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}" 2>&1 | tee "$OUT/cuda_tests.log"
grep -Eq "[0-9]+ (passed|skipped)" "$OUT/cuda_tests.log" && ! grep -Eq "[0-9]+ (failed|error)" \
  "$OUT/cuda_tests.log" || { echo "gpu_check.sh: CUDA tests failed" >&2; exit 1; }

say "2/4 training step ($TRAIN_MODEL), seglab vs the torchvision reference loop"
"$PYTHON" benchmarks/bench_train_throughput.py --device "$DEVICE" --models "$TRAIN_MODEL" \
  --repeats 1 --no-loader "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train_step.log"
tail -n 1 "$OUT/train_step.log" > "$OUT/train_step.json"

say "3/4 seglab bench (${BENCH_MODELS[*]})"
"$PYTHON" -m seglab bench "${BENCH_MODELS[@]}" --device "$DEVICE" "${BENCH_ARGS[@]}" --json \
  > "$OUT/bench.json" 2> "$OUT/bench.log" || { cat "$OUT/bench.log"; exit 1; }
"$PYTHON" - "$OUT/bench.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc if isinstance(doc, list) else doc.get("rows") or doc.get("results") or []
print(f"{'model':24s} {'backend':9s} {'batch':>5s} {'ms':>9s} {'img/s':>8s} {'MB':>7s} "
      f"{'peak MB':>8s}")
failed = []
for row in rows:
    if row.get("skipped") or row.get("error"):  # bf16 skipped on a CPU without it (dry run)
        print(f"{row['model']:24s} {row['backend']:9s} {row.get('skipped') or row['error']}")
        failed += [row] if row.get("error") else []
        continue
    for per in row.get("per_batch") or [row]:
        print(f"{row['model']:24s} {row['backend']:9s} {per.get('batch', 1):5d} "
              f"{per['latency_ms']:9.2f} {per.get('throughput_ips', 0):8.1f} "
              f"{row.get('weight_mb', 0):7.1f} {per.get('peak_mem_mb') or 0:8.1f}")
if not rows:
    sys.exit(f"seglab bench wrote no rows: {str(doc)[:500]}")
if failed:
    sys.exit(f"seglab bench failed on {len(failed)} row(s): {failed[0]['error'][:300]}")
EOF

say "4/4 seglab predict on a generated video"
"$PYTHON" - "$OUT/assets" "$PREDICT_MODEL" "${VIDEO[@]}" <<'EOF'
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from seglab.data.classes import ClassMap
from seglab.models import build_model
from seglab.artifacts.pretrained import save_pretrained

folder, name = Path(sys.argv[1]), sys.argv[2]
frames, height, width = (int(v) for v in sys.argv[3:6])
folder.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
names = [f"class{i}" for i in range(5)]
classmap = ClassMap(names, [(40 * i, 255 - 40 * i, 100) for i in range(5)], ignore_index=255)
save_pretrained(build_model(name, num_classes=5), folder / "model", classmap=classmap)
rng = np.random.default_rng(0)
with av.open(str(folder / "clip.mp4"), "w") as container:
    stream = container.add_stream("mpeg4", rate=Fraction(12, 1))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for _ in range(frames):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
print(f"{folder / 'clip.mp4'}: {frames} frames {height}x{width}; untrained {name}")
EOF
predict_start=$(date +%s.%N)
"$PYTHON" -m seglab predict "$OUT/assets/model" "$OUT/assets/clip.mp4" --out "$OUT/predicted" \
  --device "$DEVICE" --batch 4 2>&1 | tee "$OUT/predict.log"
predict_end=$(date +%s.%N)
"$PYTHON" - "$OUT/predicted" "${VIDEO[0]}" "$predict_start" "$predict_end" <<'EOF'
import sys
from pathlib import Path

import av

folder, frames = Path(sys.argv[1]), int(sys.argv[2])
seconds = float(sys.argv[4]) - float(sys.argv[3])
videos = sorted(p for p in folder.rglob("*") if p.suffix in (".mp4", ".avi", ".mkv"))
if not videos:
    sys.exit(f"seglab predict wrote no video under {folder}")
with av.open(str(videos[0])) as container:
    written = sum(1 for _ in container.decode(video=0))
if written != frames:
    sys.exit(f"{videos[0]} has {written} frames, expected {frames}")
print(f"predict: {frames} frames in {seconds:.1f} s wall (process start included), "
      f"{frames / seconds:.1f} frames/s -> {videos[0].name}")
EOF

say "done in $(( $(date +%s) - started )) s; logs in $OUT"
