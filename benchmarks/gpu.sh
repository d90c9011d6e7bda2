#!/usr/bin/env bash
# The one GPU command (issue 28): run from the repository root on a machine with one CUDA GPU,
#     bash benchmarks/gpu.sh
# 1. benchmarks/throughput.py at ADNI size (generates the SYNTHETIC set with every core, then
#    model-bound, end-to-end with the loader at 16 and 4 workers and with the data on the device,
#    the CPU cost of each data path, the projected 100-epoch time), 2. the CUDA-only tests.
# Writes benchmarks/out/{gpu.json,gpu.log,gpu-tests.log}; about 5-7 minutes on one H100.
# Targets (benchmarks/RESULTS.md): b(device) >= 0.95 x a, 100 epochs projected < 10 min.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
WORK=${WORK:-/tmp/adni-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'
} | tee "$OUT/gpu.log"
start=$(date +%s)
timeout 420 python benchmarks/throughput.py --work-dir "$WORK" --json "$OUT/gpu.json" 2>&1 \
  | tee -a "$OUT/gpu.log"
status=${PIPESTATUS[0]}
echo "throughput.py exit $status after $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.log"
# whatever time is left of the 8 minutes: the CUDA-only tests
left=$(( 470 - ($(date +%s) - start) ))
if [ "$left" -gt 30 ]; then
  timeout "$left" python -m pytest -q -m gpu -x -p no:cacheprovider -n 0 2>&1 \
    | tail -20 | tee "$OUT/gpu-tests.log"
else
  echo "no time left for pytest -m gpu" | tee "$OUT/gpu-tests.log"
fi
exit "$status"
