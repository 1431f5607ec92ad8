"""Mazes from new starts: path optimality is exactly 1 for the oracle from every start, the
route replayer's remembered route is a shortest path and it falls short from unseen starts, and
the metric on a hand-computed history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.mazes import path_optimality
from eval.metrics import Context, maze_paths
from icl_rl.agents import OracleAgent
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.rollout import rollout


def maze_run(agent_name: str, n: int = 64, episodes: int = 20):
    env = make_env("dark_maze")
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(0))
    agent = OracleAgent(env) if agent_name == "oracle" else make_learner(agent_name, env)
    h = rollout(env, agent, tasks, env.spec.episode_len * episodes,
                env_generator=torch.Generator().manual_seed(1),
                agent_generator=torch.Generator().manual_seed(2))
    return env, agent, h, maze_paths(h, Context(env, np.ones(n), 2, episodes))


def test_oracle_path_optimality_is_exactly_one_from_every_start():
    _, _, _, r = maze_run("oracle")
    assert r["tasks_goal_found"] == 1.0
    assert r["path_optimality_seen"] == 1.0 and r["path_optimality_unseen"] == 1.0
    assert r["episodes_seen"] > 100 and r["episodes_unseen"] > 100


def test_route_replayer_remembers_a_shortest_path_and_misses_from_unseen_starts():
    env, agent, h, r = maze_run("route_replay")
    dist = env.goal_distances(h.tasks)
    checked = 0
    for i in range(h.tasks.shape[0]):
        for c in (agent.route[i] >= 0).nonzero()[:, 0].tolist():
            a = int(agent.route[i, c])
            assert not env.blocked[i, c, a]
            nxt = int(env.neighbour[c, a])
            assert dist[i, nxt] == dist[i, c] - 1  # every route step closes in on the goal
            checked += 1
    assert checked > 100
    assert r["path_optimality_unseen"] < 0.5  # no map: clearly below the oracle's 1


def test_metric_on_a_hand_computed_history():
    # one task, 3 cells in a row (goal = cell 2), episodes of 4 steps
    dist = np.array([[2, 1, 0]])
    cells = np.array([[0, 1, 0, 1,   # episode 0: never reaches the goal
                       0, 1, 2, 2,   # episode 1: start 0, goal after 2 steps (discovery)
                       1, 2, 2, 2,   # episode 2: start 1 (seen), 1 step: optimality 1
                       0, 0, 1, 2]])  # episode 3: start 0 (seen), 3 steps: 2/3
    rewards = np.zeros_like(cells, dtype=float)
    nxt = np.roll(cells, -1, axis=1)  # reward when the step ends on the goal
    rewards[nxt == 2] = 1.0
    rewards[0, -1] = 1.0
    r = path_optimality(cells, rewards, dist, 4)
    assert r["path_optimality_seen"] == pytest.approx((1 + 2 / 3) / 2)
    assert r["path_optimality_unseen"] is None and r["episodes_unseen"] == 0
    assert r["episodes_seen"] == 2


def test_route_replay_needs_a_gridworld():
    with pytest.raises(IclRlError, match="needs a gridworld"):
        make_learner("route_replay", make_env("bernoulli_bandit"))
