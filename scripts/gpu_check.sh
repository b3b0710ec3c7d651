#!/usr/bin/env bash
# Throughput on one GPU, about 5 minutes: ResNet-50 at 224x224 with bf16 compute (synthetic
# inputs; MFU against the card's dense bf16 peak, PEAK_TFLOPS, 989 for an H100/H200 SXM) and
# the CIFAR ResNet-56 train step in f32 and bf16, and 4 seeds of it vmapped against one after
# another (`--config.seeds`). One JSON object per line on stdout.
#
#     bash scripts/gpu_check.sh > gpu.jsonl
#     PEAK_TFLOPS=312 bash scripts/gpu_check.sh     # an A100
set -euo pipefail
cd "$(dirname "$0")/.."
PEAK="${PEAK_TFLOPS:-989}"
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
common=(--dataset=synthetic --pipeline_batches=2 --matmul_size=8192 --json)
"$PY" scripts/benchmark.py --model=resnet50 --num_classes=1000 --batch_size=256 --dtype=bfloat16 \
  --peak_tflops="$PEAK" --reps=5 --steps_per_rep=20 --warmup=5 "${common[@]}"
"$PY" scripts/benchmark.py --model=resnet56 --batch_size=128 --dtype=float32 \
  --reps=5 --steps_per_rep=50 --warmup=10 "${common[@]}"
"$PY" scripts/benchmark.py --model=resnet56 --batch_size=128 --dtype=bfloat16 \
  --peak_tflops="$PEAK" --reps=5 --steps_per_rep=50 --warmup=10 "${common[@]}"
"$PY" scripts/seeds_benchmark.py --model=resnet56 --batch_size=128 --seeds=4 \
  --reps=5 --steps_per_rep=20 --warmup=5 --json
