"""The learner base class (the Agent protocol itself lives in `icl_rl.agents`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env


@dataclass(frozen=True)
class LearnerParams:
    """Base of every learner's hyperparameter dataclass."""


class Learner:
    """Base of the source learners: holds the env spec, the params and the random stream.

    Every random draw comes from `self.generator`, set by `reset`, so a rollout is a function
    of its seeds. Each learner documents the draws it makes per step (the reference
    implementations in the tests replay them).
    """

    Params: type[LearnerParams] = LearnerParams
    name = ""

    def __init__(self, env: Env, params: LearnerParams | None = None) -> None:
        self.spec = env.spec
        self.params = params if params is not None else self.Params()
        self.generator: torch.Generator | None = None
        self.n = 0

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start a learning history for n tasks."""
        self.n = n
        self.generator = generator if generator is not None else torch.Generator()

    def explore(self, greedy: Tensor, epsilon: float | Tensor) -> Tensor:
        """`greedy` [N], replaced by a uniform action with probability epsilon (a float, or [N]).

        Draws: rand [N] (explore?) then randint [N] (which action).
        """
        n = greedy.shape[0]
        coin = rng.rand(self.generator, (n,)) < epsilon
        random_action = rng.randint(self.generator, self.spec.num_actions, (n,))
        return torch.where(coin, random_action, greedy.to(random_action.device))

    def params_dict(self) -> dict:
        """Hyperparameters as a plain dict (for dataset cards)."""
        return asdict(self.params)


def first_argmax(values: Tensor) -> Tensor:
    """Index [N] of the largest of each row of `values` [N, K], the lowest one among ties.

    `max(dim).indices` (documented to return the first maximal value) is about 2x faster than
    `argmax` on narrow rows on CPU; the learners call it every step.
    """
    return values.max(dim=1).indices


def decayed_epsilon(epsilon: float, decay: float, floor: float, steps: int) -> float:
    """epsilon * decay^steps, never below `floor`."""
    return max(floor, epsilon * decay**steps)


class RandomAgent(Learner):
    """Uniformly random actions. Draws per step: one randint [N]."""

    name = "random"

    def act(self, obs: Tensor) -> Tensor:
        """Uniform over the action space."""
        return rng.randint(self.generator, self.spec.num_actions, (obs.shape[0],),
                           device=obs.device)

    def action_probs(self, obs: Tensor) -> Tensor:
        """Uniform: [N, A]."""
        a = self.spec.num_actions
        return torch.full((obs.shape[0], a), 1.0 / a, device=obs.device)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Nothing to learn."""
