"""Plain-Python, one-task-at-a-time reference implementations of the bandit learners and of
tabular Q-learning on Dark Room.

They consume the same random stream as the vectorised learners (same generator, same draw
calls in the same order) but compute every decision with Python scalars in a loop over tasks,
so a mismatch means a bug in the tensor code, not a different random number.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch


def _argmax(values: list[float]) -> int:
    best = 0
    for k, v in enumerate(values):
        if v > values[best]:
            best = k
    return best


def reference_bandit_run(learner: str, params: dict, env_kind: str, tasks: torch.Tensor,
                         steps: int, env_seed: int, agent_seed: int, noise_std: float = 1.0):
    """Actions [N][T] and rewards [N][T] of `learner` on bandit `tasks`, one task at a time."""
    n, k = tasks.shape
    means = tasks.tolist()
    g_env = torch.Generator().manual_seed(env_seed)
    g_agent = torch.Generator().manual_seed(agent_seed)
    counts = [[0.0] * k for _ in range(n)]
    sums = [[0.0] * k for _ in range(n)]
    actions = [[0] * steps for _ in range(n)]
    rewards = [[0.0] * steps for _ in range(n)]
    for t in range(steps):
        # --- agent draws, in the order the vectorised learner documents ---
        if learner == "random":
            draws = torch.randint(0, k, (n,), generator=g_agent).tolist()
        elif learner == "epsilon_greedy":
            coins = torch.rand(n, generator=g_agent).tolist()
            arms = torch.randint(0, k, (n,), generator=g_agent).tolist()
        elif learner == "thompson" and env_kind == "gaussian":
            z = torch.randn(n, k, generator=g_agent).tolist()
        elif learner == "thompson":
            # standard_gamma over [N, K] draws element by element in row-major order:
            # all alphas first, then all betas.
            a0, b0 = params.get("prior_alpha", 1.0), params.get("prior_beta", 1.0)
            gx = [[_gamma(a0 + sums[i][j], g_agent) for j in range(k)] for i in range(n)]
            gy = [[_gamma(b0 + counts[i][j] - sums[i][j], g_agent) for j in range(k)]
                  for i in range(n)]
        for i in range(n):
            c, s = counts[i], sums[i]
            if learner == "random":
                a = draws[i]
            elif learner == "epsilon_greedy":
                eps = max(params.get("min_epsilon", 0.02),
                          params.get("epsilon", 1.0) * params.get("decay", 0.98) ** t)
                est = [s[j] / c[j] if c[j] > 0 else 0.0 for j in range(k)]
                a = arms[i] if coins[i] < eps else _argmax(est)
            elif learner == "ucb":
                untried = [j for j in range(k) if c[j] == 0]
                if untried:
                    a = untried[0]
                else:
                    cc = params.get("c", 1.0)
                    a = _argmax([s[j] / c[j] + cc * math.sqrt(2 * math.log(max(t, 1)) / c[j])
                                 for j in range(k)])
            elif learner == "thompson" and env_kind == "gaussian":
                m0, sd0 = params.get("prior_mean", 0.0), params.get("prior_std", 1.0)
                var = noise_std**2
                prec = [1 / sd0**2 + c[j] / var for j in range(k)]
                post = [(m0 / sd0**2 + s[j] / var) / prec[j] for j in range(k)]
                a = _argmax([post[j] + z[i][j] / math.sqrt(prec[j]) for j in range(k)])
            else:
                a = _argmax([gx[i][j] / (gx[i][j] + gy[i][j]) for j in range(k)])
            actions[i][t] = a
        # --- env draws: one [N] tensor per step ---
        if env_kind == "bernoulli":
            u = torch.rand(n, generator=g_env).tolist()
            r = [1.0 if u[i] < _f32(means[i][actions[i][t]]) else 0.0 for i in range(n)]
        else:
            z_env = torch.randn(n, generator=g_env).tolist()
            r = [means[i][actions[i][t]] + noise_std * z_env[i] for i in range(n)]
        for i in range(n):
            a = actions[i][t]
            rewards[i][t] = r[i]
            counts[i][a] += 1
            sums[i][a] += r[i]
    return actions, rewards


def _gamma(alpha: float, g: torch.Generator) -> float:
    return torch._standard_gamma(torch.tensor([alpha]), generator=g).item()


def _f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def reference_q_learning_dark_room(params: dict, goals: torch.Tensor, steps: int,
                                   agent_seed: int, size: int = 9, episode_len: int = 20):
    """Actions [N][T] and rewards [N][T] of Q-learning on Dark Room goals [N, 2], one task at a
    time: a dict-free Q-table per task, float32 arithmetic as the tensors do it, the documented
    draws (randint [N] below A! for the tie order, rand [N], randint [N])."""
    f32 = np.float32
    lr, gamma = f32(params.get("lr", 0.5)), f32(params.get("gamma", 0.9))
    eps0, decay = params.get("epsilon", 1.0), params.get("decay", 0.998)
    floor = params.get("min_epsilon", 0.05)
    n, num_actions = goals.shape[0], 5
    orders = list(itertools.permutations(range(num_actions)))
    moves = [(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)]
    g = torch.Generator().manual_seed(agent_seed)
    q = [[[f32(params.get("init_q", 0.0))] * num_actions for _ in range(size * size)]
         for _ in range(n)]
    start = (size // 2, size // 2)
    pos = [start] * n
    actions = [[0] * steps for _ in range(n)]
    rewards = [[0.0] * steps for _ in range(n)]
    for t in range(steps):
        order = torch.randint(0, len(orders), (n,), generator=g).tolist()
        coins = torch.rand(n, generator=g).tolist()
        arms = torch.randint(0, num_actions, (n,), generator=g).tolist()
        eps = max(floor, eps0 * decay**t)
        for i in range(n):
            s = pos[i][0] * size + pos[i][1]
            best = max(q[i][s])
            tied = [a for a in range(num_actions) if q[i][s][a] == best]
            # the tied action with the highest priority in this step's random order
            greedy = max(tied, key=lambda act: orders[order[i]][act])
            a = arms[i] if coins[i] < eps else greedy
            x = min(max(pos[i][0] + moves[a][0], 0), size - 1)
            y = min(max(pos[i][1] + moves[a][1], 0), size - 1)
            r = f32(1.0) if (x, y) == tuple(goals[i].long().tolist()) else f32(0.0)
            # bootstrap from the cell the step ended in, also at the time limit
            target = r + gamma * max(q[i][x * size + y])
            q[i][s][a] = q[i][s][a] + lr * (target - q[i][s][a])
            actions[i][t], rewards[i][t] = a, float(r)
            pos[i] = start if (t + 1) % episode_len == 0 else (x, y)
    return actions, rewards
