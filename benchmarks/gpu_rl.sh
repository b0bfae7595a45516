#!/usr/bin/env bash
# The meta-RL tasks on one GPU, in about ten minutes: the fused episode checked against stepping the cell on the
# device, the maze speed benchmark (library against the plain per-element formulation, batch 30 and 512), then each
# task's conditions trained side by side for the same wall-clock budget at the papers' settings (seed 0), their
# curves, the maze animation and the cue-reward modulator figure.
#
# Usage, from the repository root:  bash benchmarks/gpu_rl.sh [OUT_DIR] [TRAIN_SECONDS]
#   OUT_DIR        where results go (default: $OUT if set, else runs/gpu-rl)
#   TRAIN_SECONDS  wall-clock budget of each group of parallel training runs (default 180)
# Installs nothing (runs from src/ through PYTHONPATH; no network).
# For a smoke test elsewhere: DEVICE=cpu ROUNDS=1 BATCHES=2 TRAIN_FLAGS="--batch-size 2 --hidden-size 8" \
#   bash benchmarks/gpu_rl.sh /tmp/rl-smoke 5
set -uo pipefail
DEVICE=${DEVICE:-cuda}
ROUNDS=${ROUNDS:-5}
BATCHES=${BATCHES:-30 512}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
DEST=${1:-${OUT:-runs/gpu-rl}}
BUDGET=${2:-180}
PY=${PYTHON:-python}
mkdir -p "$DEST"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

$PY -c "import torch; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" || { echo "no GPU; nothing run"; exit 2; }
{ nvidia-smi -L || lscpu | grep "Model name"; } 2>/dev/null | tee "$DEST/hardware.txt"

echo "== the fused episode against stepping the cell under autograd ($DEVICE, float64)"
$PY - "$DEVICE" <<'EOF' | tee "$DEST/fused_check.txt"
import sys, torch
from plasticnet.agents import RecurrentAgent
from plasticnet.envs import MazeEnv
from plasticnet.train.a2c import a2c_loss, discounted_returns, rollout
device = torch.device(sys.argv[1])
# A modest init_scale: with large weights the dynamics are chaotic and rounding differences grow into other actions.
for kind, extra in [("modplast", {}), ("modul", {}), ("plastic", {"rule": "oja"}), ("modplast", {"fanout": True})]:
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        agent = RecurrentAgent(17, 4, kind, 32, init_scale=0.1, backend='auto' if fused else 'reference', **extra).double().to(device)
        episode = rollout(agent, MazeEnv(8, "paper-2019", device=device, seed=1),
                          torch.Generator(device=device).manual_seed(2))
        loss = a2c_loss(episode.logits, episode.actions, agent.value(episode.hidden),
                        discounted_returns(episode.rewards.double(), 0.9), 0.03, 0.1)
        results.append((episode.actions, torch.autograd.grad(loss.total, list(agent.parameters()))))
    same = torch.equal(results[0][0], results[1][0])
    gap = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item() for a, b in zip(results[0][1], results[1][1]))
    print(f"{kind:>9} {extra}: same actions {same}, largest relative gradient difference {gap:.1e}")
EOF

echo "== speed: seconds per A2C iteration, library against the plain per-element formulation ($DEVICE)"
$PY -m plasticnet bench maze --device $DEVICE --batch-sizes $BATCHES --rounds $ROUNDS | tee "$DEST/bench_maze_$DEVICE.txt"

train_group() {  # task, then presets: trained in parallel for $BUDGET seconds each
  local task=$1; shift
  for preset in "$@"; do
    rm -rf "$DEST/$task-$preset"
    timeout -s INT $((BUDGET + 120)) $PY -m plasticnet train $task --preset $preset --seed 0 --device $DEVICE \
      --out "$DEST/$task-$preset" --no-progress --time-budget "$BUDGET" $TRAIN_FLAGS \
      >"$DEST/$task-$preset.train.log" 2>&1 &
  done
  wait
}

echo "== maze (paper-2019, 13x13): modplast, modul, plastic (101), rnn (139) for ${BUDGET}s each, in parallel"
train_group maze paper-2019 paper-2019-modul paper-2019-plastic paper-2019-rnn
echo "== cue-reward (paper, 200 units): modul, modplast, plastic, rnn for ${BUDGET}s each, in parallel"
train_group cue-reward paper paper-modplast paper-plastic paper-rnn

for task in maze cue-reward; do
  $PY -m plasticnet plot "$DEST"/$task-*/ --stat median --smooth 20 --x seconds --out "$DEST/$task-curves.png"
done
$PY -m plasticnet animate maze --checkpoint "$DEST/maze-paper-2019" --episodes 2 --device $DEVICE \
  --out "$DEST/maze-paper-2019.gif"
$PY -m plasticnet plot "$DEST/cue-reward-paper" --figure modulator --out "$DEST/cue-reward-modulator.png"

$PY - "$DEST" <<'EOF'
import json, sys
from pathlib import Path
dest = Path(sys.argv[1])
print(f"{'run':>26} {'iterations':>10} {'s/it':>7} {'reward, last 10% of the run':>28}")
for run in sorted(p for p in dest.iterdir() if (p / "metrics.jsonl").is_file()):
    points = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    tail = points[-max(1, len(points) // 10):]
    mean = sum(p["reward"] for p in tail) / len(tail)
    print(f"{run.name:>26} {points[-1]['iteration']:>10} {points[-1]['seconds'] / points[-1]['iteration']:>7.3f} "
          f"{mean:>28.2f}")
EOF
