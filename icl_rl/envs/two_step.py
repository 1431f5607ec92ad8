"""The two-step task (Daw et al. 2011), batched: the probe of model-based versus model-free
choice that Wang et al. 2018 applied to meta-RL agents.

An episode (a "trial" in the task's literature) is two steps. Stage 1 (observation 0): action
0 or 1 leads to a second-stage state 1 or 2, the *common* one (action a to state a + 1) with
probability `common` (0.7) and the *rare* one otherwise. Stage 2 (observation 1 or 2): action 0
or 1 is paid 1 with probability p[state, action], else 0. The four probabilities change from
trial to trial, per task:

- `dynamics: drift` (Daw et al. 2011): each takes a Gaussian step of sd `drift_sd` (0.025) per
  trial, reflected into [`low`, `high`] = [0.25, 0.75]; a task is the starting values, drawn
  uniformly from that range;
- `dynamics: switch` (Wang et al. 2018): one second-stage state pays with probability `high_p`
  (0.9) for both actions, the other with 1 - `high_p`, and they swap with probability
  `switch_prob` (0.025) per trial; a task is which state starts good.

A model-free learner repeats a rewarded first-stage choice whatever the transition; a
model-based learner repeats it after a common transition and switches after a rare one (the
reward x transition interaction of `eval.metrics`' two-step metric). Observations are the
state index (0, 1, 2). The oracle knows the current probabilities: at stage 1 it picks the
action whose expected best second-stage payoff is higher, at stage 2 the better action.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env, EnvSpec
from icl_rl.errors import IclRlError

DYNAMICS = ("drift", "switch")


class TwoStep(Env):
    """Two-step task over N tasks; state [N] in {0, 1, 2}, probabilities p [N, 2, 2]."""

    reward_values = (0.0, 1.0)  # every step pays 0 or 1

    def __init__(self, dynamics: str = "drift", common: float = 0.7, drift_sd: float = 0.025,
                 low: float = 0.25, high: float = 0.75, high_p: float = 0.9,
                 switch_prob: float = 0.025) -> None:
        super().__init__()
        if dynamics not in DYNAMICS:
            raise IclRlError(f"two_step: dynamics must be one of {', '.join(DYNAMICS)}, got "
                             f"{dynamics!r}")
        if not (0.5 <= common <= 1 and 0 <= low < high <= 1 and drift_sd >= 0
                and 0.5 <= high_p <= 1 and 0 <= switch_prob <= 1):
            raise IclRlError("two_step: need 0.5 <= common <= 1, 0 <= low < high <= 1, "
                             "drift_sd >= 0, 0.5 <= high_p <= 1, 0 <= switch_prob <= 1")
        self.dynamics, self.common = dynamics, float(common)
        self.drift_sd, self.low, self.high = float(drift_sd), float(low), float(high)
        self.high_p, self.switch_prob = float(high_p), float(switch_prob)
        self.spec = EnvSpec(name="two_step", obs_dim=1, num_actions=2, episode_len=2,
                            task_dim=4, reward_low=0.0, reward_high=1.0, obs_levels=(3,))

    def params(self) -> dict:
        """Constructor arguments."""
        return {"dynamics": self.dynamics, "common": self.common, "drift_sd": self.drift_sd,
                "low": self.low, "high": self.high, "high_p": self.high_p,
                "switch_prob": self.switch_prob}

    @property
    def is_two_step(self) -> bool:
        """Stage-1 choices, common and rare transitions: the stay analysis applies."""
        return True

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Starting probabilities [n, 4] = p[A, 0], p[A, 1], p[B, 0], p[B, 1]."""
        if self.dynamics == "drift":
            return self.low + (self.high - self.low) * rng.rand(generator, (n, 4))
        good_a = rng.rand(generator, (n, 1)) < 0.5  # which state starts good
        p = torch.where(good_a, self.high_p, 1 - self.high_p)  # [n, 1] state A's
        return torch.cat([p, p, 1 - p, 1 - p], dim=1)

    def reset(self, tasks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A new history: the probabilities start at the task's."""
        obs = super().reset(tasks, generator)
        self.p = tasks.view(-1, 2, 2).clone()  # [N, state, action]
        return obs

    def reset_env(self) -> Tensor:
        """Every trial starts at stage 1 (observation 0)."""
        n = self.tasks.shape[0]
        self.state = torch.zeros(n, dtype=torch.long, device=self.tasks.device)
        self.common_transition = torch.ones(n, dtype=torch.bool, device=self.tasks.device)
        return self.state[:, None].float()

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Stage 1: the transition (draws rand [N]). Stage 2: the payoff (rand [N]), then the
        probabilities move (drift: randn [N, 4]; switch: rand [N])."""
        n = action.shape[0]
        if self.t == 0:
            self.common_transition = rng.rand(self.generator, (n,)) < self.common
            self.state = torch.where(self.common_transition, action, 1 - action) + 1
            return self.state[:, None].float(), torch.zeros(n)
        rows = torch.arange(n)
        reward = (rng.rand(self.generator, (n,)) < self.p[rows, self.state - 1, action]).float()
        self._move()
        return self.state[:, None].float(), reward

    def _move(self) -> None:
        """The probabilities' change after a trial."""
        if self.dynamics == "drift":
            step = self.drift_sd * rng.randn(self.generator, (self.p.shape[0], 2, 2))
            span = self.high - self.low
            # reflect into [low, high]: fold the offset onto a period of 2 * span
            x = torch.remainder(self.p + step - self.low, 2 * span)
            self.p = self.low + torch.where(x > span, 2 * span - x, x)
        else:
            swap = rng.rand(self.generator, (self.p.shape[0],)) < self.switch_prob
            self.p = torch.where(swap[:, None, None], self.p.flip(1), self.p)

    def stage_values(self) -> Tensor:
        """Value of each first-stage action [N, 2] for the oracle: the expected best payoff."""
        best = self.p.amax(dim=2)  # [N, state]
        return self.common * best + (1 - self.common) * best.flip(1)

    def optimal_action(self) -> Tensor:
        """Stage 1: the action with the higher expected payoff; stage 2: the better action."""
        if self.t == 0:
            return self.stage_values().max(dim=1).indices
        rows = torch.arange(self.p.shape[0])
        return self.p[rows, self.state - 1].max(dim=1).indices

    def optimal_episode_return(self) -> Tensor:
        """The oracle's expected payoff per trial under the current probabilities."""
        return self.stage_values().amax(dim=1)
