"""Pictures of a trained meta-RL agent at work: the maze animation of the papers (walls, agent and, for the viewer
only, the reward cell) and the cue-reward task's modulator over an episode (backpropamine.md §3.3, §4.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .train.a2c import load_agent, rollout

# Colours of the maze animation, as RGB.
_FREE, _WALL, _REWARD, _AGENT, _TEXT = (255, 255, 255), (60, 60, 70), (250, 190, 40), (40, 110, 220), (0, 0, 0)


def _play(agent, env, seed: int, watch=None):
    generator = torch.Generator(device=env.device).manual_seed(seed)
    with torch.no_grad():
        return rollout(agent, env, generator, watch)


def maze_gif(checkpoint: Path, out: Path, episodes: int = 1, seed: int = 0, device: str = "cpu",
             cell: int = 20) -> Path:
    """Animate ``episodes`` successive episodes of the agent in ``checkpoint`` (batch element 0), 10 frames a
    second, one frame per step. The reward cell is drawn for the viewer; the agent never sees it."""
    from PIL import Image, ImageDraw

    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}")
    task, cfg, agent = load_agent(checkpoint, device)
    if task != "maze":
        raise ConfigError(f"{checkpoint} holds a {task} agent; `plasticnet animate maze` needs a maze checkpoint")
    env = cfg.make_env(1, device, seed)
    walls = env.walls.cpu().numpy()
    frames = []
    for episode in range(episodes):
        positions = []
        played = _play(agent, env, seed + episode, lambda e: positions.append(
            (e.agent_pos[0].tolist(), e.reward_pos[0].tolist())))
        total = np.concatenate([[0.0], played.rewards[:, 0].cpu().numpy().cumsum()])
        for t, ((agent_rc, reward_rc), score) in enumerate(zip(positions, total)):
            caption = f"episode {episode + 1}  step {t:3d}  reward {score:g}"
            frames.append(_maze_frame(walls, agent_rc, reward_rc, caption, cell, Image, ImageDraw))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=100, loop=0, optimize=True)
    return out


def _maze_frame(walls, agent_rc, reward_rc, caption, cell, Image, ImageDraw):
    grid = np.where(walls[..., None], np.array(_WALL, np.uint8), np.array(_FREE, np.uint8))
    grid[tuple(reward_rc)] = _REWARD
    size = walls.shape[0] * cell
    image = Image.new("RGB", (size, size + 16), _FREE)
    image.paste(Image.fromarray(grid).resize((size, size), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(image)
    r, c = agent_rc
    draw.ellipse([c * cell + 3, r * cell + 3, (c + 1) * cell - 4, (r + 1) * cell - 4], fill=_AGENT)
    draw.text((4, size + 2), caption, fill=_TEXT)
    return image.convert("P", palette=Image.ADAPTIVE, colors=8)


def cue_reward_modulator(checkpoint: Path, out: Path, seed: int = 0, device: str = "cpu") -> Path:
    """The neuromodulator ``tanh(h2mod h)`` of the agent in ``checkpoint`` over one episode, with the cues shown
    (the target and the others), the Go signals, the agent's responses and the rewards it received."""
    from .plot import save_figure  # first: it selects the file-only backend before pyplot loads

    import matplotlib.pyplot as plt

    task, cfg, agent = load_agent(checkpoint, device)
    if task != "cue-reward":
        raise ConfigError(f"{checkpoint} holds a {task} agent, not a cue-reward one")
    if agent.cell.modulation is None:
        raise ConfigError(f"agent {cfg.agent} has no neuromodulator to plot; use a modplast or modul checkpoint")
    env = cfg.make_env(1, device, seed)
    played = _play(agent, env, seed)
    with torch.no_grad():
        modulator = agent.modulator(played.hidden)[:, 0, 0].cpu().numpy()
    T = env.episode_length
    steps = np.arange(T)
    shown = env.stimulus[0, :T].cpu().numpy()
    target = int(env.target[0])
    responses = played.actions[:, 0].cpu().numpy() == 1
    rewards = played.rewards[:, 0].cpu().numpy()

    fig, (events, mod) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    rows = {"target cue": (shown == target, 4, "tab:green"),
            "other cue": ((shown < env.go_code) & (shown != target), 3, "tab:gray"),
            "Go": (shown == env.go_code, 2, "black"),
            "response": (responses, 1, "tab:blue")}
    for label, (mask, y, colour) in rows.items():
        events.plot(steps[mask], np.full(mask.sum(), y), "|", color=colour, markersize=10, mew=2)
    for sign, colour in ((1, "tab:green"), (-1, "tab:red")):
        mask = np.sign(rewards) == sign
        events.plot(steps[mask], np.zeros(mask.sum()), "o", color=colour, markersize=5)
    events.set_yticks([4, 3, 2, 1, 0], ["target cue", "other cue", "Go", "response", "reward +/-"])
    events.set_ylim(-0.7, 4.7)
    events.set_title(f"cue-reward, agent {cfg.agent}: one episode, total reward {rewards.sum():g}")
    mod.plot(steps, modulator, color="tab:purple")
    mod.axhline(0.0, color="black", linewidth=0.5)
    for t in steps[rewards != 0]:
        mod.axvline(t + 1, color="tab:green" if rewards[t] > 0 else "tab:red", alpha=0.25, linewidth=3)
    mod.set_ylabel("modulator tanh(h2mod h)")
    mod.set_xlabel("step (shaded: the step after a reward, when the agent sees it)")
    mod.grid(alpha=0.3)
    return save_figure(fig, out)
