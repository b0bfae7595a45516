"""Agent steps per second of maze A2C training (paper-2019 preset, modplast, 100 units, 200-step episodes, past the
burn-in), library only: `python benchmarks/maze_throughput.py DEVICE BATCH...` (`PLASTICNET_BENCH_BACKEND=torch`
for another backend than auto's choice). On a CUDA device each batch size runs twice: the iteration replayed as a CUDA
graph (the default) and launched eagerly (`--no-cuda-graph`)."""

import os
import sys
import time

import torch

from plasticnet.config import resolve
from plasticnet.tasks.maze import A2CExperiment, MazeTrainConfig


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(device_name: str, batches: list[int]) -> None:
    device = torch.device(device_name)
    for batch in batches:
        for graph in (True, False) if device.type == "cuda" else (False,):
            cfg = resolve(MazeTrainConfig, "maze", "paper-2019", {"batch_size": batch, "burn_in": 0,
                                                                   "device": device_name, "cuda_graph": graph,
                                                                   "backend": os.environ.get("PLASTICNET_BENCH_BACKEND",
                                                                                             "auto")})
            experiment = A2CExperiment(cfg, device)
            for i in range(3):
                experiment.step(i)
            sync(device)
            n, began = 10, time.perf_counter()
            for i in range(n):
                experiment.step(3 + i)
            sync(device)
            seconds = (time.perf_counter() - began) / n
            steps = batch * experiment.env.episode_length
            how = "CUDA graph" if experiment.graphed else "eager"
            print(f"maze batch {batch} ({how}, backend {experiment.describe()['agent'].split('backend ')[1]}): {seconds * 1000:.1f} ms per A2C iteration (episode, loss, backward, "
                  f"Adam), {steps / seconds:,.0f} agent steps per second", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(b) for b in sys.argv[2:]] or [30])
