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


def measure(step, device: torch.device, steps: int) -> tuple[float, int]:
    """Seconds per step (after one warm-up step) and the memory of one step."""
    with _Memory(device) as mem:
        step()
    _sync(device)
    n, began = 0, time.perf_counter()
    while (steps and n < steps) or (not steps and (n < 3 or time.perf_counter() - began < 2.0)):
        step()
        n += 1
    _sync(device)
    return (time.perf_counter() - began) / n, mem.bytes


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
        lib_s, lib_mem = measure(_training_step(library, shown, target), device, steps)
        plain_s, plain_mem = measure(_training_step(plain, shown, target), device, steps)
        rows.append({"batch": batch, "library_eps": batch / lib_s, "plain_eps": batch / plain_s,
                     "speedup": plain_s / lib_s, "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20,
                     "max_output_difference": gap})
    return rows


def pattern_suite(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"pattern: 1000 bits, 1001 neurons, 106-step episodes, training step (forward, backward, Adam); {where}")
    rows = bench_pattern(batch_sizes, steps, device)
    print(f"{'batch':>5} {'library ep/s':>13} {'plain ep/s':>11} {'speed-up':>9} {'library MB':>11} "
          f"{'plain MB':>9} {'same output':>12}")
    for r in rows:
        print(f"{r['batch']:>5} {r['library_eps']:>13.2f} {r['plain_eps']:>11.2f} {r['speedup']:>8.2f}x "
              f"{r['library_mb']:>11.0f} {r['plain_mb']:>9.0f} {r['max_output_difference']:>12.1e}")
    return rows


def _lm_training_step(model, forward, detach, tokens):
    """One BPTT segment of language-model training: the state (traces included) carries over, detached."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    carried = [None]

    def step():
        logits, state = forward(model, tokens[:-1], carried[0])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        carried[0] = detach(state)
    return step


def bench_ptb(batch_sizes, steps: int, device: torch.device, models=("plastic", "modplast")) -> list[dict]:
    """Training tokens per second of the small preset's language model (2 layers of 199, 20-step segments),
    library against the plain per-step formulation with the same weights."""
    from .config import resolve
    from .lstm import detach_state
    from .tasks.ptb import LanguageModel, PtbConfig, matched_hidden_size

    plain_module = load_benchmark_module("plain_ptb")
    rows = []
    for name in models:
        cfg = resolve(PtbConfig, "ptb", "small", {"model": name})
        hidden = matched_hidden_size(cfg, 10000)
        for batch in batch_sizes:
            torch.manual_seed(0)
            library = LanguageModel(cfg, 10000, hidden).to(device)
            plain = plain_module.PlainLanguageModel(library).to(device)
            tokens = torch.randint(10000, (cfg.bptt + 1, batch), device=device)
            with torch.no_grad():
                gap = (library(tokens[:-1])[0] - plain(tokens[:-1])[0]).abs().max().item()
            lib_step = _lm_training_step(library, lambda m, x, s: m(x, s)[:2], detach_state, tokens)
            plain_step = _lm_training_step(plain, lambda m, x, s: m(x, s), plain_module.detach, tokens)
            lib_s, lib_mem = measure(lib_step, device, steps)
            plain_s, plain_mem = measure(plain_step, device, steps)
            per_step = cfg.bptt * batch
            rows.append({"model": name, "hidden": hidden, "batch": batch, "library_tps": per_step / lib_s,
                         "plain_tps": per_step / plain_s, "speedup": plain_s / lib_s, "library_mb": lib_mem / 2**20,
                         "plain_mb": plain_mem / 2**20, "max_logit_difference": gap})
    return rows


def ptb_suite(batch_sizes, steps: int, device: torch.device) -> list[dict]:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"ptb: small preset language model (10k words, 2 plastic LSTM layers), 20-step segments, training step "
          f"(forward, backward, clip, SGD); tokens per second; {where}")
    rows = bench_ptb(batch_sizes, steps, device)
    print(f"{'model':>9} {'hidden':>6} {'batch':>5} {'library tok/s':>14} {'plain tok/s':>12} {'speed-up':>9} "
          f"{'library MB':>11} {'plain MB':>9} {'same logits':>12}")
    for r in rows:
        print(f"{r['model']:>9} {r['hidden']:>6} {r['batch']:>5} {r['library_tps']:>14.0f} {r['plain_tps']:>12.0f} "
              f"{r['speedup']:>8.2f}x {r['library_mb']:>11.0f} {r['plain_mb']:>9.0f} "
              f"{r['max_logit_difference']:>12.1e}")
    return rows


# Each suite takes (batch_sizes, timed steps or 0 for about 2 s, device) and prints its table.
SUITES = {"pattern": pattern_suite, "ptb": ptb_suite}
