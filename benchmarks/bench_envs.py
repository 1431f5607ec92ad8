"""Environment and learner speed at 4,096 tasks, against a per-task Python loop.

`python -m benchmarks.bench_envs [--quick]` prints JSON:
- env steps/s of every registered env (random actions, env.step only);
- transitions/s of every compatible (env, learner) rollout (the generate hot path);
- the same transitions made one task at a time, for one bandit and one gridworld pair, and the
  speed-up ratios: against the tightest plain-Python loop (scalars and lists), and against
  the numpy loop the reference codebases write (numpy arrays per step; for Dark Room a numpy
  `gymnasium.Env` and a numpy Q-table per task).
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.common import emit, machine, median_time, peak_rss_mb
from icl_rl.envs import ENVS, make_env
from icl_rl.learners import LEARNERS, compatible_pairs, make_learner
from icl_rl.rollout import rollout


def env_steps_per_s(name: str, tasks: int, steps: int, repeats: int) -> float:
    """env.step throughput with pre-drawn random actions."""
    env = make_env(name)
    task = env.sample_tasks(tasks, torch.Generator().manual_seed(0))
    actions = torch.randint(0, env.spec.num_actions, (steps, tasks))

    def go():
        env.reset(task, torch.Generator().manual_seed(1))
        for t in range(steps):
            env.step(actions[t])

    return tasks * steps / median_time(go, repeats)


def learner_transitions_per_s(env_name: str, learner: str, tasks: int, steps: int,
                              repeats: int) -> float:
    """rollout throughput (as in generate: oracle labels recorded). A learner that plans for
    a horizon (bayes_optimal) plans for `steps`."""
    env = make_env(env_name)
    planned = "horizon" in {f.name for f in dataclasses.fields(LEARNERS[learner].Params)}
    agent = make_learner(learner, env, **({"horizon": steps} if planned else {}))
    task = env.sample_tasks(tasks, torch.Generator().manual_seed(0))
    return tasks * steps / median_time(lambda: rollout(env, agent, task, steps), repeats)


def reference_ucb(tasks: int, steps: int, arms: int = 5) -> float:
    """UCB1 on Bernoulli bandits one task at a time in plain Python; transitions/s."""
    rng = random.Random(0)
    t0 = time.perf_counter()
    for _ in range(tasks):
        means = [rng.random() for _ in range(arms)]
        counts, sums = [0] * arms, [0.0] * arms
        for t in range(steps):
            if 0 in counts:
                a = counts.index(0)
            else:
                scores = [sums[k] / counts[k] + math.sqrt(2 * math.log(t) / counts[k])
                          for k in range(arms)]
                a = scores.index(max(scores))
            r = float(rng.random() < means[a])
            counts[a] += 1
            sums[a] += r
    return tasks * steps / (time.perf_counter() - t0)


def reference_ucb_numpy(tasks: int, steps: int, arms: int = 5) -> float:
    """UCB1 on Bernoulli bandits one task at a time with numpy arrays per step, as the
    reference codebases' bandit data generators do; transitions/s."""
    import numpy as np

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(tasks):
        means = rng.random(arms)
        counts, sums = np.zeros(arms), np.zeros(arms)
        for t in range(steps):
            a = (t if t < arms  # each arm once first
                 else int(np.argmax(sums / counts + np.sqrt(2 * np.log(t) / counts))))
            r = float(rng.random() < means[a])
            counts[a] += 1
            sums[a] += r
    return tasks * steps / (time.perf_counter() - t0)


def reference_q_learning(tasks: int, steps: int, size: int = 9, ep_len: int = 20) -> float:
    """Tabular Q-learning on Dark Room one task at a time in plain Python; transitions/s."""
    rng = random.Random(0)
    moves = [(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)]
    t0 = time.perf_counter()
    for _ in range(tasks):
        goal = (rng.randrange(size), rng.randrange(size))
        q = [[0.0] * 5 for _ in range(size * size)]
        x = y = size // 2
        eps = 1.0
        for t in range(steps):
            s = x * size + y
            if rng.random() < eps:
                a = rng.randrange(5)
            else:
                a = max(range(5), key=lambda k, s=s: q[s][k])
            x = min(max(x + moves[a][0], 0), size - 1)
            y = min(max(y + moves[a][1], 0), size - 1)
            r = float((x, y) == goal)
            done = (t + 1) % ep_len == 0
            s2 = x * size + y
            target = r + 0.9 * max(q[s2])  # time limits are not terminal
            q[s][a] += 0.5 * (target - q[s][a])
            if done:
                x = y = size // 2
            eps = max(0.05, eps * 0.998)
    return tasks * steps / (time.perf_counter() - t0)


def reference_q_learning_gym(tasks: int, steps: int, size: int = 9, ep_len: int = 20) -> float:
    """The same Q-learning written the way the reference codebases write it: a numpy
    `gymnasium.Env` per task (instantiated directly, no wrappers) and a numpy Q-table, one
    task after another; transitions/s."""
    import gymnasium as gym
    import numpy as np

    class NumpyDarkRoom(gym.Env):
        moves = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]])

        def __init__(self, goal):
            self.goal = np.asarray(goal)
            self.observation_space = gym.spaces.Box(0, size - 1, (2,), np.float32)
            self.action_space = gym.spaces.Discrete(5)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.pos, self.t = np.array([size // 2, size // 2]), 0
            return self.pos.astype(np.float32), {}

        def step(self, action):
            self.pos = np.clip(self.pos + self.moves[action], 0, size - 1)
            self.t += 1
            reward = float(np.array_equal(self.pos, self.goal))
            return self.pos.astype(np.float32), reward, False, self.t >= ep_len, {}

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(tasks):
        env = NumpyDarkRoom(rng.integers(0, size, 2))
        q = np.zeros((size * size, 5))
        obs, _ = env.reset(seed=0)
        eps = 1.0
        for _ in range(steps):
            s = int(obs[0]) * size + int(obs[1])
            a = int(rng.integers(5)) if rng.random() < eps else int(np.argmax(q[s]))
            obs, r, term, trunc, _ = env.step(a)
            s2 = int(obs[0]) * size + int(obs[1])
            q[s, a] += 0.5 * (r + 0.9 * np.max(q[s2]) - q[s, a])
            if term or trunc:
                obs, _ = env.reset()
            eps = max(0.05, eps * 0.998)
    return tasks * steps / (time.perf_counter() - t0)


def paired_speedup(ours: Callable[[], float], loop: Callable[[], float], rounds: int) -> dict:
    """Rates (transitions/s) of `ours` and `loop` measured in turn for `rounds` rounds: the
    median of each and the median of the per-round ratios."""
    pairs = [(ours(), loop()) for _ in range(rounds)]
    return {"transitions_per_s": statistics.median(r for _, r in pairs),
            "ours_transitions_per_s": statistics.median(o for o, _ in pairs),
            "speedup": statistics.median(o / r for o, r in pairs),
            "speedup_range": [min(o / r for o, r in pairs), max(o / r for o, r in pairs)],
            "rounds": rounds}


def run(quick: bool = False) -> dict:
    """All env and learner figures."""
    tasks, steps, repeats = 4096, (100 if quick else 400), (2 if quick else 5)
    res = {"benchmark": "envs", "machine": machine(), "tasks": tasks, "env_steps_per_s": {},
           "learner_transitions_per_s": {}}
    for name in sorted(ENVS):
        res["env_steps_per_s"][name] = env_steps_per_s(name, tasks, steps, repeats)
    for env_name, learner in compatible_pairs():
        res["learner_transitions_per_s"][f"{env_name}/{learner}"] = (
            learner_transitions_per_s(env_name, learner, tasks, steps, repeats))
    # Ours and each per-task loop are timed in turn, round after round, and the speed-up is
    # the median of the per-round ratios: this machine's speed drifts by 2x within minutes,
    # so a ratio of figures measured minutes apart says more about the drift than the code.
    ref_tasks, rounds = (8, 2) if quick else (32, 5)
    ours = {"bernoulli_bandit/ucb": lambda: learner_transitions_per_s(
                "bernoulli_bandit", "ucb", tasks, steps, 1),
            "dark_room/q_learning": lambda: learner_transitions_per_s(
                "dark_room", "q_learning", tasks, steps, 1)}
    loops = {"bernoulli_bandit/ucb": ("bernoulli_bandit/ucb", reference_ucb, 500),
             "bernoulli_bandit/ucb_numpy": ("bernoulli_bandit/ucb", reference_ucb_numpy, 500),
             "dark_room/q_learning": ("dark_room/q_learning", reference_q_learning, 2000),
             # as the reference codebases run it: numpy Gymnasium env + numpy Q-table per task
             "dark_room/q_learning_numpy_gym": ("dark_room/q_learning",
                                                reference_q_learning_gym, 2000)}
    res["reference_python_loop"] = {
        name: paired_speedup(ours[pair], lambda fn=fn, n=n: fn(ref_tasks, n), rounds)
        for name, (pair, fn, n) in loops.items()}
    res["peak_rss_mb"] = peak_rss_mb()
    return res


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
