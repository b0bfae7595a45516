"""A plasticity rule of your own: a covariance rule, checked by hand, then trained.

A rule is one small class with ``update(trace, pre, post, rate)``; any plastic layer takes an instance as ``rule=``
and nothing else changes. This one pairs the pre-synaptic activity with the post-synaptic activity's deviation from
its mean over the layer, and decays like the ``hebb`` rule:

    trace = (1 - rate) * trace + rate * outer(pre, post - mean(post))

The script checks one step of a cell against that equation written out element by element, then trains a cell
with the rule on the one-shot recall task of ``own_model.py`` (input added straight to the units, as in the
paper's pattern task) and prints the error before and after.

    python examples/own_rule.py             # about 7 s of CPU on one thread
"""

import argparse

import torch

from plasticnet import PlasticRNNCell, Rule

BITS, PATTERNS, SHOW, GAP, PROBE = 16, 2, 3, 2, 3


class Covariance(Rule):
    name = "covariance"

    def update(self, trace, pre, post, rate):
        # rate is () (a learned eta), (B, 1) or (B, n_post) (a neuromodulator): give it the pre-synaptic axis
        rate = rate if rate.dim() == 0 else rate.unsqueeze(-2)
        centred = post - post.mean(-1, keepdim=True)
        return (1 - rate) * trace + rate * pre.unsqueeze(2) * centred.unsqueeze(1)


def check_one_step() -> float:
    """One step of a cell with the rule against the equation written out by hand; returns the largest difference."""
    torch.manual_seed(0)
    cell = PlasticRNNCell(3, 4, rule=Covariance()).double()
    state = cell.initial_state(2)
    state = state._replace(h=torch.randn(2, 4, dtype=torch.double), hebb=torch.randn(2, 4, 4, dtype=torch.double))
    x = torch.randn(2, 3, dtype=torch.double)
    h, new = cell(x, state)
    eta = cell.eta.item()
    worst = 0.0
    for b in range(2):
        mean = sum(h[b, j].item() for j in range(4)) / 4
        for i in range(4):
            for j in range(4):
                expected = (1 - eta) * state.hebb[b, i, j].item() + eta * state.h[b, i].item() * (h[b, j].item() - mean)
                worst = max(worst, abs(new.hebb[b, i, j].item() - expected))
    return worst


def episodes(batch: int, generator: torch.Generator):
    patterns = torch.randint(0, 2, (batch, PATTERNS, BITS), generator=generator).float() * 2 - 1
    target = patterns[torch.arange(batch), torch.randint(0, PATTERNS, (batch,), generator=generator)]
    erased = torch.rand(batch, BITS, generator=generator).argsort(-1) < BITS // 2
    steps = []
    for p in range(PATTERNS):
        steps += [patterns[:, p]] * SHOW + [torch.zeros(batch, BITS)] * GAP
    steps += [target.masked_fill(erased, 0.0)] * PROBE
    return torch.stack(steps), target, erased


def error(cell, batch, generator) -> float:
    x, target, erased = episodes(batch, generator)
    state = None
    for x_t in x:
        h, state = cell(x_t, state)
    return ((h.sign() != target) & erased).sum().item() / erased.sum().item(), h, target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training batches of 32 episodes (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one step against the equation by hand: largest difference {check_one_step():.1e}")

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    cell = PlasticRNNCell(None, BITS, rule=Covariance())  # input_size=None: the input is added to the drive
    optimizer = torch.optim.Adam(cell.parameters(), lr=3e-3)
    with torch.no_grad():
        before = error(cell, 1000, generator)[0]
    for _ in range(args.steps):
        _, h, target = error(cell, 32, generator)
        loss = (h - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = error(cell, 1000, generator)[0]
    print(f"erased bits wrong: {100 * before:.1f}% before training, {100 * after:.1f}% after {args.steps} batches "
          f"(chance 50%)")


if __name__ == "__main__":
    main()
