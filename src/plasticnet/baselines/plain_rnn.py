"""The plain formulation of a plastic RNN (decaying Hebb, per-connection alpha), as the original code wrote it
(batched here so that batch sizes compare): every step builds ``w + alpha * hebb`` and the increment
``eta * outer(pre, post)`` as separate tensors under ordinary autograd, which keeps several trace-sized tensors per
step for the backward pass. ``plasticnet bench`` measures the library against it."""

import torch
from torch import nn


class PlainPlasticRNN(nn.Module):
    def __init__(self, n_neurons: int):
        super().__init__()
        self.w = nn.Parameter(0.01 * torch.randn(n_neurons, n_neurons))
        self.alpha = nn.Parameter(0.01 * torch.randn(n_neurons, n_neurons))
        self.eta = nn.Parameter(torch.tensor(0.01))

    def forward(self, drive: torch.Tensor) -> torch.Tensor:
        """``drive`` (T, B, N) is added inside the tanh at each step; returns every activity (T, B, N)."""
        T, B, N = drive.shape
        y = drive.new_zeros(B, N)
        hebb = drive.new_zeros(B, N, N)
        outputs = []
        for t in range(T):
            y_new = torch.tanh(torch.bmm(y.unsqueeze(1), self.w + self.alpha * hebb).squeeze(1) + drive[t])
            hebb = (1 - self.eta) * hebb + self.eta * torch.bmm(y.unsqueeze(2), y_new.unsqueeze(1))
            y = y_new
            outputs.append(y)
        return torch.stack(outputs)
