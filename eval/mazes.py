"""Mazes from new starts: after a maze's goal is first found, how direct is the way back to it
from each new start? Path optimality of an episode = maze distance from its start to the goal
/ steps taken to first stand on the goal (0 if the episode never gets there); episodes that
start on the goal are left out. Split by whether the start cell had been visited at any
earlier step of the history (seen) or never (unseen): replaying a remembered route can only
help from cells the agent has been in; going straight to the goal from a never-visited cell
takes a map of the maze, i.e. something like planning.

The oracle scores 1 from every start; `route_replay` (icl_rl.learners.route) is the
non-planning control.
"""

from __future__ import annotations

import numpy as np


def path_optimality(cells: np.ndarray, rewards: np.ndarray, dist: np.ndarray,
                    episode_len: int) -> dict:
    """cells [N, T] (the cell at each step, before its action), rewards [N, T], dist [N, S]
    (maze distance of every cell to the goal): optimality after discovery, seen and unseen
    starts, each a mean over tasks of the task's mean, with 95% CIs."""
    from eval.metrics import task_mean_ci

    n, t = cells.shape
    e = t // episode_len
    cells, rewards = cells[:, :e * episode_len], rewards[:, :e * episode_len]
    reached = (rewards > 0).reshape(n, e, episode_len)
    got = reached.any(axis=2)  # [N, E]
    steps = reached.argmax(axis=2) + 1  # first rewarded step of the episode, 1-based
    starts = cells[:, ::episode_len]  # [N, E]
    d = np.take_along_axis(dist, starts, axis=1)  # [N, E]
    opt = np.where(got, d / np.maximum(steps, 1), 0.0)
    found = np.where(got.any(axis=1), got.argmax(axis=1), e)  # first episode that got there
    # first step at which each cell was visited [N, S] (T + 1: never)
    first_visit = np.full(dist.shape, t + 1)
    for step in range(t - 1, -1, -1):  # backwards: the earliest visit is written last
        first_visit[np.arange(n), cells[:, step]] = step
    episode_start = np.arange(e) * episode_len
    seen = np.take_along_axis(first_visit, starts, axis=1) < episode_start[None]
    after = (np.arange(e)[None] > found[:, None]) & (d > 0)
    out = {"tasks_goal_found": float((found < e).mean())}
    for name, mask in (("seen", after & seen), ("unseen", after & ~seen)):
        per_task = [float(opt[i, mask[i]].mean()) for i in range(n) if mask[i].any()]
        out[f"path_optimality_{name}"], out[f"path_optimality_{name}_ci95"] = \
            task_mean_ci(per_task)
        out[f"episodes_{name}"] = int(mask.sum())
    return out
