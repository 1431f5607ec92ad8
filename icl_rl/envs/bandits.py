"""Multi-armed bandits: one pull per episode, so a history of T steps is T episodes."""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env, EnvSpec
from icl_rl.errors import IclRlError


class Bandit(Env):
    """Shared bandit logic: the task is the vector of arm means [N, K]; obs is a constant."""

    family = ""

    def __init__(self, num_arms: int = 5) -> None:
        super().__init__()
        if not isinstance(num_arms, int) or num_arms < 2:
            raise IclRlError(f"{self.family}: num_arms must be an integer >= 2, got {num_arms!r}")
        self.num_arms = num_arms
        self._best = (None, None)  # (tasks, their best arms): the oracle is asked every step
        # (action, its mean reward): the rollout asks for it to record regret, then the step
        # that pulls the same action tensor uses it and forgets it
        self._mean = (None, None)

    @property
    def has_tractable_posterior(self) -> bool:
        """Beta or Normal posteriors per arm."""
        return True

    def reset_env(self) -> Tensor:
        """Bandits have no state: every episode starts from the same constant observation."""
        self._mean = (None, None)
        return self.tasks.new_zeros(self.tasks.shape[0], 1)

    def expected_reward(self, action: Tensor) -> Tensor:
        """Mean reward [N] of pulling `action` [N] in each task (for regret)."""
        if self._mean[0] is not action:
            self._mean = (action, self.tasks.gather(1, action.long()[:, None])[:, 0])
        return self._mean[1]

    def pull_mean(self, action: Tensor) -> Tensor:
        """expected_reward(action) for the step that pulls it (computed at most once)."""
        mean = self.expected_reward(action)
        self._mean = (None, None)
        return mean

    def optimal_action(self) -> Tensor:
        """The best arm [N] (the lowest of tied ones)."""
        if self._best[0] is not self.tasks:
            self._best = (self.tasks, self.tasks.argmax(dim=1))
        return self._best[1]

    def optimal_episode_return(self) -> Tensor:
        """The best arm's mean [N]: the oracle's expected reward per pull."""
        return self.tasks.max(dim=1).values

    def params(self) -> dict:
        """Constructor arguments."""
        return {"num_arms": self.num_arms}


class BernoulliBandit(Bandit):
    """K arms with means ~ U(0, 1); a pull pays 1 with the arm's mean probability, else 0."""

    reward_values = (0.0, 1.0)  # every step pays 0 or 1
    family = "bernoulli_bandit"

    def __init__(self, num_arms: int = 5) -> None:
        super().__init__(num_arms)
        self.spec = EnvSpec(self.family, 1, num_arms, 1, num_arms, 0.0, 1.0)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Arm means [n, K] ~ U(0, 1)."""
        return torch.rand(n, self.num_arms, generator=generator)

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Pull: one uniform draw [N] per step decides every task's Bernoulli outcome."""
        u = rng.rand(self.generator, (self.tasks.shape[0],), device=self.tasks.device)
        reward = (u < self.pull_mean(action)).float()
        return self.reset_env(), reward


class GaussianBandit(Bandit):
    """K arms with means ~ N(0, 1) (or U(0, 1): `means="uniform"`, the setting of the
    Decision-Pretrained Transformer paper); a pull pays mean + N(0, noise_std^2)."""

    family = "gaussian_bandit"
    reward_values = None  # continuous rewards
    MEANS = ("normal", "uniform")

    def __init__(self, num_arms: int = 5, noise_std: float = 1.0, means: str = "normal") -> None:
        super().__init__(num_arms)
        if not noise_std > 0:
            raise IclRlError(f"gaussian_bandit: noise_std must be > 0, got {noise_std!r}")
        if means not in self.MEANS:
            raise IclRlError(f"gaussian_bandit: means must be one of {', '.join(self.MEANS)}, "
                             f"got {means!r}")
        self.noise_std = float(noise_std)
        self.means = means
        self.spec = EnvSpec(self.family, 1, num_arms, 1, num_arms)

    @property
    def prior(self) -> tuple[float, float]:
        """Mean and standard deviation of an arm's mean under the task distribution (the
        Gaussian prior a Thompson sampler matched to the family uses)."""
        return (0.0, 1.0) if self.means == "normal" else (0.5, 12 ** -0.5)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Arm means [n, K] ~ N(0, 1) or U(0, 1)."""
        if self.means == "uniform":
            return torch.rand(n, self.num_arms, generator=generator)
        return torch.randn(n, self.num_arms, generator=generator)

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Pull: one standard normal draw [N] per step."""
        z = rng.randn(self.generator, (self.tasks.shape[0],), device=self.tasks.device)
        return self.reset_env(), self.pull_mean(action) + self.noise_std * z

    def params(self) -> dict:
        """Constructor arguments."""
        return {"num_arms": self.num_arms, "noise_std": self.noise_std, "means": self.means}
