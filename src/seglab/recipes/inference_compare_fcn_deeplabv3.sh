#!/usr/bin/env bash
# Pretrained-model inference comparison: torchvision's FCN and DeepLabV3 on a ResNet-101
# (the COCO-with-VOC-labels models, 21 classes), compared on CPU time, GPU time, weight size
# (MB) and memory (RSS on CPU, CUDA peak allocation on the GPU), as `seglab bench` runs.
# Timing needs no trained weights: bench builds the registry models untrained (nothing is
# downloaded); parameters and MB are those of the state dict bench builds (main head; the
# aux head is off, inference never runs it).
#
#   bash configs/inference_compare_fcn_deeplabv3.sh [OUT_DIR] [HxW]
#
# OUT_DIR (default runs/inference_compare) receives cpu.json and, when CUDA is present,
# gpu.json (one `seglab bench --json` document each; drop --json for the printed table).
# HxW defaults to 520x520, the size torchvision's reference evaluation resizes these models'
# inputs to. On a busy CPU quote the ratios between the two models (same run, same machine),
# not the absolute times.
set -euo pipefail

OUT=${1:-runs/inference_compare}
SIZE=${2:-520x520}
MODELS=(fcn_resnet101 deeplabv3_resnet101)
mkdir -p "$OUT"

# CPU: fp32 eager (the baseline), channels_last, and bf16 autocast; batch 1 latency.
seglab bench "${MODELS[@]}" --input "$SIZE" --batch 1 --device cpu \
  --backend eager,channels_last,bf16 --warmup 3 --repeats 10 --json > "$OUT/cpu.json"

# GPU: fp32 eager and fp16 autocast, batch 1 (latency) and 8 (throughput).
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  seglab bench "${MODELS[@]}" --input "$SIZE" --batch 1,8 --device cuda \
    --backend eager,fp16 --warmup 10 --repeats 50 --json > "$OUT/gpu.json"
else
  echo "no CUDA device: GPU comparison skipped" >&2
fi
