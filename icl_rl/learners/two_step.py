"""Reference learners of the two-step task (Daw et al. 2011), batched over N tasks: model-free
TD(lambda) and model-based (knows the transition structure, learns the second-stage payoffs).

Both learn the second-stage values the same way (a delta rule on the payoff) and choose by a
softmax of inverse temperature `beta` at both stages; they differ only in the first-stage
values. The model-free learner caches them by TD(lambda), so a payoff credits the first-stage
action that preceded it whatever transition led there; the model-based one computes them from
the known transition probabilities, so a payoff after a rare transition credits the *other*
first-stage action. Values start at 0.5. Draws per step: one categorical [N].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams


@dataclass(frozen=True)
class TwoStepModelFreeParams(LearnerParams):
    """SARSA(lambda) over the two stages with softmax choice."""

    lr: float = 0.5
    """Step size alpha of both stages' updates."""
    lam: float = 1.0
    """Eligibility lambda: the share of the second-stage prediction error that also updates
    the first-stage value (1: the payoff itself credits the first choice)."""
    beta: float = 5.0
    """Softmax inverse temperature."""


@dataclass(frozen=True)
class TwoStepModelBasedParams(LearnerParams):
    """Second-stage values by a delta rule; first-stage values planned through the known
    transition probabilities."""

    lr: float = 0.5
    """Step size alpha of the second-stage update."""
    beta: float = 5.0
    """Softmax inverse temperature."""


class _TwoStepLearner(Learner):
    """Shared state: Q1 [N, 2] (used by the model-free learner), Q2 [N, 2 states, 2]."""

    def __init__(self, env: Env, params: LearnerParams | None = None) -> None:
        if not getattr(env, "is_two_step", False):
            raise IclRlError(f"learner {self.name!r} needs the two_step env, not "
                             f"{env.spec.name!r}")
        super().__init__(env, params)
        p = self.params
        if not (0 < p.lr <= 1 and p.beta >= 0 and 0 <= getattr(p, "lam", 0) <= 1):
            raise IclRlError(f"{self.name}: need 0 < lr <= 1, beta >= 0, 0 <= lam <= 1: {p}")
        self.common = env.common

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Values at 0.5 (an even payoff)."""
        super().reset(n, generator)
        self.q1 = torch.full((n, 2), 0.5)
        self.q2 = torch.full((n, 2, 2), 0.5)
        self.first = torch.zeros(n, dtype=torch.long)  # this trial's first-stage action

    def stage1_values(self) -> Tensor:
        """First-stage action values [N, 2]."""
        raise NotImplementedError

    def action_probs(self, obs: Tensor) -> Tensor:
        """softmax(beta * Q) of the stage the observation names: [N, 2]."""
        state = obs[:, 0].long()
        rows = torch.arange(state.shape[0])
        q = torch.where((state == 0)[:, None], self.stage1_values(),
                        self.q2[rows, (state - 1).clamp(min=0)])
        return torch.softmax(self.params.beta * q, dim=1)

    def act(self, obs: Tensor) -> Tensor:
        """A softmax draw."""
        return rng.categorical(self.generator, self.action_probs(obs))

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Stage 1: remember the choice. Stage 2: learn from the payoff."""
        state = obs[:, 0].long()
        if bool((state == 0).all()):  # every task is at the same stage (lockstep)
            self.first = action.clone()
            return
        rows = torch.arange(state.shape[0])
        q2 = self.q2[rows, state - 1, action]
        self.learn_first(rows, q2, reward - q2)
        self.q2[rows, state - 1, action] = q2 + self.params.lr * (reward - q2)

    def learn_first(self, rows: Tensor, q2: Tensor, delta2: Tensor) -> None:
        """Update first-stage values after a trial (model-free only)."""


class TwoStepModelFree(_TwoStepLearner):
    """Model-free TD(lambda): Q1[a1] += lr * (Q2[s, a2] - Q1[a1]) + lr * lam * delta2."""

    Params = TwoStepModelFreeParams
    name = "two_step_mf"

    def stage1_values(self) -> Tensor:
        """The cached first-stage values."""
        return self.q1

    def learn_first(self, rows: Tensor, q2: Tensor, delta2: Tensor) -> None:
        """SARSA step toward the second-stage value, then the eligibility-weighted payoff
        error (Daw et al. 2011's model-free update)."""
        p = self.params
        q1 = self.q1[rows, self.first]
        self.q1[rows, self.first] = q1 + p.lr * (q2 - q1) + p.lr * p.lam * delta2


class TwoStepModelBased(_TwoStepLearner):
    """Model-based: Q1(a) = common * max Q2(state a) + (1 - common) * max Q2(other state)."""

    Params = TwoStepModelBasedParams
    name = "two_step_mb"

    def stage1_values(self) -> Tensor:
        """Planned through the known transition probabilities."""
        best = self.q2.amax(dim=2)  # [N, state]
        return self.common * best + (1 - self.common) * best.flip(1)
