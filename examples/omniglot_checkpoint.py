"""Load the committed Omniglot network and classify drawings of characters it never saw, after one example each.

``checkpoints/omniglot-small1.safetensors`` was trained on the five alphabets of Omniglot's ``images_background_small1.zip``.
Here it meets the characters found only in ``images_background_small2.zip``: each episode shows it one labelled
drawing of each of five characters, then a new drawing of one of them, and it must name which. What it learns from
the five labelled drawings lives only in the plastic output layer's Hebbian trace.

    python examples/omniglot_checkpoint.py /work/shared/data/omniglot     # both small zips; about 4 s

The checkpoint is read with :func:`plasticnet.train.checkpoint.read_model`, as ``plasticnet eval omniglot`` reads it.
"""

import argparse
from pathlib import Path

import torch

from plasticnet.config import from_dict
from plasticnet.data import load_omniglot
from plasticnet.tasks.omniglot import SIZE, OmniglotConfig, OneShotNetwork, class_keys, make_episodes
from plasticnet.train.checkpoint import read_model

CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "omniglot-small1.safetensors"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Omniglot folder or zip (e.g. /work/shared/data/omniglot)")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    saved = read_model(args.checkpoint)
    cfg = from_dict(OmniglotConfig, saved["config"])
    model = OneShotNetwork(cfg)
    model.load_state_dict(saved["model"])
    model.eval()

    characters = load_omniglot(args.data, SIZE)
    seen = set(saved["meta"]["train_classes"])
    unseen = [i for i, key in enumerate(class_keys(characters)) if key not in seen]
    pool = torch.from_numpy(characters.images[unseen])  # (characters, drawings, 31, 31)
    print(f"{len(unseen)} characters never seen in training, from "
          f"{', '.join(sorted({characters.alphabets[i] for i in unseen}))}")

    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        batch = make_episodes(cfg, pool, args.episodes, generator)
        guess = model(batch).argmax(-1)
    for b in range(3):
        print(f"episode {b}: five labelled drawings, then a drawing of character {batch.target[b].item()}: "
              f"the network says {guess[b].item()}")
    accuracy = (guess == batch.target).float().mean().item()
    print(f"accuracy over {args.episodes} five-way one-shot episodes: {100 * accuracy:.1f}% (chance 20%)")


if __name__ == "__main__":
    main()
