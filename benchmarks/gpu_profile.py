"""Where a maze A2C iteration's GPU time goes: `python benchmarks/gpu_profile.py [BATCH]` profiles one eager
iteration (paper-2019, modplast, 100 units) and prints the kernel count, their summed device time against the
iteration's wall time (a gap means the launches, not the kernels, set the pace) and the kernels that take most."""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from plasticnet.config import resolve
from plasticnet.tasks.maze import A2CExperiment, MazeTrainConfig


def main(batch: int) -> None:
    cfg = resolve(MazeTrainConfig, "maze", "paper-2019", {"batch_size": batch, "burn_in": 0, "device": "cuda",
                                                           "cuda_graph": False})
    experiment = A2CExperiment(cfg, torch.device("cuda"))
    for i in range(2):
        experiment.step(i)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        began = time.perf_counter()
        experiment.step(2)
        torch.cuda.synchronize()
        wall = time.perf_counter() - began
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3
    print(f"maze batch {batch}, one eager iteration: {len(kernels)} kernels ({len(kernels) / 200:.1f} per step), "
          f"{busy:.1f} ms of kernel time in {wall * 1e3:.1f} ms of wall time")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
