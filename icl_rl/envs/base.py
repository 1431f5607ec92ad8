"""Batched task distributions: the base class every environment family builds on.

An environment steps N task instances at once with tensor operations. The task is an explicit
parameter tensor [N, task_dim]; resetting an episode never resamples it, so a learning history
is many episodes of the same task. All N instances run in lockstep (a fixed episode horizon and a
common start), so the episode clock is one Python int and `done` is the same for every task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl.errors import IclRlError


@dataclass(frozen=True)
class EnvSpec:
    """What a model needs to know to act in a family."""

    name: str
    obs_dim: int
    num_actions: int
    episode_len: int
    task_dim: int
    reward_low: float = float("-inf")
    reward_high: float = float("inf")
    num_tasks: int | None = None  # size of a finite task set; None for continuous families
    obs_levels: tuple[int, ...] | None = None  # per obs dim: integer levels (0: continuous)


class Env:
    """One task family, batched over N task instances; subclasses write the task logic only.

    Subclasses implement `sample_tasks`, `reset_env` (first observation of an episode),
    `step_env` (one transition) and the oracle (`optimal_action`, `optimal_episode_return`).
    The shared episode clock and auto-reset live here, once.
    """

    spec: EnvSpec
    # The values a reward can take where they are few (e.g. (0.0, 1.0)), else None: lookahead
    # feeds the model imagined rewards it could have seen (icl_rl.models.world_model)
    reward_values: tuple[float, ...] | None = None

    def __init__(self) -> None:
        self.tasks: Tensor | None = None
        self.generator: torch.Generator | None = None
        self.t = 0  # step within the current episode, common to all tasks

    # -- task distribution ----------------------------------------------------------------------
    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw n task parameter vectors [n, task_dim] from the family's distribution."""
        raise NotImplementedError

    def task_set(self) -> Tensor:
        """All tasks of a finite family [num_tasks, task_dim]; continuous families raise."""
        raise IclRlError(f"{self.spec.name} has a continuous task distribution, not a finite set")

    def split(self, seed: int, heldout: float) -> tuple[Tensor, Tensor]:
        """Deterministic train / held-out partition of a finite task set: (train_ids, test_ids)."""
        n = self.task_set().shape[0]
        if not 0.0 <= heldout < 1.0:
            raise IclRlError(f"heldout fraction must be in [0, 1), got {heldout}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        n_test = int(round(n * heldout))
        return perm[n_test:].sort().values, perm[:n_test].sort().values

    # -- stepping -------------------------------------------------------------------------------
    def reset(self, tasks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Start a learning history on `tasks` [N, task_dim]; returns the first obs [N, obs_dim]."""
        if tasks.ndim != 2 or tasks.shape[1] != self.spec.task_dim:
            raise IclRlError(
                f"{self.spec.name}: tasks must have shape [N, {self.spec.task_dim}], "
                f"got {tuple(tasks.shape)}"
            )
        self.tasks = tasks
        self.generator = generator if generator is not None else torch.Generator(tasks.device)
        self.t = 0
        return self.reset_env()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Advance every task one step: (next obs [N, obs_dim], reward [N], done [N]).

        When an episode ends, the returned obs is already the first obs of the next episode
        of the same task (auto-reset), and `done` marks the step that ended it.
        """
        obs, reward = self.step_env(action)
        self.t += 1
        done = self.t >= self.spec.episode_len
        self.final_obs = obs  # the episode's last observation, before any auto-reset
        if done:
            self.t = 0
            obs = self.reset_env()
        return obs, reward, torch.full_like(reward, done, dtype=torch.bool)

    # -- capabilities: what metrics and baselines may assume of a family ------------------------
    @property
    def has_expected_rewards(self) -> bool:
        """The env knows E[r | a] for the current state (bandits): regret is exact."""
        return hasattr(self, "expected_reward")

    @property
    def has_tractable_posterior(self) -> bool:
        """The task posterior given a history is exact and cheap (bandits, Dark Room): the
        divergence from posterior sampling can be measured."""
        return False

    @property
    def is_episodic(self) -> bool:
        """Episodes last more than one step (gridworlds); a bandit episode is one pull."""
        return self.spec.episode_len > 1

    @property
    def has_finite_tasks(self) -> bool:
        """The task set is finite (Dark Room goals) and has a train / held-out split."""
        return self.spec.num_tasks is not None

    @property
    def num_envs(self) -> int:
        """Number of task instances being stepped."""
        return 0 if self.tasks is None else self.tasks.shape[0]

    def reset_env(self) -> Tensor:
        """Start a new episode of the current tasks; returns obs [N, obs_dim]."""
        raise NotImplementedError

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """One transition of the current episode: (obs [N, obs_dim], reward [N])."""
        raise NotImplementedError

    # -- oracle ---------------------------------------------------------------------------------
    def optimal_action(self) -> Tensor:
        """The oracle's action [N] in the current state, given the true task."""
        raise NotImplementedError

    def optimal_episode_return(self) -> Tensor:
        """Expected return [N] of the oracle over one episode of each current task."""
        raise NotImplementedError

    def params(self) -> dict:
        """The constructor arguments, for dataset cards and model configs."""
        raise NotImplementedError
