"""The batched grid maze against backpropamine.md §2.1/§3.1/§7 and differentiable-plasticity.md §5.1/§5.2/§9."""

import dataclasses

import pytest
import torch

from plasticnet.envs import MAZE_PRESETS, MazeConfig, MazeEnv, maze_walls
from plasticnet.errors import ConfigError

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])

DIAGRAM_9 = """
#########
#.......#
#.#.#.#.#
#.......#
#.#...#.#
#.......#
#.#.#.#.#
#.......#
#########
"""


def make_env(preset: str, batch_size: int = 1, seed: int = 0, **changes) -> MazeEnv:
    env = MazeEnv(batch_size, dataclasses.replace(MAZE_PRESETS[preset], **changes), seed=seed)
    env.reset()
    return env


def place(env: MazeEnv, agent, reward) -> None:
    env.agent_pos = torch.tensor(agent).expand(env.batch_size, 2).clone()
    env.reward_pos = torch.tensor(reward).expand(env.batch_size, 2).clone()


def step_all(env: MazeEnv, action: int):
    return env.step(torch.full((env.batch_size,), action))


def cell_set(positions: torch.Tensor) -> set:
    return {tuple(p) for p in positions.tolist()}


@pytest.mark.parametrize("size, free", [(9, 41), (11, 65), (13, 97)])
def test_free_cell_counts(size, free):
    assert int((~maze_walls(size)).sum()) == free
    assert len(make_env("paper-2019", size=size).free_cells) == free


def test_9x9_layout_matches_the_spec_diagram():
    expected = [[c == "#" for c in row] for row in DIAGRAM_9.split()]
    assert maze_walls(9).tolist() == expected


@pytest.mark.parametrize("size", [9, 11, 13])
def test_layout_rule(size):
    walls = maze_walls(size)
    for r in range(size):
        for c in range(size):
            border = r in (0, size - 1) or c in (0, size - 1)
            pillar = r % 2 == 0 and c % 2 == 0 and (r, c) != (size // 2, size // 2)
            assert walls[r, c] == (border or pillar), (r, c)


def test_presets():
    expected = {"paper-2018": (9, 250, 10.0, 0.1), "paper-2019": (13, 200, 10.0, 0.0),
                "simplemaze": (11, 200, 10.0, 0.0)}
    assert set(MAZE_PRESETS) == set(expected)
    for name, (size, length, reward, penalty) in expected.items():
        config = MAZE_PRESETS[name]
        assert (config.size, config.episode_length, config.reward, config.wall_penalty) == (
            size, length, reward, penalty)
        env = MazeEnv(2, name)
        assert (env.obs_size, env.n_actions, env.episode_length) == (17, 4, length)
    assert MAZE_PRESETS["paper-2018"].observation == "dp2018"
    assert (MAZE_PRESETS["paper-2018"].reward_cells, MAZE_PRESETS["paper-2018"].teleport) == ("free", "anywhere")
    for name in ("paper-2019", "simplemaze"):
        assert (MAZE_PRESETS[name].reward_cells, MAZE_PRESETS[name].teleport) == ("not-centre", "not-reward")
        assert MAZE_PRESETS[name].observation == "backpropamine"


def test_backpropamine_observation_index_by_index():
    env = make_env("simplemaze", wall_penalty=0.5)
    first = env.observe()[0].tolist()
    # 11x11 centre (5, 5): pillars on its four diagonals; previous action 0 is set at t=0 (§7 P12).
    assert first == [1, 0, 1, 0, 0, 0, 1, 0, 1] + [0, 1, 0, 0] + [1, 0, 0, 0]
    place(env, agent=(1, 1), reward=(9, 9))
    obs, reward, _ = step_all(env, UP)
    assert reward.tolist() == [-0.5]
    assert obs[0].tolist() == pytest.approx([1, 1, 1, 1, 0, 0, 1, 0, 1] + [0, 1, 1 / 200, -0.5] + [1, 0, 0, 0])
    obs, reward, _ = step_all(env, RIGHT)
    assert reward.tolist() == [0.0]
    assert obs[0].tolist() == pytest.approx([1, 1, 1, 0, 0, 0, 0, 1, 0] + [0, 1, 2 / 200, 0] + [0, 0, 0, 1])
    step_all(env, LEFT)
    obs, _, _ = step_all(env, DOWN)  # now at (2, 1): the border to the left, a pillar to the right
    assert obs[0].tolist() == pytest.approx([1, 0, 0, 1, 0, 1, 1, 0, 0] + [0, 1, 4 / 200, 0] + [0, 1, 0, 0])


def test_dp2018_observation_index_by_index():
    env = make_env("paper-2018")
    # 9x9 centre (4, 4): a cleared pillar with free neighbours; raw time 0, bias last, no previous action.
    assert env.observe()[0].tolist() == [0] * 16 + [1]
    place(env, agent=(1, 1), reward=(7, 7))
    obs, _, _ = step_all(env, UP)
    assert obs[0].tolist() == pytest.approx([1, 1, 1, 1, 0, 0, 1, 0, 1] + [0] * 5 + [-0.1, 1, 1])
    obs, _, _ = step_all(env, RIGHT)
    assert obs[0].tolist() == pytest.approx([1, 1, 1, 0, 0, 0, 0, 1, 0] + [0] * 5 + [0, 2, 1])


@pytest.mark.parametrize("preset, penalty", [("paper-2018", 0.1), ("paper-2019", 0.25)])
def test_every_wall_bump_costs_the_penalty_and_leaves_the_agent_in_place(preset, penalty):
    env = make_env(preset, wall_penalty=penalty)
    cells = env.free_cells.repeat_interleave(4, dim=0)
    actions = torch.arange(4).repeat(len(env.free_cells))
    env = make_env(preset, batch_size=len(cells), wall_penalty=penalty)
    far = torch.where(cells < env.config.size // 2 + 1, env.config.size - 2, 1)
    env.agent_pos, env.reward_pos = cells.clone(), far
    obs, reward, _ = env.step(actions)
    target = cells + MOVES[actions]
    bump = env.walls[target[:, 0], target[:, 1]]
    assert bump.any() and (~bump).any()
    assert torch.equal(env.agent_pos, torch.where(bump[:, None], cells, target))
    assert torch.allclose(reward, torch.where(bump, -penalty, 0.0))


@pytest.mark.parametrize("preset", list(MAZE_PRESETS))
def test_random_episodes_follow_the_step_rule(preset):
    """Whole episodes under random actions, each step checked against a plain restatement of the rule."""
    env = make_env(preset, batch_size=64, seed=3)
    config = env.config
    reward_pos = env.reward_pos.clone()
    free = env.walls.logical_not()
    hits = 0
    for t in range(config.episode_length):
        before = env.agent_pos.clone()
        action = torch.randint(0, 4, (64,))
        _, reward, done = env.step(action)
        target = before + MOVES[action]
        bump = env.walls[target[:, 0], target[:, 1]]
        moved = torch.where(bump[:, None], before, target)
        hit = (moved == reward_pos).all(dim=1)
        hits += int(hit.sum())
        assert torch.allclose(reward, hit * config.reward - bump * config.wall_penalty)
        assert torch.equal(env.agent_pos[~hit], moved[~hit])
        assert free[env.agent_pos[:, 0], env.agent_pos[:, 1]].all()
        if config.teleport == "not-reward":
            assert not (env.agent_pos[hit] == reward_pos[hit]).all(dim=1).any()
        assert torch.equal(env.reward_pos, reward_pos)
        assert done == (t == config.episode_length - 1)
    assert hits > 0


@pytest.mark.parametrize("preset, may_land_on_reward", [("paper-2018", True), ("paper-2019", False)])
def test_reward_hit_pays_and_teleports_uniformly_over_the_allowed_cells(preset, may_land_on_reward):
    env = make_env(preset, batch_size=4000, seed=1)
    reward_cell = (3, 3)
    place(env, agent=(3, 2), reward=reward_cell)
    _, reward, _ = step_all(env, RIGHT)
    assert torch.all(reward == 10.0)
    assert cell_set(env.reward_pos) == {reward_cell}
    landed = env.agent_pos.tolist()
    allowed = cell_set(env.free_cells) - (set() if may_land_on_reward else {reward_cell})
    assert set(map(tuple, landed)) == allowed
    counts = torch.tensor([landed.count(list(cell)) for cell in allowed], dtype=torch.float32)
    assert counts.min() > 0.4 * counts.mean()


def test_dp2018_edge_cases():
    env = make_env("paper-2018")
    place(env, agent=(1, 1), reward=(1, 1))
    _, reward, _ = step_all(env, UP)
    assert reward.item() == pytest.approx(9.9)
    place(env, agent=(1, 1), reward=(1, 1))
    _, reward, _ = step_all(env, RIGHT)
    assert reward.item() == 0.0
    assert env.agent_pos[0].tolist() == [1, 2]


def test_teleport_to_centre():
    env = make_env("paper-2018", batch_size=3, teleport="centre")
    place(env, agent=(1, 2), reward=(1, 1))
    step_all(env, LEFT)
    assert env.agent_pos.tolist() == [[4, 4]] * 3


@pytest.mark.parametrize("preset, cells", [
    ("paper-2018", "free"), ("paper-2019", "not-centre"), ("simplemaze", "not-centre"), ("paper-2018", "periphery")])
def test_reward_cell_placement_and_centre_start(preset, cells):
    env = make_env(preset, batch_size=5000, reward_cells=cells)
    size, centre = env.config.size, env.config.size // 2
    free = cell_set(env.free_cells)
    allowed = {
        "free": free,
        "not-centre": free - {(centre, centre)},
        "periphery": {(r, c) for r, c in free if {r, c} & {1, size - 2}},
    }[cells]
    assert cell_set(env.reward_pos) == allowed
    assert env.agent_pos.tolist() == [[centre, centre]] * 5000


def test_fixed_length_episodes():
    env = make_env("simplemaze", batch_size=2)
    for t in range(200):
        obs, _, done = step_all(env, UP)
        assert env.t == t + 1
        assert done == (t == 199)
    assert obs[:, 11].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="reset"):
        step_all(env, UP)
    env.reset()
    assert env.t == 0


def test_seed_determinism():
    def rollout(seed):
        env = MazeEnv(8, "paper-2019", seed=seed)
        obs, rewards = [env.reset()], []
        actions = torch.randint(0, 4, (50, 8), generator=torch.Generator().manual_seed(9))
        for action in actions:
            o, r, _ = env.step(action)
            obs.append(o)
            rewards.append(r)
        obs.append(env.reset())
        return torch.stack(obs), torch.stack(rewards), env.reward_pos

    first, second, other = rollout(4), rollout(4), rollout(5)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[2], other[2])
    reseeded = MazeEnv(8, "paper-2019", seed=99)
    reseeded.reset(seed=4)
    fresh = MazeEnv(8, "paper-2019", seed=4)
    fresh.reset()
    assert torch.equal(reseeded.episode_seeds, fresh.episode_seeds)


@pytest.mark.parametrize("preset", ["paper-2018", "paper-2019"])
def test_batch_equals_each_episode_alone(preset):
    seeds = torch.tensor([0, 7, 2**32 - 1, 123456789, 42, 7])
    batch = MazeEnv(len(seeds), preset)
    alone = [MazeEnv(1, preset) for _ in seeds]
    steps = 120
    actions = torch.randint(0, 4, (steps, len(seeds)), generator=torch.Generator().manual_seed(0))
    batch_obs = [batch.reset(episode_seeds=seeds)]
    alone_obs = [torch.cat([env.reset(episode_seeds=seeds[i:i + 1]) for i, env in enumerate(alone)])]
    for action in actions:
        obs, reward, _ = batch.step(action)
        results = [env.step(action[i:i + 1]) for i, env in enumerate(alone)]
        assert torch.equal(reward, torch.cat([r for _, r, _ in results]))
        assert torch.equal(batch.agent_pos, torch.cat([env.agent_pos for env in alone]))
        batch_obs.append(obs)
        alone_obs.append(torch.cat([o for o, _, _ in results]))
    assert torch.equal(torch.stack(batch_obs), torch.stack(alone_obs))
    assert torch.equal(batch.reward_pos[1], batch.reward_pos[5])  # same episode seed, same reward cell


def test_device_is_honoured():
    env = MazeEnv(3, "paper-2019", device="cpu")
    obs = env.reset()
    obs, reward, _ = env.step(torch.zeros(3, dtype=torch.int64))
    assert env.device == torch.device("cpu") and env.generator.device == torch.device("cpu")
    for tensor in (obs, reward, env.agent_pos, env.reward_pos, env.walls, env.episode_seeds):
        assert tensor.device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_the_same_episodes_as_cpu_without_host_syncs(steps_match_on_cuda):
    seeds = torch.arange(16) * 7919
    actions = torch.randint(0, 4, (200, 16), generator=torch.Generator().manual_seed(0))
    cpu, cuda = MazeEnv(16, "paper-2019"), MazeEnv(16, "paper-2019", device="cuda")
    cpu.reset(episode_seeds=seeds)
    cuda.reset(episode_seeds=seeds)
    steps_match_on_cuda(cpu, cuda, actions)


def test_step_never_reads_tensors_back_to_the_host(monkeypatch):
    env = MazeEnv(4, "paper-2019", seed=0)
    env.reset()
    action = torch.tensor([0, 1, 2, 3])

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in step()")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in range(20):
        env.step(action)


@pytest.mark.parametrize("changes, message", [
    ({"size": 10}, "odd"), ({"size": 3}, "odd"), ({"size": 9.0}, "odd"), ({"episode_length": 0}, "episode_length"),
    ({"reward_cells": "centre"}, "reward_cells"), ({"teleport": "home"}, "teleport"),
    ({"observation": "2019"}, "observation"),
])
def test_bad_configs_raise_a_one_line_config_error(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        dataclasses.replace(MAZE_PRESETS["paper-2019"], **changes)
    assert "\n" not in str(error.value)


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        MazeEnv(2, "paper-2020")
    with pytest.raises(ConfigError, match="batch_size"):
        MazeEnv(0)
    env = MazeEnv(2)
    with pytest.raises(ConfigError, match="reset"):
        env.step(torch.zeros(2, dtype=torch.int64))
    env.reset()
    with pytest.raises(ConfigError, match="LongTensor"):
        env.step(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ConfigError, match="episode_seeds"):
        env.reset(episode_seeds=[1, 2, 3])
    assert isinstance(MAZE_PRESETS["simplemaze"], MazeConfig)
