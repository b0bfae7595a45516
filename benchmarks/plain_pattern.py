"""The plain formulation of the pattern task's plastic RNN, as the original code wrote it (batched here so that
batch sizes compare): every step builds ``w + alpha * hebb`` and the increment ``eta * outer(pre, post)`` as
separate tensors under ordinary autograd. ``plasticnet bench pattern`` measures the library against it."""

import torch
from torch import nn


class PlainPlasticRNN(nn.Module):
    def __init__(self, n_neurons: int, pattern_size: int, input_gain: float = 20.0):
        super().__init__()
        self.n, self.p, self.gain = n_neurons, pattern_size, input_gain
        self.w = nn.Parameter(0.01 * torch.randn(n_neurons, n_neurons))
        self.alpha = nn.Parameter(0.01 * torch.randn(n_neurons, n_neurons))
        self.eta = nn.Parameter(torch.tensor(0.01))

    def forward(self, shown: torch.Tensor) -> torch.Tensor:
        T, B, P = shown.shape
        x = shown.new_zeros(T, B, self.n)
        x[..., :P] = shown
        x[..., -1] = 1.0
        x = self.gain * x
        y = shown.new_zeros(B, self.n)
        hebb = shown.new_zeros(B, self.n, self.n)
        for t in range(T):
            y_new = torch.tanh(torch.bmm(y.unsqueeze(1), self.w + self.alpha * hebb).squeeze(1) + x[t])
            hebb = (1 - self.eta) * hebb + self.eta * torch.bmm(y.unsqueeze(2), y_new.unsqueeze(1))
            y = y_new
        return y[:, :P]
