"""``plasticnet bench``: the library's training step against a plain formulation of the same maths, in one run.

The plain formulations are in :mod:`plasticnet.baselines`, installed with the library. Memory is the peak of one
training step above what was allocated before it (see ``_Memory``).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import time
from importlib import import_module
from pathlib import Path

import torch

from .errors import ConfigError
from .fast import cpu_kernels

def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def _available_bytes(device: torch.device) -> int | None:
    """Memory free for a step on ``device`` (CUDA's free memory; Linux's MemAvailable), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Give the C allocator's free memory back to the system (glibc's ``malloc_trim``), so that the resident memory
    a step then reaches counts its own allocations even where they reuse memory an earlier step freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks may then undercount memory reused from earlier steps
        pass


class _Memory:
    """Peak memory of one training step above what was allocated before it: CUDA's allocator peak on a GPU; on the
    CPU the process's peak resident memory (Linux: reset through /proc/self/clear_refs), which counts every
    temporary, or, where that is unavailable, the bytes autograd saves for the backward pass."""

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
            return self
        gc.collect()
        _release_free_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._base = _proc_kib("VmRSS")
            self._hooks = None
        except OSError:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._hooks is None:
            self.bytes = (_proc_kib("VmHWM") - self._base) * 1024
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
    (lib_s, plain_s), (lib_mem, plain_mem) = compare_steps([library_step, plain_step], device, rounds)
    return lib_s, plain_s, lib_mem, plain_mem


def compare_steps(steps, device: torch.device, rounds: int) -> tuple[list[float], list[int]]:
    """:func:`compare` for any number of steps: their seconds and their memory, in their order."""
    if device.type == "cpu":
        cpu_kernels.warm_up()
    mems = []
    for step in steps:
        with _Memory(device) as mem:
            step()
        mems.append(mem.bytes)
    best = [float("inf")] * len(steps)
    began, n = time.perf_counter(), 0
    while (rounds and n < rounds) or (not rounds and (n < 3 or time.perf_counter() - began < 4.0)):
        for i, step in enumerate(steps):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - t0)
        n += 1
    return best, mems


def _training_step(model, inputs, loss_fn):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step():
        loss = loss_fn(model(inputs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _where(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def _backend(model) -> str:
    """The backend that runs ``model`` (a layer or agent with a ``backend`` setting, or a plastic LSTM):
    ``'auto' -> numba``."""
    from .layers import describe_backend

    return describe_backend(model.backend, model.cells[0] if hasattr(model, "cells") else model.cell)


def _copy_plastic_weights(plain, cell) -> None:
    with torch.no_grad():
        plain.w.copy_(cell.w)
        plain.alpha.copy_(cell.alpha)
        plain.eta.copy_(cell.eta)


def pattern_suite(batch_sizes, rounds: int, device: torch.device) -> list[dict]:
    """The 1000-bit pattern task's training step (forward, backward, Adam) per batch size."""
    from .config import resolve
    from .tasks.pattern import PatternConfig, RecurrentModel, make_episodes, network_input

    from .baselines import plain_rnn
    cfg = resolve(PatternConfig, "pattern", "paper-1000bit", {})
    P = cfg.pattern_size
    available = _available_bytes(device)
    for batch in batch_sizes:  # refused before anything runs rather than killed by the kernel midway
        needed = batch * PLAIN_PATTERN_BYTES_PER_EPISODE
        if available is not None and needed > available:
            raise ConfigError(f"pattern batch {batch}: the plain formulation needs about {needed / 2**30:.0f} GiB and "
                              f"{available / 2**30:.0f} GiB are free; give smaller --batch-sizes (the CPU default is "
                              f"{' '.join(map(str, DEFAULT_BATCH_SIZES['pattern'][0]))})")
    print(f"pattern: 1000 bits, 1001 neurons, 106-step episodes, training step (forward, backward, Adam); "
          f"{_where(device)}")
    print(f"{'batch':>5} {'library ep/s':>13} {'plain ep/s':>11} {'speed-up':>9} {'library MB':>11} "
          f"{'plain MB':>9} {'same output':>12}  backend")
    rows = []
    for batch in batch_sizes:
        torch.manual_seed(0)
        shown, target = make_episodes(cfg, batch, torch.Generator(device=device).manual_seed(0), device)
        library = RecurrentModel(cfg).to(device)
        plain = plain_rnn.PlainPlasticRNN(cfg.n_neurons).to(device)
        _copy_plastic_weights(plain, library.rnn.cell)
        drive = network_input(cfg, shown)
        with torch.no_grad():  # on a copy, so that the buffers the library keeps count in its first step's memory
            gap = (plain(drive)[-1, :, :P] - copy.deepcopy(library)(shown)).abs().max().item()
        lib_s, plain_s, lib_mem, plain_mem = compare(
            _training_step(library, shown, lambda out: (out - target).square().sum(-1).mean()),
            _training_step(plain, drive, lambda out: (out[-1, :, :P] - target).square().sum(-1).mean()),
            device, rounds)
        row = {"batch": batch, "library_eps": batch / lib_s, "plain_eps": batch / plain_s,
               "speedup": plain_s / lib_s, "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20,
               "max_output_difference": gap, "backend": _backend(library.rnn)}
        rows.append(row)
        print(f"{batch:>5} {row['library_eps']:>13.2f} {row['plain_eps']:>11.2f} {row['speedup']:>8.2f}x "
              f"{row['library_mb']:>11.0f} {row['plain_mb']:>9.0f} {gap:>12.1e}  {row['backend']}", flush=True)
    return rows


def memory_suite(batch_sizes, rounds: int, device: torch.device, hidden: int = 256, steps: int = 500) -> list[dict]:
    """A 256-unit plastic RNN, 500-step episodes: memory of one training step with chunked recomputation
    (checkpoint every ~sqrt(T) steps) against the plain formulation, and whether the gradients agree."""
    import math

    from .layers import PlasticRNN

    from .baselines import plain_rnn
    every = round(math.sqrt(steps))
    print(f"memory: plastic RNN, {hidden} units, {steps}-step episodes, checkpoint every {every} steps; "
          f"{_where(device)}")
    print(f"{'batch':>5} {'library MB':>11} {'plain MB':>9} {'ratio':>7} {'library s':>10} {'plain s':>8} "
          f"{'grad rel. difference':>21}  backend")
    if device.type == "cpu":
        cpu_kernels.warm_up()
    rows = []
    for batch in batch_sizes:
        torch.manual_seed(0)
        library = PlasticRNN(None, hidden, rule="hebb", checkpoint_every=every).to(device)
        plain = plain_rnn.PlainPlasticRNN(hidden).to(device)
        _copy_plastic_weights(plain, library.cell)
        drive = torch.randn(steps, batch, hidden, device=device)
        target = torch.randn(batch, hidden, device=device)
        grads = []
        for model, params, run in ((library, library.cell, lambda: library(drive)[0]),
                                   (plain, plain, lambda: plain(drive))):
            model.zero_grad()
            began = time.perf_counter()
            with _Memory(device) as mem:
                (run()[-1] - target).square().sum().backward()
                _sync(device)
            grads.append((mem.bytes, time.perf_counter() - began,
                          [params.w.grad.clone(), params.alpha.grad.clone(), params.eta.grad.clone()]))
        gap = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads[0][2], grads[1][2]))
        row = {"batch": batch, "library_mb": grads[0][0] / 2**20, "plain_mb": grads[1][0] / 2**20,
               "ratio": grads[0][0] / grads[1][0], "library_s": grads[0][1], "plain_s": grads[1][1],
               "max_grad_difference": gap, "backend": _backend(library)}
        rows.append(row)
        print(f"{batch:>5} {row['library_mb']:>11.0f} {row['plain_mb']:>9.0f} {row['ratio']:>7.3f} "
              f"{row['library_s']:>10.2f} {row['plain_s']:>8.2f} {gap:>21.1e}  {row['backend']}", flush=True)
    return rows


# Nominal memory bandwidth (bytes/s) of cards we report on; elsewhere the measured copy bandwidth is the yardstick.
NOMINAL_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100": 3.35e12, "H200": 4.8e12}


def trace_suite(batch_sizes, rounds: int, device: torch.device, hidden: int = 1001) -> list[dict]:
    """The decaying-Hebb trace update ``trace = (1 - eta) trace + outer(pre, eta * post)`` as the fused path runs
    it (one baddbmm into a pre-allocated trace): bytes moved per second against a plain copy of the same bytes and,
    on known GPUs, the card's nominal peak."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = next((v for k, v in NOMINAL_BANDWIDTH.items() if k in name), None)
    print(f"trace update: {hidden} units, float32; {_where(device)}")
    print(f"{'batch':>5} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8} {'of peak':>8}")
    rows = []
    reps = max(rounds, 20)
    for batch in batch_sizes:
        trace = torch.zeros(batch, hidden, hidden, device=device)
        out = torch.empty_like(trace)
        pre, post = torch.randn(batch, hidden, 1, device=device), torch.randn(batch, 1, hidden, device=device)

        def update():
            torch.baddbmm(trace, pre, post, beta=0.99, out=out)

        def copy():
            out.copy_(trace)

        times = []
        for fn in (update, copy):
            fn()
            _sync(device)
            began = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
            times.append((time.perf_counter() - began) / reps)
        moved = 2 * trace.numel() * trace.element_size()
        row = {"batch": batch, "gbps": moved / times[0] / 1e9, "copy_gbps": moved / times[1] / 1e9,
               "of_copy": times[1] / times[0], "of_peak": moved / times[0] / peak if peak else None}
        rows.append(row)
        of_peak = f"{row['of_peak']:.0%}" if peak else "-"
        print(f"{batch:>5} {row['gbps']:>8.1f} {row['copy_gbps']:>10.1f} {row['of_copy']:>8.0%} {of_peak:>8}",
              flush=True)
    return rows


def _lm_gradients(model, forward, optimizer, tokens, state):
    """A BPTT segment's loss, backward pass and clipping (the training step but the update): the loss (detached)
    and the new state."""
    logits, state = forward(model, tokens[:-1], state)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    return loss.detach(), state


def _lm_training_step(model, forward, detach, tokens):
    """One BPTT segment of language-model training: the state (traces included) carries over, detached."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    carried = [None]

    def step():
        _, state = _lm_gradients(model, forward, optimizer, tokens, carried[0])
        optimizer.step()
        carried[0] = detach(state)
    return step


def _graphed_lm_training_step(model, tokens):
    """:func:`_lm_training_step` on a GPU with the segment's forward pass, loss, backward pass and clipping replayed
    as one CUDA graph (:class:`~plasticnet.train.cuda_graph.GraphedIteration`); the SGD update runs outside it.
    ``model``: a library :class:`~plasticnet.tasks.ptb.LanguageModel` (states: a list of LSTMState) or a
    ``TorchLSTMLanguageModel`` (state: ``(h, c)``)."""
    from .lstm import state_tensors, states_from_tensors
    from .train.cuda_graph import GraphedIteration

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    if hasattr(model.rnn, "initial_state"):  # the library's
        like = model.rnn.initial_state(tokens.shape[1])
        carried = [state_tensors(like)]
        flatten, unflatten = state_tensors, lambda flat: states_from_tensors(flat, like)  # noqa: E731
    else:  # torch.nn.LSTM's (h, c)
        lstm = model.rnn
        carried = [[tokens.new_zeros((lstm.num_layers, tokens.shape[1], lstm.hidden_size), dtype=torch.float32)] * 2]
        flatten, unflatten = list, tuple

    def segment(tokens, *flat):
        loss, states = _lm_gradients(model, lambda m, x, s: m(x, s)[:2], optimizer, tokens, unflatten(flat))
        return {"loss": loss, **{str(i): value.detach() for i, value in enumerate(flatten(states))}}

    graphed = GraphedIteration(segment)

    def step():
        out = graphed(tokens, *carried[0])
        optimizer.step()
        carried[0] = [out[str(i)] for i in range(len(carried[0]))]
    return step


def bench_ptb(batch_sizes, rounds: int, device: torch.device, models=("plastic", "modplast")) -> list[dict]:
    """Training tokens per second of the small preset's language model (2 layers of 199, 20-step segments),
    library against the plain per-step formulation with the same weights, against the library's plain LSTM (the
    ``lstm`` condition, 2 layers of 200) and against ``torch.nn.LSTM`` of the same shape (cuDNN on a GPU), all four
    timed in turn in the same loop."""
    from .config import resolve
    from .lstm import detach_state
    from .tasks.ptb import LanguageModel, PtbConfig, matched_hidden_size

    from .baselines import plain_ptb as plain_module
    rows = []
    for name in models:
        cfg = resolve(PtbConfig, "ptb", "small", {"model": name})
        lstm_cfg = resolve(PtbConfig, "ptb", "small", {"model": "lstm"})
        hidden = matched_hidden_size(cfg, 10000)
        for batch in batch_sizes:
            torch.manual_seed(0)
            library = LanguageModel(cfg, 10000, hidden).to(device)
            plain = plain_module.PlainLanguageModel(library).to(device)
            lstm = LanguageModel(lstm_cfg, 10000, lstm_cfg.hidden_size).to(device)
            torch_lstm = plain_module.TorchLSTMLanguageModel(10000, lstm_cfg.emsize, lstm_cfg.hidden_size,
                                                             lstm_cfg.num_layers).to(device)
            tokens = torch.randint(10000, (cfg.bptt + 1, batch), device=device)
            with torch.no_grad():
                gap = (library(tokens[:-1])[0] - plain(tokens[:-1])[0]).abs().max().item()
            lib_step = _lm_training_step(library, lambda m, x, s: m(x, s)[:2], detach_state, tokens)
            plain_step = _lm_training_step(plain, lambda m, x, s: m(x, s), plain_module.detach, tokens)
            lstm_step = _lm_training_step(lstm, lambda m, x, s: m(x, s)[:2], detach_state, tokens)
            torch_step = _lm_training_step(torch_lstm, lambda m, x, s: m(x, s),
                                           lambda s: tuple(t.detach() for t in s), tokens)
            steps = [lib_step, plain_step, lstm_step, torch_step]
            if device.type == "cuda":  # the three models' steps again, replayed as CUDA graphs
                steps += [_graphed_lm_training_step(m, tokens) for m in (library, lstm, torch_lstm)]
                try:  # whether this torch and cuDNN capture cuDNN's LSTM in a graph
                    steps[-1]()
                except RuntimeError as error:
                    print(f"nn.LSTM not captured in a CUDA graph here ({str(error).splitlines()[0]})")
                    steps[-1] = torch_step
            times, (lib_mem, plain_mem, *_) = compare_steps(steps, device, rounds)
            lib_s, plain_s, lstm_s, torch_s = times[:4]
            per_step = cfg.bptt * batch
            row = {"model": name, "hidden": hidden, "batch": batch, "library_tps": per_step / lib_s,
                   "plain_tps": per_step / plain_s, "speedup": plain_s / lib_s, "lstm_tps": per_step / lstm_s,
                   "of_lstm": lstm_s / lib_s, "torch_lstm_tps": per_step / torch_s, "of_torch_lstm": torch_s / lib_s,
                   "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20, "max_logit_difference": gap,
                   "backend": _backend(library.rnn)}
            graphed = dict.fromkeys(["graphed_tps", "graphed_of_torch_lstm", "graphed_lstm_tps",
                                     "graphed_torch_lstm_tps", "graphed_of_graphed_torch_lstm"])
            if len(times) > 4:
                lib_g, lstm_g, torch_g = times[4:]
                graphed.update(graphed_tps=per_step / lib_g, graphed_of_torch_lstm=torch_s / lib_g,
                               graphed_lstm_tps=per_step / lstm_g, graphed_torch_lstm_tps=per_step / torch_g,
                               graphed_of_graphed_torch_lstm=torch_g / lib_g)
            rows.append({**row, **graphed})
    return rows


def ptb_suite(batch_sizes, rounds: int, device: torch.device) -> list[dict]:
    where = _where(device)
    print(f"ptb: small preset language model (10k words, 2 plastic LSTM layers), 20-step segments, training step "
          f"(forward, backward, clip, SGD); tokens per second; 'of LSTM': the plain LSTM's step time over the "
          f"library's; 'nn.LSTM': torch.nn.LSTM of the LSTM's shape ({'cuDNN' if device.type == 'cuda' else 'ATen'}), "
          f"its step time over the library's; {where}")
    rows = bench_ptb(batch_sizes, rounds, device)
    print(f"{'model':>9} {'hidden':>6} {'batch':>5} {'library tok/s':>14} {'plain tok/s':>12} {'speed-up':>9} "
          f"{'LSTM tok/s':>11} {'of LSTM':>8} {'nn.LSTM tok/s':>14} {'of nn.LSTM':>11} {'library MB':>11} "
          f"{'plain MB':>9} {'same logits':>12}  backend")
    for r in rows:
        print(f"{r['model']:>9} {r['hidden']:>6} {r['batch']:>5} {r['library_tps']:>14.0f} {r['plain_tps']:>12.0f} "
              f"{r['speedup']:>8.2f}x {r['lstm_tps']:>11.0f} {r['of_lstm']:>8.2f} {r['torch_lstm_tps']:>14.0f} "
              f"{r['of_torch_lstm']:>11.2f} {r['library_mb']:>11.0f} "
              f"{r['plain_mb']:>9.0f} {r['max_logit_difference']:>12.1e}  {r['backend']}")
        if r["graphed_tps"] is not None:
            print(f"{'':>9} replayed as CUDA graphs (forward, loss, backward, clip; SGD outside): library "
                  f"{r['graphed_tps']:.0f} tok/s, LSTM {r['graphed_lstm_tps']:.0f}, nn.LSTM "
                  f"{r['graphed_torch_lstm_tps']:.0f}; library graphed of nn.LSTM eager "
                  f"{r['graphed_of_torch_lstm']:.2f}, of nn.LSTM graphed {r['graphed_of_graphed_torch_lstm']:.2f}")
    return rows


def _a2c_suite(task: str, config_cls, preset: str, plain_name: str, title: str, batch_sizes, rounds: int,
               device: torch.device) -> list[dict]:
    """One A2C iteration of ``task`` with ``preset``: the library's :class:`~plasticnet.train.a2c.A2CExperiment`
    against ``plasticnet/baselines/<plain_name>.py``, both past the burn-in."""
    from .config import resolve
    from .train.a2c import A2CExperiment

    plain_module = import_module(f"plasticnet.baselines.{plain_name}")
    print(f"{title}, one A2C iteration (episode, loss, backward, clip, Adam); {_where(device)}")
    print(f"{'batch':>5} {'library s/it':>13} {'plain s/it':>11} {'speed-up':>9} {'library MB':>11} {'plain MB':>9} "
          f"{'agent steps/s':>14}  backend")
    rows = []
    for batch in batch_sizes:
        torch.manual_seed(0)
        cfg = resolve(config_cls, task, preset, {"batch_size": batch, "burn_in": 0, "device": str(device)})
        library = A2CExperiment(cfg, device)
        plain = plain_module.plain_a2c(batch_size=batch, device=device)
        iterations = iter(range(1 << 62))
        lib_s, plain_s, lib_mem, plain_mem = compare(lambda: library.step(next(iterations)), plain.iteration,
                                                     device, rounds)
        steps_per_s = batch * library.env.episode_length / lib_s
        row = {"batch": batch, "library_s": lib_s, "plain_s": plain_s, "speedup": plain_s / lib_s,
               "library_mb": lib_mem / 2**20, "plain_mb": plain_mem / 2**20, "agent_steps_per_s": steps_per_s,
               "backend": _backend(library.model)}
        rows.append(row)
        print(f"{batch:>5} {lib_s:>13.4f} {plain_s:>11.4f} {row['speedup']:>8.2f}x {row['library_mb']:>11.0f} "
              f"{row['plain_mb']:>9.0f} {steps_per_s:>14.0f}  {row['backend']}", flush=True)
    return rows


def maze_suite(batch_sizes, rounds: int, device: torch.device) -> list[dict]:
    """The paper-2019 maze (simple neuromodulation, 100 units, 200 steps) against
    ``plasticnet/baselines/plain_maze.py``."""
    from .tasks.maze import MazeTrainConfig

    return _a2c_suite("maze", MazeTrainConfig, "paper-2019", "plain_maze",
                      "maze: paper-2019 (13x13, 200 steps), modplast agent with 100 units", batch_sizes, rounds, device)


def cue_reward_suite(batch_sizes, rounds: int, device: torch.device) -> list[dict]:
    """The cue-reward task's paper preset (retroactive modulation, 200 units, 120 steps) against
    ``plasticnet/baselines/plain_cue_reward.py``."""
    from .tasks.cue_reward import CueRewardTrainConfig

    return _a2c_suite("cue-reward", CueRewardTrainConfig, "paper", "plain_cue_reward",
                      "cue-reward: paper (4 cues of 20 bits, 120 steps), modul agent with 200 units", batch_sizes,
                      rounds, device)


# Each suite takes (batch_sizes, interleaved timing rounds or 0 for about 4 s, device) and prints its table.
SUITES = {"pattern": pattern_suite, "memory": memory_suite, "trace": trace_suite, "ptb": ptb_suite, "maze": maze_suite,
          "cue-reward": cue_reward_suite}
# Batch sizes a suite runs when none are given, (CPU, GPU): the issues' settings (maze and PTB: the papers' batches;
# memory: the 256-unit, batch-16 case; pattern 1 8 32, but on the CPU 1 8, where batch 32's plain formulation needs
# about 50 GB).
DEFAULT_BATCH_SIZES = {"pattern": ([1, 8], [1, 8, 32]), "maze": ([30], [30]), "cue-reward": ([30], [30]),
                       "ptb": ([20], [20]), "memory": ([16], [16]), "trace": ([1, 32], [1, 32])}
# Peak memory of the plain 1001-unit pattern step per episode of the batch (measured: 12.9 GB at batch 8 on the CPU).
PLAIN_PATTERN_BYTES_PER_EPISODE = int(1.6 * 2**30)
# `plasticnet bench all`: every suite at the issues' settings, (CPU, GPU). On a 2-core CPU with 24 GiB some plain
# formulations do not fit or take minutes (pattern batch 32 needs about 39 GB, maze batch 512 steps 512 Python
# environments), so the CPU runs the smaller settings.
ALL_BATCH_SIZES = {"pattern": ([1], [1, 32]), "maze": ([30], [30, 512]), "cue-reward": ([30], [30]),
                   "ptb": ([20], [20]), "memory": ([2], [16]), "trace": ([1], [1, 32])}


def all_suites(rounds: int, device: torch.device) -> dict[str, list[dict]]:
    """Every suite, one after the other, at :data:`ALL_BATCH_SIZES`."""
    results = {}
    for name, suite in SUITES.items():
        results[name] = suite(ALL_BATCH_SIZES[name][device.type == "cuda"], rounds, device)
        print(flush=True)
    return results
