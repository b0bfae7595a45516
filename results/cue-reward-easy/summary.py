"""The table of results/cue-reward-easy/README.md from runs/easy/*: per setting and seed, the first logged
iteration where the mean reward of the last 5 logged points passed 5, the mean of the last 20, the largest gradient
norm, the final eligibility rate parameter."""
import glob, json, re
from collections import defaultdict
import torch

rows = defaultdict(dict)
for d in sorted(glob.glob("runs/easy/*/")):
    m = re.match(r"runs/easy/(\w+)-lr([\de.-]+?)(?:-eta([\d.]+))?-s(\d)/", d)
    agent, lr, eta, seed = m.group(1), m.group(2), m.group(3) or "0.1", int(m.group(4))
    if not glob.glob(d + "checkpoint.pt"):
        continue
    pts = [json.loads(l) for l in open(d + "metrics.jsonl")]
    r = [p["reward"] for p in pts]
    first = next((pts[i]["iteration"] for i in range(len(r)) if sum(r[max(0, i - 4):i + 1]) / len(r[max(0, i - 4):i + 1]) > 5), None)
    model = torch.load(d + "checkpoint.pt", weights_only=True)["experiment"]["model"]
    rows[(agent, lr, eta if agent == "modul" else "-")][seed] = (first, pts[-1]["iteration"], sum(r[-20:]) / 20,
        max(p["grad_norm"] for p in pts), float(model["cell.eta"]) if agent == "modul" else None)
out = ["| agent | lr | eligibility rate from | first iteration above 5, seeds 0-3 | iterations | last 20 points, mean reward | largest gradient norm | final eta (the rate: clamped to [0, 1]) |",
       "| --- | --- | --- | --- | --- | --- | --- | --- |"]
for (agent, lr, eta), seeds in sorted(rows.items()):
    s = [seeds[k] for k in sorted(seeds)]
    out.append(f"| {agent} | {lr} | {eta} | {', '.join(str(x[0]) if x[0] else '-' for x in s)} | "
               f"{', '.join(str(x[1]) for x in s)} | {', '.join(f'{x[2]:.1f}' for x in s)} | "
               f"{max(x[3] for x in s):.2f} | {', '.join(f'{x[4]:.2f}' for x in s) if agent == 'modul' else '-'} |")
print("\n".join(out))
