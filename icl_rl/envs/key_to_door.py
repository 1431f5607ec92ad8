"""Dark Key-to-Door (Laskin et al. 2022): find a hidden key, then a hidden door, in the dark.

The agent starts at the centre of an open grid each episode. The first visit to the key pays 1;
after that, the first visit to the door pays 1; nothing else pays. The agent sees its cell and
whether it holds the key, never where the key or the door is. A task is the (key, door) pair
[kx, ky, dx, dy]; the finite task set is every ordered pair of cells (the key may be the door).
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl.envs.base import EnvSpec
from icl_rl.envs.gridworld import STAY, GridWorld
from icl_rl.errors import IclRlError


class DarkKeyToDoor(GridWorld):
    """Start at the centre; 1 for the first visit to the key, then 1 for the door after it."""

    family = "dark_key_to_door"

    def __init__(self, size: int = 9, episode_len: int = 50) -> None:
        super().__init__(size, episode_len)
        self.start = torch.tensor([size // 2, size // 2])
        cells = self.cells()
        # The oracle's slowest task: the key as far from the start as possible, the door as far
        # from that key as possible; a target on the current cell still costs one step (stay).
        to_key = (cells - self.start).abs().sum(dim=1).clamp(min=1)
        far_door = torch.maximum(cells, size - 1 - cells).sum(dim=1)  # farthest cell per key
        need = int((to_key + far_door).max())
        if need > episode_len:
            raise IclRlError(
                f"{self.family}: goal unreachable in the episode: the slowest task needs {need} "
                f"steps to collect the key and then the door but episodes last {episode_len}; "
                f"raise episode_len to >= {need} or shrink size"
            )
        self.spec = EnvSpec(self.family, 3, 5, episode_len, 4, 0.0, 1.0,
                            num_tasks=(size * size) ** 2, obs_levels=(size, size, 2))

    @property
    def has_tractable_posterior(self) -> bool:
        """Key and door are independent and uniform over the cells not ruled out
        (`icl_rl.bayes.key_to_door_reference_probs`)."""
        return True

    @property
    def num_states(self) -> int:
        """Distinct (x, y, has_key) states: the key flag makes the tabular state Markov."""
        return 2 * self.size * self.size

    def obs_to_state(self, obs: Tensor) -> Tensor:
        """State index [N] of observations [N, 3]: the cell, offset by size^2 with the key."""
        return super().obs_to_state(obs) + obs[:, 2].long() * self.size * self.size

    def task_set(self) -> Tensor:
        """Every (key, door) pair [size^4, 4], key-major, both cells x-major (as floats)."""
        cells = self.cells()
        n = cells.shape[0]
        return torch.cat([cells.repeat_interleave(n, dim=0), cells.repeat(n, 1)], dim=1).float()

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """(key, door) pairs drawn uniformly from the task set."""
        return self.task_set()[torch.randint(0, self.spec.num_tasks, (n,), generator=generator)]

    def key(self) -> Tensor:
        """Key cells [N, 2] of the current tasks."""
        return self.tasks[:, :2].long()

    def door(self) -> Tensor:
        """Door cells [N, 2] of the current tasks."""
        return self.tasks[:, 2:].long()

    def observe(self) -> Tensor:
        """(x, y, has_key) [N, 3] as floats."""
        return torch.cat([self.pos.float(), self.has_key.float()[:, None]], dim=1)

    def reset_env(self) -> Tensor:
        """Back to the centre, empty-handed, the door shut; both rewards pay again."""
        n, device = self.tasks.shape[0], self.tasks.device
        self.pos = self.start.to(device).expand(n, 2).clone()
        self.has_key = torch.zeros(n, dtype=torch.bool, device=device)
        self.opened = torch.zeros(n, dtype=torch.bool, device=device)
        return self.observe()

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Move; pay for picking up the key, or for reaching the door with a key held before."""
        self.pos = self.move(self.pos, action)
        got_key = (self.pos == self.key()).all(dim=1) & ~self.has_key
        # The key must be held before this step, so a door on the key cell pays one step later
        # and a single step never pays 2.
        at_door = (self.pos == self.door()).all(dim=1) & self.has_key & ~self.opened
        self.has_key |= got_key
        self.opened |= at_door
        return self.observe(), (got_key | at_door).float()

    def optimal_action(self) -> Tensor:
        """Shortest path to the key, then to the door, then stay."""
        target = torch.where(self.has_key[:, None], self.door(), self.key())
        return torch.where(self.opened, STAY, self.toward(self.pos, target))

    def optimal_episode_return(self) -> Tensor:
        """Rewards [N] the oracle collects in an episode: each target costs >= 1 step (stay)."""
        to_key = (self.key() - self.start.to(self.tasks.device)).abs().sum(dim=1).clamp(min=1)
        to_door = (self.door() - self.key()).abs().sum(dim=1).clamp(min=1)
        return ((to_key <= self.episode_len).float()
                + (to_key + to_door <= self.episode_len).float())
