"""Sequential-task source learners, batched over N tasks: tabular Q-learning and AD^eps's
noise-annealed oracle (Zisman et al. 2023)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams, decayed_epsilon


@dataclass(frozen=True)
class QLearningParams(LearnerParams):
    """Tabular Q-learning with epsilon-greedy exploration."""

    lr: float = 0.5
    """Step size alpha of the TD update."""
    gamma: float = 0.9
    """Discount factor."""
    epsilon: float = 1.0
    """Exploration probability at the first step."""
    decay: float = 0.998
    """Multiplier applied to epsilon after every step."""
    min_epsilon: float = 0.05
    """Floor for the decayed epsilon."""
    init_q: float = 0.0
    """Initial value of every Q(s, a)."""


class QLearning(Learner):
    """Q[N, S, A] tables updated with one gather/scatter per step.

    Episodes end by a time limit, never in a terminal state, and the state does not hold the
    time, so the update at an episode's last step bootstraps from the state it ended in
    (`next_obs`; see Agent.observe). Cutting the bootstrap there, as if the time limit were
    terminal, pulls Q(goal, stay) down once per episode and walks the greedy policy off the
    goal. Draws per step: randint [N] below A! (a random priority order of the actions that
    breaks ties among equal Q-values: row `k` of `priorities`; rand [N, A] instead for more
    than 6 actions), rand [N] (explore?), randint [N] (which action).
    """

    Params = QLearningParams
    name = "q_learning"

    def __init__(self, env: Env, params: QLearningParams | None = None) -> None:
        if not hasattr(env, "obs_to_state"):
            raise IclRlError(f"learner 'q_learning' needs a gridworld (tabular states), not "
                             f"{env.spec.name!r}; use ucb or thompson for bandits")
        super().__init__(env, params)
        p = self.params
        if not (0 < p.lr <= 1 and 0 <= p.gamma <= 1 and 0 < p.decay <= 1
                and 0 <= p.min_epsilon <= 1 and 0 <= p.epsilon <= 1):
            raise IclRlError(f"q_learning: need 0<lr<=1, 0<=gamma<=1, 0<decay<=1, epsilons in "
                             f"[0, 1]: {p}")
        self.env = env
        # Every order of the actions, as priorities (higher wins a tie; 0 marks "not a max").
        # One integer draw per task picks an order, so the greedy choice is uniform among the
        # tied actions at a fifth of the random numbers of one uniform per action. Beyond 6
        # actions (720 orders) the table grows factorially: one uniform per action instead.
        a = self.spec.num_actions
        self.priorities = (torch.tensor(list(itertools.permutations(range(1, a + 1))),
                                        dtype=torch.uint8) if a <= 6 else None)  # [A!, A]

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Fresh Q-tables."""
        super().reset(n, generator)
        self.q = torch.full((n, self.env.num_states, self.spec.num_actions), self.params.init_q)
        # Q as [N * S, A] rows: one index_select per lookup instead of 2-D advanced indexing.
        self.q_rows = self.q.view(-1, self.spec.num_actions)
        self.row_base = torch.arange(n) * self.env.num_states
        self.steps = 0
        self._last = (None, None)  # (obs, its Q-row index) from act, reused by observe
        self._next = (None, None)  # (next_obs, its Q-row index) from observe, reused by act

    def _rows(self, obs: Tensor, known: tuple) -> Tensor:
        """Q-row indices [N] of `obs`; reused when `obs` is the tensor `known` was made for."""
        return known[1] if known[0] is obs else self.row_base + self.env.obs_to_state(obs)

    def act(self, obs: Tensor) -> Tensor:
        """Epsilon-greedy on Q(s, .), ties broken at random."""
        p = self.params
        row = self._rows(obs, self._next)  # [N] rows of q_rows
        self._last = (obs, row)
        q = self.q_rows.index_select(0, row)  # [N, A]
        if self.priorities is not None:
            order = rng.randint(self.generator, len(self.priorities), (q.shape[0],))
            priority = self.priorities.index_select(0, order)  # [N, A]
        else:
            priority = rng.rand(self.generator, q.shape).add_(1.0)  # > 0 like the orders
        # the tied maxima keep their priority, the rest 0; max(dim).indices is about 2x
        # faster than argmax on [N, 5] on CPU
        greedy = priority.mul_(q == q.amax(dim=1, keepdim=True)).max(dim=1).indices
        return self.explore(greedy, decayed_epsilon(p.epsilon, p.decay, p.min_epsilon,
                                                    self.steps))

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """One TD(0) update per task."""
        row = self._rows(obs, self._last)
        row2 = self.row_base + self.env.obs_to_state(next_obs)
        self._next = (next_obs, row2)
        bootstrap = self.q_rows.index_select(0, row2).amax(dim=1)
        target = reward + self.params.gamma * bootstrap
        flat = row * self.spec.num_actions + action  # [N] entries of Q
        q_flat = self.q.view(-1)
        current = q_flat.index_select(0, flat)
        q_flat[flat] = current + self.params.lr * (target - current)
        self.steps += 1


@dataclass(frozen=True)
class NoiseDistillParams(LearnerParams):
    """The noise-annealed oracle of AD^eps: epsilon falls linearly over the history."""

    eps_start: float = 1.0
    """Probability of a uniformly random action at the first step."""
    eps_start_min: float | None = None
    """If set, each history starts at its own noise level, uniform in [eps_start_min,
    eps_start], and falls linearly to eps_end over decay_steps: one dataset then holds
    demonstrators of every quality at every point of a history, so the noise level is
    something a model has to infer from the context rather than read off the episode count."""
    eps_end: float = 0.0
    """Floor reached after decay_steps."""
    decay_steps: int = 1000
    """Steps over which epsilon falls linearly from eps_start to eps_end."""
    demonstrator: str = "oracle"
    """Whose actions the noise is injected into: `oracle` (knows the task, as in AD^eps) or
    the name of a learner for this env, e.g. `posterior_sampling`, which searches for the
    goal without knowing it (it still learns from every step, noisy ones included)."""


class NoiseDistill(Learner):
    """Acts like the demonstrator with probability 1 - eps_t, else uniformly at random.

    Histories improve smoothly from random to the demonstrator's level at the cost of a
    rollout. With the oracle as demonstrator the noise-free actions point at the hidden goal
    from the first step, so a model trained on such histories learns a search biased toward
    the training goals; a demonstrator that has to search itself does not leak the goal.
    Draws: at reset, the demonstrator's reset draws, then rand [N] (each history's starting
    noise) if `eps_start_min` is set; per step, the demonstrator's own draws (none for the
    oracle), then rand [N] and randint [N].
    """

    Params = NoiseDistillParams
    name = "noise_distill"

    def __init__(self, env: Env, params: NoiseDistillParams | None = None) -> None:
        super().__init__(env, params)
        p = self.params
        if not (0 <= p.eps_end <= 1 and 0 <= p.eps_start <= 1 and p.decay_steps >= 1):
            raise IclRlError(f"noise_distill: need eps in [0, 1] and decay_steps >= 1: {p}")
        if p.eps_start_min is not None and not 0 <= p.eps_start_min <= p.eps_start:
            raise IclRlError(f"noise_distill: need 0 <= eps_start_min <= eps_start "
                             f"({p.eps_start}), got eps_start_min={p.eps_start_min}")
        self.env = env
        self.demo = None
        if p.demonstrator != "oracle":
            from icl_rl.learners import make_learner

            if p.demonstrator == self.name:
                raise IclRlError("noise_distill: the demonstrator cannot be noise_distill")
            try:
                self.demo = make_learner(p.demonstrator, env)
            except IclRlError as e:
                raise IclRlError(f"noise_distill: demonstrator {p.demonstrator!r}: {e}") \
                    from None

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Back to full noise (and a demonstrator that knows nothing)."""
        super().reset(n, generator)
        if self.demo is not None:
            self.demo.reset(n, self.generator)  # one random stream for both
        p = self.params
        self.start: float | Tensor = p.eps_start
        if p.eps_start_min is not None:
            self.start = p.eps_start_min + (p.eps_start - p.eps_start_min) * rng.rand(
                self.generator, (n,))
        self.steps = 0

    def epsilon(self) -> float | Tensor:
        """Noise level at the current step: a float, or [N] with `eps_start_min`."""
        p = self.params
        frac = min(1.0, self.steps / p.decay_steps)
        return self.start + (p.eps_end - self.start) * frac

    def act(self, obs: Tensor) -> Tensor:
        """The demonstrator's action, or noise."""
        planned = self.env.optimal_action() if self.demo is None else self.demo.act(obs)
        return self.explore(planned, self.epsilon())

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """The clock advances; a learning demonstrator learns from the step."""
        if self.demo is not None:
            self.demo.observe(obs, action, reward, next_obs, done)
        self.steps += 1
