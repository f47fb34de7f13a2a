#!/usr/bin/env bash
# GPU checks for issue 3, as one short script: run from the repository root on a machine with an
# NVIDIA GPU, a CUDA build of torch and this project installed (pip install -e '.[test]').
#   bash benchmarks/gpu_check.sh                 # PY=python OUT=gpu-check by default
# 1. the GPU tests: GPU steps == CPU steps (float64), estimates with fp32 and bf16 autocast within
#    tolerance of the truth, a Ray Train worker with --gpu (NCCL backend) end to end;
# 2. the throughput table (plain loop vs library, fp32 vs bf16) -> $OUT/throughput.md.
# Never part of CI: CI machines have no GPU.
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/tests.txt"
"$PY" benchmarks/gpu_throughput.py 2>&1 | tee "$OUT/throughput.md"
