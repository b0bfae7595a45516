"""A plastic layer inside your own model: one-shot recall of patterns seen once, which a plain RNN does not learn.

Each episode shows three random +-1 patterns of 16 bits, then one of them with half its bits erased; the model must
give back the erased bits. The patterns are new in every episode, so nothing about them can be stored in the
weights: they must be memorised during the episode. The model is an ordinary ``nn.Module``: a
``PlasticRNN`` between an input layer and a linear read-out. The same model with ``rule=None``, a plain RNN with
the same units trained the same way, gets about 40% of the erased bits wrong (chance: 50%); the plastic one about
14%.

    python examples/own_model.py            # about 15 s of CPU on one thread
"""

import argparse

import torch
from torch import nn

from plasticnet import PlasticRNN

BITS, PATTERNS, HIDDEN = 16, 3, 32
SHOW, GAP, PROBE = 3, 2, 3  # steps each pattern is shown, blank steps after it, steps the probe is shown


def episodes(batch: int, generator: torch.Generator):
    """Inputs (T, B, BITS), the probed pattern (B, BITS) and the mask of its erased bits (B, BITS)."""
    patterns = torch.randint(0, 2, (batch, PATTERNS, BITS), generator=generator).float() * 2 - 1
    which = torch.randint(0, PATTERNS, (batch,), generator=generator)
    target = patterns[torch.arange(batch), which]
    erased = torch.rand(batch, BITS, generator=generator).argsort(-1) < BITS // 2
    probe = target.masked_fill(erased, 0.0)
    steps = []
    for p in range(PATTERNS):
        steps += [patterns[:, p]] * SHOW + [torch.zeros(batch, BITS)] * GAP
    steps += [probe] * PROBE
    return torch.stack(steps), target, erased


class Recall(nn.Module):
    """Your model: input layer, plastic (or plain) recurrent layer, read-out of the last step."""

    def __init__(self, rule):
        super().__init__()
        self.rnn = PlasticRNN(BITS, HIDDEN, rule=rule)
        self.readout = nn.Linear(HIDDEN, BITS)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.readout(out[-1])


def train(rule, steps: int, seed: int) -> float:
    """Train for ``steps`` batches; return the share of erased bits answered wrong on 1,000 fresh episodes."""
    torch.manual_seed(seed)
    model = Recall(rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, target, _ = episodes(32, generator)
        loss = (model(x) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, target, erased = episodes(1000, generator)
        wrong = (model(x).sign() != target) & erased
    return wrong.sum().item() / erased.sum().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training batches of 32 episodes (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain = train(None, args.steps, args.seed)
    plastic = train("hebb", args.steps, args.seed)
    print(f"erased bits wrong after {args.steps} batches: plain RNN {100 * plain:.1f}%, "
          f"plastic RNN {100 * plastic:.1f}% (chance 50%)")


if __name__ == "__main__":
    main()
