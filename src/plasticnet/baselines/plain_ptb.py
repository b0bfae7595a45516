"""The plain formulation of the plastic LSTM language model, as the original code wrote it (reference section 5.3):
one Linear layer per gate and input (x2f, x2i, x2o, x2c, h2f, h2i, h2o), a Python loop over time inside each layer,
and every trace operation a separate tensor under ordinary autograd (``w + alpha * hebb`` built at each step, the
outer product, the rate times the outer product, the sum, the clip). ``plasticnet bench ptb`` measures the library
against it, with the same weights, and checks that both compute the same logits."""

import torch
import torch.nn.functional as F
from torch import nn


class PlainPlasticLSTMCell(nn.Module):
    def __init__(self, isize: int, hsize: int, modulated: bool, clip: float = 2.0):
        super().__init__()
        self.hsize, self.modulated, self.clip = hsize, modulated, clip
        self.x2f, self.x2i, self.x2o, self.x2c = (nn.Linear(isize, hsize) for _ in range(4))
        self.h2f, self.h2i, self.h2o = (nn.Linear(hsize, hsize) for _ in range(3))
        self.w = nn.Parameter(torch.zeros(hsize, hsize))
        self.alpha = nn.Parameter(torch.zeros(1, 1, hsize))
        if modulated:
            self.h2mod, self.modfanout = nn.Linear(hsize, 1), nn.Linear(1, hsize)
        else:
            self.eta = nn.Parameter(torch.tensor(0.01))

    def forward(self, x, h, c, hebb):
        f = torch.sigmoid(self.x2f(x) + self.h2f(h))
        i = torch.sigmoid(self.x2i(x) + self.h2i(h))
        o = torch.sigmoid(self.x2o(x) + self.h2o(h))
        weights = self.w + self.alpha * hebb
        g = torch.tanh(self.x2c(x) + torch.bmm(h.unsqueeze(1), weights).squeeze(1))
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        delta = torch.bmm(h.unsqueeze(2), g.unsqueeze(1))
        if self.modulated:
            rate = self.modfanout(torch.tanh(self.h2mod(h_new))).unsqueeze(1)
        else:
            rate = self.eta
        hebb = torch.clamp(hebb + rate * delta, -self.clip, self.clip)
        return h_new, c_new, hebb

    @torch.no_grad()
    def copy_from(self, cell) -> None:
        """Take the weights of a library :class:`plasticnet.PlasticLSTMCell` (fused blocks [i | f | o | g])."""
        n = self.hsize
        block = lambda t, k: t[..., k * n:(k + 1) * n]  # noqa: E731
        for k, (x_layer, h_layer) in enumerate([(self.x2i, self.h2i), (self.x2f, self.h2f), (self.x2o, self.h2o)]):
            x_layer.weight.copy_(block(cell.weight_ih, k).T)
            x_layer.bias.copy_(block(cell.bias_ih, k))
            h_layer.weight.copy_(block(cell.weight_hh, k).T)
            h_layer.bias.copy_(block(cell.bias_hh, k))
        self.x2c.weight.copy_(block(cell.weight_ih, 3).T)
        self.x2c.bias.copy_(block(cell.bias_ih, 3))
        self.w.copy_(cell.w)
        self.alpha.copy_(cell.alpha.view(1, 1, -1))
        if self.modulated:
            self.h2mod.load_state_dict(cell.h2mod.state_dict())
            self.modfanout.load_state_dict(cell.modfanout.state_dict())
        else:
            self.eta.copy_(cell.eta)


class PlainLanguageModel(nn.Module):
    """Embedding, plain plastic LSTM layers (each looping over time), untied decoder; no dropout."""

    def __init__(self, library_model):
        super().__init__()
        cells = library_model.rnn.cells
        self.encoder = nn.Embedding(*library_model.encoder.weight.shape)
        self.cells = nn.ModuleList(
            PlainPlasticLSTMCell(c.input_size, c.hidden_size, modulated=c.modulation is not None) for c in cells)
        self.decoder = nn.Linear(cells[-1].hidden_size, library_model.encoder.weight.shape[0])
        with torch.no_grad():
            self.encoder.weight.copy_(library_model.encoder.weight)
            for plain, cell in zip(self.cells, cells):
                plain.copy_from(cell)
            self.decoder.weight.copy_(library_model.decoder_weight)
            self.decoder.bias.copy_(library_model.decoder_bias)

    def initial_state(self, batch_size: int):
        like = self.encoder.weight
        return [(like.new_zeros(batch_size, c.hsize), like.new_zeros(batch_size, c.hsize),
                 like.new_zeros(batch_size, c.hsize, c.hsize)) for c in self.cells]

    def forward(self, tokens, states=None):
        if states is None:
            states = self.initial_state(tokens.shape[1])
        x = self.encoder(tokens)
        new_states = []
        for cell, (h, c, hebb) in zip(self.cells, states):
            outputs = []
            for x_t in x:
                h, c, hebb = cell(x_t, h, c, hebb)
                outputs.append(h)
            x = torch.stack(outputs)
            new_states.append((h, c, hebb))
        return self.decoder(x), new_states


class TorchLSTMLanguageModel(nn.Module):
    """The plain LSTM language model on ``torch.nn.LSTM`` (cuDNN on a GPU, oneDNN or ATen's own kernels on a CPU):
    embedding, ``num_layers`` layers of ``hidden_size``, untied decoder; no dropout. The same shapes as the library's
    ``lstm`` condition, with ``torch.nn.LSTM``'s own initialisation (timing only)."""

    def __init__(self, vocab_size: int, emsize: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnn = nn.LSTM(emsize, hidden_size, num_layers)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        x, state = self.rnn(self.encoder(tokens), state)
        return self.decoder(x), state


def detach(states):
    return [tuple(t.detach() for t in layer) for layer in states]


def cross_entropy(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
