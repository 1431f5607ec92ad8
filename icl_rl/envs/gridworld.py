"""Dark gridworlds (Laskin et al. 2022): the agent sees only where it is, never the goal.

Positions are [N, 2] integer tensors (x, y); the five actions are stay, up, down, left, right;
moves into the border leave the agent in place. Tasks are finite sets (every goal cell, every
key/door pair) with a deterministic train / held-out split.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env, EnvSpec
from icl_rl.errors import IclRlError

STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = torch.tensor([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]])  # (dx, dy) per action


class GridWorld(Env):
    """Shared grid mechanics: position, clamped moves, (x, y) observations, state indices."""

    family = ""
    reward_values = (0.0, 1.0)  # every step pays 0 or 1

    def __init__(self, size: int, episode_len: int) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 2:
            raise IclRlError(f"{self.family}: size must be an integer >= 2, got {size!r}")
        if not isinstance(episode_len, int) or episode_len < 1:
            raise IclRlError(f"{self.family}: episode_len must be a positive integer, got "
                             f"{episode_len!r}")
        self.size = size
        self.episode_len = episode_len
        self.pos: Tensor | None = None

    @property
    def num_states(self) -> int:
        """Distinct (x, y) cells (tabular learners index Q-tables with obs_to_state)."""
        return self.size * self.size

    def obs_to_state(self, obs: Tensor) -> Tensor:
        """Cell index [N] of observations [N, obs_dim] (x, y first)."""
        return (obs[:, 0] * self.size + obs[:, 1]).long()

    def cells(self) -> Tensor:
        """All cells [size^2, 2], x-major."""
        r = torch.arange(self.size)
        return torch.cartesian_prod(r, r)

    def move(self, pos: Tensor, action: Tensor) -> Tensor:
        """Positions after `action` [N], clamped to the grid."""
        return (pos + MOVES.to(pos.device)[action.long()]).clamp(0, self.size - 1)

    def toward(self, pos: Tensor, target: Tensor) -> Tensor:
        """A shortest-path action [N] from pos to target in an open grid (x first, then y)."""
        dx = target[:, 0] - pos[:, 0]
        dy = target[:, 1] - pos[:, 1]
        a = torch.full_like(dx, STAY)
        a = torch.where(dy < 0, DOWN, a)
        a = torch.where(dy > 0, UP, a)
        a = torch.where(dx < 0, LEFT, a)
        return torch.where(dx > 0, RIGHT, a)

    def params(self) -> dict:
        """Constructor arguments."""
        return {"size": self.size, "episode_len": self.episode_len}


class DarkRoom(GridWorld):
    """Start at the centre; reward 1 on every step that ends on the hidden goal cell.

    `start="random"` draws every episode's start cell uniformly (from the env generator): with
    `episode_len=1` each episode is one transition from a uniformly random state, the
    Decision-Pretrained Transformer's roll-in data for gridworlds.
    """

    family = "dark_room"
    STARTS = ("center", "random")

    def __init__(self, size: int = 9, episode_len: int = 20, start: str = "center") -> None:
        super().__init__(size, episode_len)
        if start not in self.STARTS:
            raise IclRlError(f"{self.family}: start must be one of {', '.join(self.STARTS)}, "
                             f"got {start!r}")
        self.random_start = start == "random"
        self.start = torch.tensor([size // 2, size // 2])
        far = int((self.cells() - self.start).abs().sum(dim=1).max())
        if far > episode_len and not self.random_start:
            raise IclRlError(
                f"{self.family}: the farthest goal is {far} steps from the start but episodes "
                f"last {episode_len}; raise episode_len to >= {far} or shrink size"
            )
        self.spec = EnvSpec(self.family, 2, 5, episode_len, 2, 0.0, 1.0, num_tasks=size * size,
                            obs_levels=(size, size))
        # Oracle lookup [goal cell * S + agent cell] -> action: one gather per step instead of
        # the comparisons of `toward` (the rollout asks for the oracle's label at every step).
        # Built up to 64x64 grids (16.7 M entries); larger grids compute `toward` each step.
        self.oracle_table = None
        if self.num_states <= 4096:
            cells = self.cells()
            goal = cells.repeat_interleave(len(cells), dim=0)
            self.oracle_table = self.toward(cells.repeat(len(cells), 1), goal)

    @property
    def has_tractable_posterior(self) -> bool:
        """Uniform over the cells a history has not ruled out."""
        return True

    def task_set(self) -> Tensor:
        """Every goal cell [size^2, 2] (as floats, the task parameter dtype)."""
        return self.cells().float()

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Goals drawn uniformly from all cells."""
        return self.task_set()[torch.randint(0, self.num_states, (n,), generator=generator)]

    def goal(self) -> Tensor:
        """Goal cells [N, 2] of the current tasks."""
        return self.tasks.long()

    def reset_env(self) -> Tensor:
        """Back to the centre (or to a uniformly random cell: one randint [N, 2] draw)."""
        n, dev = self.tasks.shape[0], self.tasks.device
        if self.random_start:
            self.pos = rng.randint(self.generator, self.size, (n, 2), device=dev)
        else:
            self.pos = self.start.to(dev).expand(n, 2).clone()
        goal = self.goal_pos = self.goal()  # [N, 2] long, reused by every step of the episode
        self.goal_base = (goal[:, 0] * self.size + goal[:, 1]) * self.num_states  # [N]
        return self.pos.float()

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Move; reward for standing on the goal after the move."""
        self.pos = self.move(self.pos, action)
        return self.pos.float(), (self.pos == self.goal_pos).all(dim=1).float()

    def optimal_action(self) -> Tensor:
        """Walk straight to the goal, then stay."""
        if self.oracle_table is None:
            return self.toward(self.pos, self.goal())
        cell = self.pos[:, 0] * self.size + self.pos[:, 1]
        return self.oracle_table.to(self.pos.device).index_select(0, self.goal_base + cell)

    def distance(self) -> Tensor:
        """Steps [N] from the start to each goal ([N, S] from every cell with random starts)."""
        goal = self.goal()
        if self.random_start:
            return (goal[:, None] - self.cells().to(goal.device)[None]).abs().sum(dim=-1)
        return (goal - self.start.to(self.tasks.device)).abs().sum(dim=1)

    def optimal_episode_return(self) -> Tensor:
        """Every step from the arrival (the first one if the goal is the start) pays 1; with
        random starts, the mean over the start cells."""
        ret = (self.episode_len - (self.distance() - 1).clamp(min=0)).clamp(min=0).float()
        return ret.mean(dim=1) if self.random_start else ret

    def params(self) -> dict:
        """Constructor arguments."""
        return {"size": self.size, "episode_len": self.episode_len,
                "start": "random" if self.random_start else "center"}


class DarkRoomHard(DarkRoom):
    """Dark Room with a sparse reward: 1 only the first time the goal is reached per episode."""

    family = "dark_room_hard"

    def __init__(self, size: int = 17, episode_len: int = 50, start: str = "center") -> None:
        super().__init__(size, episode_len, start)

    def reset_env(self) -> Tensor:
        """Back to the centre; the goal pays again."""
        self.reached = torch.zeros(self.tasks.shape[0], dtype=torch.bool,
                                   device=self.tasks.device)
        return super().reset_env()

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Move; reward only on the first arrival."""
        obs, on_goal = super().step_env(action)
        reward = (on_goal.bool() & ~self.reached).float()
        self.reached |= on_goal.bool()
        return obs, reward

    def optimal_episode_return(self) -> Tensor:
        """One reward per episode: every goal is reachable in time from the centre (checked at
        construction); with random starts, the share of start cells it is reachable from."""
        if self.random_start:
            return (self.distance() <= self.episode_len).float().mean(dim=1)
        return torch.ones(self.tasks.shape[0], device=self.tasks.device)
