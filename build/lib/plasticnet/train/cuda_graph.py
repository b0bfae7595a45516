"""A training iteration replayed as one CUDA graph.

An A2C iteration on a GPU is thousands of small kernels (about fifty per time step, forward and backward, with
PyTorch's operations, for 200 steps); launched one by one from Python, the launches, not the arithmetic, set its
time. Captured once as a CUDA graph, the whole iteration (environment, sampling, network, traces, loss, backward
pass, gradient clipping) is one launch.
"""

from __future__ import annotations

from typing import Callable

import torch


class GraphedIteration:
    """``fn(*inputs)``, tensors in and a dict of tensors out, replayed as one CUDA graph: captured at the first call,
    after ``warmup`` eager runs on a side stream (as CUDA graph capture requires); every call copies its inputs into
    the graph's own and replays it, and returns copies of the outputs.

    What ``fn`` must be (the A2C iteration is): the same operations for any inputs of the first call's shapes; no
    wait on the host (no ``.item()``, no Python branch on a tensor's value, no value read into a Python number: it
    would be frozen into the graph); no random draws of its own (draw outside and pass the draws in); parameters
    changed only outside it (an optimizer step after the call). Gradients it computes stay in the ``.grad`` tensors
    created during the capture: calling ``zero_grad(set_to_none=True)`` inside ``fn`` is fine (it is Python, not a
    kernel), but nothing outside may set them to None.
    """

    def __init__(self, fn: Callable[..., dict[str, torch.Tensor]], warmup: int = 2):
        self.fn, self.warmup = fn, warmup
        self._graph = None
        self._inputs: list[torch.Tensor] = []
        self._outputs: dict[str, torch.Tensor] = {}

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._graph is None:
            self._capture(inputs)
        for static, value in zip(self._inputs, inputs):
            static.copy_(value)
        self._graph.replay()
        return {name: value.clone() for name, value in self._outputs.items()}

    def _capture(self, inputs) -> None:
        device = inputs[0].device
        self._inputs = [value.clone() for value in inputs]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*self._inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._outputs = self.fn(*self._inputs)
        self._graph = graph
