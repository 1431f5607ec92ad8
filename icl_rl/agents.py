"""The Agent protocol every actor follows (source learners, trained models, baselines), the
per-step extras an agent may record, and the oracle agent.

One rollout loop drives all of them (`icl_rl.rollout`). Extras are asked of `rollout` by name
and cost nothing when not asked:

- `action_probs` [N, A]: the distribution the agent drew its last action from, read after
  `act` and before `observe` (`agent.action_probs(obs)`);
- `features` [N, L, d]: a model's per-layer hidden state at its last action
  (`agent.features(obs)`); the agent is told in advance through `request_extras(names)`;
- `world_model` [N, obs_dim + 1]: what a model's world-model heads predict for the action it
  just took, the next observation then the reward (`agent.world_model(obs)`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from icl_rl.errors import IclRlError

EXTRAS = ("action_probs", "features", "world_model")


@runtime_checkable
class Agent(Protocol):
    """A batched in-context agent: sees transitions from N task instances, chooses N actions."""

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start a learning history (not an episode) for n task instances."""

    def act(self, obs: Tensor) -> Tensor:
        """Choose actions [N] (int64) for observations [N, obs_dim]."""

    def observe(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor,
                done: Tensor) -> None:
        """Learn from (or append to context) one transition of every task.

        `next_obs` is the observation the step led to, also when the step ended the episode
        (Gymnasium's final observation); the next `act` gets the next episode's first one.
        `done` marks a time limit: no env here has terminal states, so a learner that
        bootstraps values bootstraps from `next_obs` at `done` too.
        """


def check_extras(agent, names) -> list[str]:
    """`names` if every extra is known and `agent` can record it; else a one-line error."""
    names = list(names)
    for name in names:
        if name not in EXTRAS:
            raise IclRlError(f"unknown rollout extra {name!r}; choose among {', '.join(EXTRAS)}")
        if not callable(getattr(agent, name, None)):
            raise IclRlError(f"{type(agent).__name__} does not record {name}; ask it of an "
                             "agent that does (trained models; random, oracle, the bandit "
                             "learners and posterior sampling for action_probs; models "
                             "with world-model heads for world_model)")
    if names and hasattr(agent, "request_extras"):
        agent.request_extras(set(names))
    return names


class OracleAgent:
    """Acts with the env's oracle (the true task is known): the ceiling of every curve."""

    def __init__(self, env) -> None:
        self.env = env

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs: Tensor) -> Tensor:
        """The optimal action in the current state."""
        return self.env.optimal_action()

    def observe(self, *args) -> None:
        """Nothing to learn."""

    def action_probs(self, obs: Tensor) -> Tensor:
        """All mass on the optimal action: [N, A]."""
        return F.one_hot(self.env.optimal_action(), self.env.spec.num_actions).float()
