"""Agent steps per second of maze A2C training (paper-2019 preset, modplast, 100 units, 200-step episodes, past the
burn-in), library only: `python benchmarks/maze_throughput.py DEVICE BATCH...`."""

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
        cfg = resolve(MazeTrainConfig, "maze", "paper-2019", {"batch_size": batch, "burn_in": 0,
                                                               "device": device_name})
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
        print(f"maze batch {batch}: {seconds * 1000:.1f} ms per A2C iteration (episode, loss, backward, Adam), "
              f"{steps / seconds:,.0f} agent steps per second")


if __name__ == "__main__":
    main(sys.argv[1], [int(b) for b in sys.argv[2:]] or [30])
