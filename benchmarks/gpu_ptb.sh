#!/usr/bin/env bash
# Penn Treebank on one GPU, in a few minutes: the ptb speed benchmark (library against the plain per-step
# formulation), the parameter counts of every preset and condition, then the small preset's four conditions
# (lstm, plastic, modplast, modul; seed 0) trained side by side for a fixed wall-clock budget and scored on the
# test set (best-validation weights; the whole 13-epoch schedule needs more time than this).
#
# Usage, from the repository root:  bash benchmarks/gpu_ptb.sh PTB_DIR [OUT_DIR] [TRAIN_SECONDS]
#   PTB_DIR        folder holding ptb.train.txt, ptb.valid.txt, ptb.test.txt
#   OUT_DIR        where results go (default: $OUT if set, else runs/gpu-ptb)
#   TRAIN_SECONDS  wall-clock budget of the four parallel training runs (default 300)
# Installs nothing (runs from src/ through PYTHONPATH; no network): torch, numpy, tqdm and tensorboard must be there.
# For a smoke test elsewhere: DEVICE=cpu ROUNDS=2 TRAIN_FLAGS="--iterations 10 --log-every 5" bash benchmarks/...
set -uo pipefail
DEVICE=${DEVICE:-cuda}
ROUNDS=${ROUNDS:-5}
TRAIN_FLAGS=${TRAIN_FLAGS:-}

DATA=${1:?usage: bash benchmarks/gpu_ptb.sh PTB_DIR [OUT_DIR] [TRAIN_SECONDS]}
DEST=${2:-${OUT:-runs/gpu-ptb}}
BUDGET=${3:-300}
PY=${PYTHON:-python}
mkdir -p "$DEST"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

$PY -c "import torch, numpy, tqdm, torch.utils.tensorboard; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" || {
  echo "missing a dependency or no GPU; nothing run"; exit 2; }
{ nvidia-smi -L || lscpu | grep "Model name"; } 2>/dev/null | tee "$DEST/hardware.txt"
$PY -m plasticnet data check ptb "$DATA" | tee "$DEST/data_check.txt"

echo "== speed: tokens per second, library against the plain per-step formulation ($DEVICE)"
$PY -m plasticnet bench ptb --device $DEVICE --batch-sizes 20 6 --rounds $ROUNDS | tee "$DEST/bench_$DEVICE.txt"

echo "== parameter counts (train ptb --dry-run --json; SKIP_COUNTS=1 skips them, they need no GPU)"
: >"$DEST/parameters.jsonl"
for preset in $([ "${SKIP_COUNTS:-0}" = 1 ] || echo small large); do
  for model in lstm plastic modplast modul; do
    $PY -m plasticnet train ptb --preset $preset --model $model --data "$DATA" --dry-run --json >>"$DEST/parameters.jsonl"
  done
done
$PY - "$DEST/parameters.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    info = json.loads(line)
    print(f"{info['preset']:>6} {info['config']['model']:>9} {info['parameters']:>12,} hidden {info['hidden_sizes']}")
EOF

echo "== small preset, four conditions in parallel for ${BUDGET}s each (they stop at a logged point and save)"
for model in lstm plastic modplast modul; do
  rm -rf "$DEST/small-$model-seed0"
  timeout -s INT $((BUDGET + 120)) $PY -m plasticnet train ptb --preset small --model $model --seed 0 \
    --device $DEVICE --data "$DATA" --out "$DEST/small-$model-seed0" --no-progress \
    --time-budget "$BUDGET" $TRAIN_FLAGS >"$DEST/small-$model.train.log" 2>&1 &
done
wait

echo "== test perplexity (batch 10; the paper scores with batch 1, which only changes where the state restarts)"
for model in lstm plastic modplast modul; do
  $PY -m plasticnet eval ptb --checkpoint "$DEST/small-$model-seed0" --split test --data "$DATA" --device $DEVICE \
    --batch-size 10 | tee "$DEST/small-$model.test.txt"
done

$PY - "$DEST" <<'EOF'
import json, sys
from pathlib import Path
dest = Path(sys.argv[1])
paper = {"lstm": 104.26, "plastic": 103.80, "modplast": 102.65, "modul": 102.48}
print("tok/s: training tokens per second over the whole run, validation passes included")
print(f"{'model':>9} {'segments':>9} {'tok/s':>7} {'epochs':>6} {'last val ppl':>12} {'test ppl':>9} {'paper':>7}")
for model, reference in paper.items():
    points = [json.loads(l) for l in (dest / f"small-{model}-seed0" / "metrics.jsonl").read_text().splitlines()]
    epochs = [p for p in points if "epoch" in p]
    speed = points[-1]["iteration"] * 400 / points[-1]["seconds"] if points else float("nan")
    test = (dest / f"small-{model}.test.txt").read_text().split()
    print(f"{model:>9} {points[-1]['iteration'] if points else 0:>9} {speed:>7.0f} {len(epochs):>6} "
          f"{epochs[-1]['val_ppl'] if epochs else float('nan'):>12.2f} {test[3] if len(test) > 3 else '-':>9} "
          f"{reference:>7}")
EOF
