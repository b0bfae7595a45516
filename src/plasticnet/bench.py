"""``plasticnet bench``: the library's training step against a plain formulation of the same maths, in one run.

Plain formulations live in the source tree's ``benchmarks/`` folder, not in the library, so the command runs from a
source checkout. Memory is the peak allocated on a GPU; on the CPU, where PyTorch keeps no peak, it is the bytes
autograd saves for the backward pass (the part that grows with episode length and batch size).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from .errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark_module(name: str):
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"{path} not found; `plasticnet bench` runs from a source checkout of plasticnet")
    spec = importlib.util.spec_from_file_location(f"plasticnet_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Memory:
    """Peak memory of one training step: CUDA's allocator peak, or autograd's saved tensors on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0
        self._storages: dict[int, int] = {}

    def _pack(self, t):
        storage = t.untyped_storage()
        self._storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._hooks.__exit__(*exc)
            self.bytes = sum(self._storages.values())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(library_step, plain_step, device: torch.device, rounds: int) -> tuple[float, float, int, int]:
    """Seconds per step of each (the fastest of ``rounds`` interleaved timings, so that load from other processes
    hits both alike and a quiet moment is found for each; 0 rounds: as many as fit in about 4 s, at least 3), and
    the memory of one step of each."""
    mems = []
    for step in (library_step, plain_step):
        with _Memory(device) as mem:
            step()
        mems.append(mem.bytes)
    best = [float("inf"), float("inf")]
    began, n = time.perf_counter(), 0
    while (rounds and n < rounds) or (not rounds and (n < 3 or time.perf_counter() - began < 4.0)):
        for i, step in enumerate((library_step, plain_step)):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
        n += 1
    return best[0], best[1], mems[0], mems[1]


def _training_step(model, shown, target):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step():
        out = model(shown)
        loss = (out - target).square().sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def bench_pattern(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    from .config import resolve
    from .tasks.pattern import PatternConfig, RecurrentModel, make_episodes

    plain_module = load_benchmark_module("plain_pattern")
    cfg = resolve(PatternConfig, "pattern", "paper-1000bit", {})
    rows = []
    for batch in batch_sizes:
        torch.manual_seed(0)
        generator = torch.Generator(device=device).manual_seed(0)
        shown, target = make_episodes(cfg, batch, generator, device)
        library = RecurrentModel(cfg).to(device)
        plain = plain_module.PlainPlasticRNN(cfg.n_neurons, cfg.pattern_size).to(device)
        with torch.no_grad():
            plain.w.copy_(library.rnn.cell.w)
            plain.alpha.copy_(library.rnn.cell.alpha)
            gap = (plain(shown) - library(shown)).abs().max().item()
        lib_s, plain_s, lib_mem, plain_mem = compare(_training_step(library, shown, target),
                                                     _training_step(plain, shown, target), device, steps)
        rows.append({"batch": batch, "library_eps": batch / lib_s, "plain_eps": batch / plain_s,
                     "speedup": plain_s / lib_s, "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20,
                     "max_output_difference": gap})
    return rows


def pattern_suite(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    print(f"pattern: 1000 bits, 1001 neurons, 106-step episodes, training step (forward, backward, Adam); "
          f"{_where(device)}")
    rows = bench_pattern(batch_sizes or [1, 8, 32], steps, device)
    print(f"{'batch':>5} {'library ep/s':>13} {'plain ep/s':>11} {'speed-up':>9} {'library MB':>11} "
          f"{'plain MB':>9} {'same output':>12}")
    for r in rows:
        print(f"{r['batch']:>5} {r['library_eps']:>13.2f} {r['plain_eps']:>11.2f} {r['speedup']:>8.2f}x "
              f"{r['library_mb']:>11.0f} {r['plain_mb']:>9.0f} {r['max_output_difference']:>12.1e}")
    return rows


def _where(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def bench_maze(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    """One A2C iteration on the paper-2019 maze (simple neuromodulation, 100 units, 200 steps): the library's
    :class:`~plasticnet.train.a2c.A2CExperiment` against ``benchmarks/plain_maze.py``, both past the burn-in."""
    from .config import resolve
    from .tasks.maze import A2CExperiment, MazeTrainConfig

    plain_module = load_benchmark_module("plain_maze")
    rows = []
    for batch in batch_sizes:
        torch.manual_seed(0)
        cfg = resolve(MazeTrainConfig, "maze", "paper-2019", {"batch_size": batch, "burn_in": 0,
                                                               "device": str(device)})
        library = A2CExperiment(cfg, device)
        plain = plain_module.PlainA2C(batch_size=batch, device=device)
        iterations = iter(range(1 << 62))
        lib_s, plain_s, lib_mem, plain_mem = compare(lambda: library.step(next(iterations)), plain.iteration,
                                                     device, steps)
        rows.append({"batch": batch, "library_s": lib_s, "plain_s": plain_s, "speedup": plain_s / lib_s,
                     "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20})
    return rows


def maze_suite(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    print(f"maze: paper-2019 (13x13, 200 steps), modplast agent with 100 units, one A2C iteration "
          f"(episode, loss, backward, clip, Adam); {_where(device)}")
    rows = bench_maze(batch_sizes or [30], steps, device)
    print(f"{'batch':>5} {'library s/it':>13} {'plain s/it':>11} {'speed-up':>9} {'library MB':>11} {'plain MB':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['library_s']:>13.4f} {r['plain_s']:>11.4f} {r['speedup']:>8.2f}x "
              f"{r['library_mb']:>11.0f} {r['plain_mb']:>9.0f}")
    return rows


# Each suite takes (batch_sizes or None for its own, interleaved timing rounds or 0 for about 4 s, device) and
# prints its table.
SUITES = {"pattern": pattern_suite, "maze": maze_suite}
