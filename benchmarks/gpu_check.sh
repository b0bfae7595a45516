#!/usr/bin/env bash
# The whole GPU check in one prepared run (about four minutes on one H100/H200): GPU tests (CUDA graphs and Triton
# kernels included), maze A2C throughput at batch 30 and 512 replayed as a CUDA graph and launched eagerly, with the
# Triton step kernels and with the PyTorch operations, a kernel profile of one
# eager maze iteration, every benchmark suite on the device against its plain formulation, then, if a Penn Treebank
# folder is given, PTB through gpu_ptb.sh.
#
# Usage, from the repository root:  bash benchmarks/gpu_check.sh [OUT_DIR] [PTB_DIR [PTB_TRAIN_SECONDS]]
# Runs from src/ through PYTHONPATH; wheels in .whl/ (pooch, gymnasium, ...) are installed to /tmp/site if present.
set -uo pipefail
export PYTHONUNBUFFERED=1
DEST=${1:-${OUT:-runs/gpu-check}}
DATA=${2:-}
PTB_SECONDS=${3:-120}
PY=${PYTHON:-python3}
export PYTHON=$PY
mkdir -p "$DEST"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$DEST/hardware.txt"

echo "== GPU tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_envs_maze.py tests/test_envs_cue_reward.py \
  -k "cuda or gpu or CUDA or graph" 2>&1 | tail -15 | tee "$DEST/tests.txt"

echo "== maze A2C, library only: CUDA graph and eager, batch 30 and 512"
timeout 120 $PY benchmarks/maze_throughput.py cuda 30 512 2>&1 | tee "$DEST/bench.txt"
echo "== the same with the PyTorch operations instead of the Triton step kernels"
PLASTICNET_BENCH_BACKEND=torch timeout 120 $PY benchmarks/maze_throughput.py cuda 30 512 2>&1 | tee -a "$DEST/bench.txt"
echo "== kernel profile of one eager maze iteration"
timeout 60 $PY benchmarks/gpu_profile.py 30 2>&1 | tee "$DEST/profile.txt"

for suite in "maze --batch-sizes 30" "cue-reward --batch-sizes 30" "trace --batch-sizes 1 32" "memory --batch-sizes 16" \
             "pattern --batch-sizes 1 32"; do
  echo "== bench $suite"
  timeout 120 $PY -m plasticnet bench $suite --device cuda 2>&1 | tee -a "$DEST/bench.txt"
done

if [ -n "$DATA" ]; then
  echo "== Penn Treebank"
  SKIP_COUNTS=1 ROUNDS=3 bash benchmarks/gpu_ptb.sh "$DATA" "$DEST/ptb" "$PTB_SECONDS" 2>&1 | tail -40
fi
