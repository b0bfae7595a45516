#!/usr/bin/env bash
# The whole GPU check in one prepared run (a few minutes on one H100/H200): GPU tests, every benchmark suite on the
# device against its plain formulation, maze A2C throughput at batch 512, then Penn Treebank through gpu_ptb.sh.
#
# Usage, from the repository root:  bash benchmarks/gpu_check.sh PTB_DIR [OUT_DIR] [PTB_TRAIN_SECONDS]
# Runs from src/ through PYTHONPATH; wheels in .whl/ (pooch, gymnasium, ...) are installed to /tmp/site if present.
set -uo pipefail
export PYTHONUNBUFFERED=1
DATA=${1:?usage: bash benchmarks/gpu_check.sh PTB_DIR [OUT_DIR] [PTB_TRAIN_SECONDS]}
DEST=${2:-${OUT:-runs/gpu-check}}
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
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_envs_maze.py tests/test_envs_cue_reward.py \
  -k "cuda or gpu or CUDA" 2>&1 | tail -5 | tee "$DEST/tests.txt"

for suite in "pattern --batch-sizes 1 32" "memory --batch-sizes 16" "trace --batch-sizes 1 32" "maze --batch-sizes 30" \
             "cue-reward --batch-sizes 30"; do
  echo "== bench $suite"
  timeout 120 $PY -m plasticnet bench $suite --device cuda 2>&1 | tee -a "$DEST/bench.txt"
done

echo "== maze A2C, library only at batch 30 and 512 (the plain per-element formulation takes minutes at 512)"
timeout 120 $PY benchmarks/maze_throughput.py cuda 30 512 2>&1 | tee -a "$DEST/bench.txt"

echo "== Penn Treebank"
SKIP_COUNTS=1 ROUNDS=3 bash benchmarks/gpu_ptb.sh "$DATA" "$DEST/ptb" "$PTB_SECONDS" 2>&1 | tail -40
