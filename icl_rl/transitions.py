"""The one token path: what position t of every model's input holds, defined once.

Position t holds o_t together with the transition that led to it: the previous action
a_{t-1}, the previous reward r_{t-1} and whether o_t opens an episode. At a history's first
step there is no previous transition: the action is -1, the reward 0 and the step opens an
episode. `align` is that rule; training windows (`window`), whole histories (`sequences`) and
acting one step at a time (`StepContext`) all go through it, so what a model is trained on and
what it sees when it acts agree by construction.

A model family turns these aligned raw transitions into its own inputs; the families that read
one feature vector per step use `token_features`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from icl_rl.errors import IclRlError

# The parts of a step's input that an ablation can hide from a model (`--hide-inputs`).
TOKEN_PARTS = ("observation", "action", "reward", "episode_start")


@dataclass
class Transitions:
    """Aligned inputs of a batch of sequences [...] (e.g. [B, T], or [N] for one step)."""

    observations: Tensor  # [..., obs_dim] float, o_t
    prev_actions: Tensor  # [...] int64, a_{t-1}; -1 where t starts the history
    prev_rewards: Tensor  # [...] float, r_{t-1}; 0 there
    episode_starts: Tensor  # [...] bool, o_t opens an episode (always at the history's start)

    def as_dict(self) -> dict[str, Tensor]:
        """The four tensors by name: the keyword arguments of every family's `forward`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device) -> Transitions:
        """The same transitions on `device`."""
        return Transitions(*(getattr(self, f.name).to(device) for f in fields(self)))


def align(observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor, prev_dones: Tensor,
          has_prev: Tensor) -> Transitions:
    """The rule: o_t with (a_{t-1}, r_{t-1}, done_{t-1}); where there is no previous step
    (`has_prev` False) the action is -1, the reward 0 and the step opens an episode."""
    return Transitions(observations,
                       prev_actions.long().masked_fill(~has_prev, -1),
                       prev_rewards.float().masked_fill(~has_prev, 0.0),
                       prev_dones.bool() | ~has_prev)


def window(observations: Tensor, actions: Tensor, rewards: Tensor, dones: Tensor,
           rows: Tensor, cols: Tensor) -> Transitions:
    """Aligned inputs at steps `cols` [B, K] of histories `rows` [B, 1] of [N, T] arrays.

    A window that starts at step s > 0 carries the transition of step s - 1 in its first
    position, as a sliding window does when the model acts.
    """
    prev = (cols - 1).clamp(min=0)
    return align(observations[rows, cols], actions[rows, prev], rewards[rows, prev],
                 dones[rows, prev], cols > 0)


def sequences(observations: Tensor, actions: Tensor, rewards: Tensor,
              dones: Tensor) -> Transitions:
    """Aligned inputs of whole histories [B, T] from their first step."""
    b, t = actions.shape
    rows = torch.arange(b, device=actions.device)[:, None]
    cols = torch.arange(t, device=actions.device).expand(b, t)
    return window(observations, actions, rewards, dones, rows, cols)


class StepContext:
    """The previous transition of N tasks while acting: one aligned input per step."""

    def reset(self, n: int, device) -> None:
        """A new history: no previous transition."""
        self.prev_actions = torch.zeros(n, dtype=torch.long, device=device)
        self.prev_rewards = torch.zeros(n, device=device)
        self.prev_dones = torch.zeros(n, dtype=torch.bool, device=device)
        self.has_prev = torch.zeros(n, dtype=torch.bool, device=device)
        self.device = device

    def inputs(self, observations: Tensor) -> Transitions:
        """Aligned inputs [N] for the current observations [N, obs_dim]."""
        return align(observations.to(self.device, torch.float32), self.prev_actions,
                     self.prev_rewards, self.prev_dones, self.has_prev)

    def observe(self, action: Tensor, reward: Tensor, done: Tensor) -> None:
        """Remember the step just taken: it goes into the next input."""
        self.prev_actions = action.to(self.device).long()
        self.prev_rewards = reward.to(self.device).float()
        self.prev_dones = done.to(self.device).bool()
        self.has_prev = torch.ones_like(self.prev_dones)


# -- one feature vector per step (AD, the recurrent family) --------------------------------------


def encode_obs(obs: Tensor, obs_levels: list[int] | None) -> Tensor:
    """Observations [..., obs_dim] -> features: one-hot where a dimension has integer levels.

    A grid coordinate as one number forces the network to learn equality of positions from a
    linear feature; one-hot cells make "same cell as where the reward was" a dot product.
    """
    if not obs_levels:
        return obs
    parts = []
    for i, level in enumerate(obs_levels):
        x = obs[..., i]
        if level:
            parts.append(F.one_hot(x.long().clamp(0, level - 1), level).to(obs.dtype))
        else:
            parts.append(x[..., None])
    return torch.cat(parts, dim=-1)


def obs_features(obs_dim: int, obs_levels: list[int] | None) -> int:
    """Width of the encoded observation."""
    if not obs_levels:
        return obs_dim
    return sum(level if level else 1 for level in obs_levels)


def token_dim(obs_dim: int, num_actions: int, obs_levels: list[int] | None) -> int:
    """Width of a step's features: obs, one-hot previous action, previous reward, two flags."""
    return obs_features(obs_dim, obs_levels) + num_actions + 3


def token_slices(obs_dim: int, num_actions: int,
                 obs_levels: list[int] | None) -> dict[str, slice]:
    """Where each of TOKEN_PARTS lies in a step's features (the has-previous flag is last)."""
    o, a = obs_features(obs_dim, obs_levels), num_actions
    bounds = (0, o, o + a, o + a + 1, o + a + 2)
    return {name: slice(bounds[i], bounds[i + 1]) for i, name in enumerate(TOKEN_PARTS)}


def check_parts(parts: list[str], flag: str = "--hide-inputs") -> list[str]:
    """`parts` if every one is a TOKEN_PART, else a one-line error naming the flag."""
    for name in parts:
        if name not in TOKEN_PARTS:
            raise IclRlError(f"{flag}: unknown part {name!r}; choose among "
                             f"{', '.join(TOKEN_PARTS)}")
    return list(parts)


def token_features(x: Transitions, num_actions: int, obs_levels: list[int] | None) -> Tensor:
    """One feature vector [..., token_dim] per step: the encoded o_t, one-hot a_{t-1} (zero
    at the history's start), r_{t-1}, the episode-start flag and a no-previous-step flag."""
    obs = x.observations.float()
    has_prev = x.prev_actions >= 0
    one_hot = F.one_hot(x.prev_actions.clamp(min=0), num_actions).to(obs.dtype)
    one_hot = one_hot * has_prev[..., None]
    return torch.cat([encode_obs(obs, obs_levels), one_hot,
                      x.prev_rewards[..., None].to(obs.dtype),
                      x.episode_starts[..., None].to(obs.dtype),
                      (~has_prev)[..., None].to(obs.dtype)], dim=-1)
