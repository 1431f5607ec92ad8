"""Dark random mazes: find a hidden goal in a perfect maze that is new in every task (planning).

Each task is a random perfect maze (a spanning tree of the grid: every cell connected, no loops)
plus a hidden goal cell. The agent sees its cell and the four walls around it, never the goal
or the rest of the maze. Each episode starts at a uniformly random cell. A task is
[goal_x, goal_y, then per cell (x-major) a wall-to-the-right bit and a wall-up bit]; border
walls are set, so a bit of 1 always means "that move leaves the agent in place".
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import EnvSpec
from icl_rl.envs.gridworld import DOWN, LEFT, MOVES, RIGHT, STAY, UP, GridWorld
from icl_rl.errors import IclRlError


class DarkMaze(GridWorld):
    """Random start cell; reward 1 on every step that ends on the hidden goal of the maze."""

    family = "dark_maze"

    def __init__(self, size: int = 7, episode_len: int = 60) -> None:
        super().__init__(size, episode_len)
        s = size * size
        # A perfect maze can be one corridor through every cell (distance s - 1 end to end),
        # so only this horizon lets the oracle reach the goal from every start in every maze.
        if episode_len < s - 1:
            raise IclRlError(
                f"{self.family}: goal unreachable in the episode: a {size}x{size} perfect maze "
                f"can put the goal {s - 1} steps from the start but episodes last {episode_len}; "
                f"raise episode_len to >= {s - 1} or shrink size"
            )
        cells = self.cells()
        # The cell each action leads to on the open grid [S, 5]; walls are applied per task.
        to = (cells[:, None, :] + MOVES[None]).clamp(0, size - 1)
        self.neighbour = to[..., 0] * size + to[..., 1]
        # The interior edges between adjacent cells: (cell, neighbour, wall bit of the edge).
        right = cells[cells[:, 0] < size - 1]
        up = cells[cells[:, 1] < size - 1]
        a = torch.cat([right[:, 0] * size + right[:, 1], up[:, 0] * size + up[:, 1]])
        self.edge_a = a
        self.edge_b = torch.cat([a[: len(right)] + size, a[len(right):] + 1])
        self.edge_bit = torch.cat([2 * a[: len(right)], 2 * a[len(right):] + 1])
        self.spec = EnvSpec(self.family, 6, 5, episode_len, 2 + 2 * s, 0.0, 1.0, num_tasks=None,
                            obs_levels=(size, size, 2, 2, 2, 2))
        self.blocked: Tensor | None = None  # [N, S, 5] per task, decoded at the start of a history

    @property
    def has_random_starts(self) -> bool:
        """Every episode starts at a new random cell of a fixed maze and goal: the
        mazes-from-new-starts metric (eval.mazes) applies."""
        return True

    @property
    def has_tractable_posterior(self) -> bool:
        """The goal's posterior is exact (uniform over the cells not ruled out); the maze's is
        not, so the reference plans through unseen walls as open
        (`icl_rl.bayes.maze_reference_probs`)."""
        return True

    def goal_distances(self, tasks: Tensor) -> Tensor:
        """Maze distance [N, S] from every cell to each task's goal (resets this env)."""
        self.reset(tasks, torch.Generator().manual_seed(0))
        return self.dist

    def task_set(self) -> Tensor:
        """Mazes are too many to list: there is no finite task set (and so no split)."""
        raise IclRlError(f"{self.family} has no finite task set (every perfect maze of "
                         f"{self.size}x{self.size} cells is a task); draw tasks with sample_tasks")

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """Random perfect mazes (randomized Kruskal's distribution) and uniformly drawn goals."""
        s, e = self.num_states, self.edge_a.shape[0]
        # Randomized Kruskal keeps the minimum spanning tree of i.i.d. random edge weights; that
        # tree is unique, so Prim finds the same one while growing all n trees at once.
        # float64 makes equal weights (an ambiguous tree) practically impossible.
        weight = torch.rand(n, e, generator=generator, dtype=torch.float64)
        rows = torch.arange(n)
        in_tree = torch.zeros(n, s, dtype=torch.bool)
        in_tree[:, 0] = True
        passage = torch.zeros(n, e, dtype=torch.bool)
        for _ in range(s - 1):  # one cell joins every tree per pass
            crossing = in_tree[:, self.edge_a] ^ in_tree[:, self.edge_b]  # [n, E]
            best = torch.where(crossing, weight, torch.inf).argmin(dim=1)  # [n]
            passage[rows, best] = True
            in_tree[rows, self.edge_a[best]] = True
            in_tree[rows, self.edge_b[best]] = True
        walls = torch.ones(n, 2 * s)  # border bits stay set: the border is a wall
        walls[:, self.edge_bit] = (~passage).float()
        goal = self.cells()[torch.randint(0, s, (n,), generator=generator)].float()
        return torch.cat([goal, walls], dim=1)

    def goal(self) -> Tensor:
        """Goal cell indices [N] of the current tasks."""
        g = self.tasks[:, :2].long()
        return g[:, 0] * self.size + g[:, 1]

    def reset(self, tasks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Start a learning history; its mazes are decoded once, by the first reset_env."""
        self.blocked = None  # the base checks the task shape before reset_env decodes
        return super().reset(tasks, generator)

    def decode(self) -> None:
        """Per task: which moves each cell blocks [N, S, 5] and the maze distance to the goal."""
        n, s, device = self.tasks.shape[0], self.num_states, self.tasks.device
        self.rows = torch.arange(n, device=device)
        self.grid = self.cells().to(device)
        self.neighbour = self.neighbour.to(device)
        bits = self.tasks[:, 2:].reshape(n, s, 2) > 0.5
        wall_right, wall_up = bits[..., 0], bits[..., 1]
        border = self.neighbour == torch.arange(s, device=device)[:, None]  # clamped [S, 5]
        # A wall is stored once, on the cell left of / below it; moving down or left reads the
        # bit of the cell moved into (at the border that cell is this one, already blocked).
        self.blocked = torch.stack([
            torch.zeros_like(wall_up),
            wall_up | border[:, UP],
            wall_up[:, self.neighbour[:, DOWN]] | border[:, DOWN],
            wall_right[:, self.neighbour[:, LEFT]] | border[:, LEFT],
            wall_right | border[:, RIGHT],
        ], dim=2)
        self.dist = self.distances(wall_right, wall_up)

    def distances(self, wall_right: Tensor, wall_up: Tensor) -> Tensor:
        """Maze distance [N, S] from every cell to the goal: min-relaxation, all tasks at once."""
        s = self.num_states
        dist = grid_distances(wall_right, wall_up, self.size, self.goal()[:, None])[:, 0]
        if bool((dist >= s).any()):
            bad = int((dist >= s).any(dim=1).nonzero()[0])
            raise IclRlError(f"{self.family}: task {bad} is not a connected maze: some cells "
                             "cannot reach its goal; use sample_tasks to draw valid mazes")
        return dist

    def cell(self) -> Tensor:
        """Cell indices [N] of the current positions."""
        return self.pos[:, 0] * self.size + self.pos[:, 1]

    def observe(self) -> Tensor:
        """(x, y, wall_up, wall_down, wall_left, wall_right) [N, 6] as floats."""
        around = self.blocked[self.rows, self.cell(), 1:]  # actions UP, DOWN, LEFT, RIGHT
        return torch.cat([self.pos.float(), around.float()], dim=1)

    def reset_env(self) -> Tensor:
        """A uniformly random start cell (it may be the goal)."""
        if self.blocked is None:
            self.decode()
        start = rng.randint(self.generator, self.num_states, (self.tasks.shape[0],),
                            device=self.tasks.device)
        self.pos = self.grid[start]
        return self.observe()

    def step_env(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Move unless a wall is in the way; reward for standing on the goal after the move."""
        cell, a = self.cell(), action.long()
        cell = torch.where(self.blocked[self.rows, cell, a], cell, self.neighbour[cell, a])
        self.pos = self.grid[cell]
        return self.observe(), (cell == self.goal()).float()

    def optimal_action(self) -> Tensor:
        """The first open move that brings the agent one step closer to the goal; stay there."""
        cell = self.cell()
        d = self.dist[self.rows, cell]  # [N]
        closer = self.dist.gather(1, self.neighbour[cell, 1:]) == d[:, None] - 1  # [N, 4]
        closer &= ~self.blocked[self.rows, cell, 1:]
        return torch.where(d == 0, STAY, closer.float().argmax(dim=1) + 1)

    def optimal_episode_return(self) -> Tensor:
        """Mean over start cells of the steps from the arrival on (the first, at the goal)."""
        return (self.episode_len - (self.dist - 1).clamp(min=0)).float().mean(dim=1)


def grid_distances(wall_right: Tensor, wall_up: Tensor, size: int, sources: Tensor) -> Tensor:
    """Shortest-path distance [G, M, S] from each of M source cells [G, M] (cell x * size + y)
    to every cell of G grids with walls: wall_right, wall_up [G, S] bool per cell, x-major (the
    edge to (x + 1, y) and to (x, y + 1); bits on the border are ignored). A cell no path
    reaches gets S. Min-relaxation through shifted slices, all grids and sources at once."""
    g, m, k = sources.shape[0], sources.shape[1], size
    s = k * k
    # Cost of crossing each interior edge [G, 1, x, y]: 1, or s (never shorter) through a wall.
    up = torch.where(wall_up.reshape(g, 1, k, k)[..., :, :-1], s, 1).int()  # (x, y) - (x, y + 1)
    right = torch.where(wall_right.reshape(g, 1, k, k)[..., :-1, :], s, 1).int()  # - (x + 1, y)
    dist = torch.full((g, m, s), s, dtype=torch.int32, device=sources.device)  # s: unreached
    dist.scatter_(2, sources.long()[..., None], 0)
    # Relaxed in place through shifted slices of the [G, M, x, y] grid (cheaper than a gather of
    # neighbours); updates made earlier in a sweep are used at once, which only speeds it up.
    d = dist.view(g, m, k, k)
    for _ in range(s - 1):  # a path through the grid has at most s - 1 steps
        before = d.clone()
        d[..., :-1] = torch.minimum(d[..., :-1], d[..., 1:] + up)  # via the cell above
        d[..., 1:] = torch.minimum(d[..., 1:], d[..., :-1] + up)  # via the cell below
        d[..., :-1, :] = torch.minimum(d[..., :-1, :], d[..., 1:, :] + right)  # via the right
        d[..., 1:, :] = torch.minimum(d[..., 1:, :], d[..., :-1, :] + right)  # via the left
        if torch.equal(before, d):  # converged (usually after about the maze's depth)
            break
    return dist.long()


def seen_walls(obs: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The walls one observation shows [M, S] x 2 (wall_right, wall_up per cell, as
    `grid_distances` takes them) from observations [M, 6] (x, y, then whether up, down, left,
    right are blocked): the four walls around the agent's cell, on the cells that store them."""
    m, s = obs.shape[0], size * size
    x, y = obs[:, 0].long(), obs[:, 1].long()
    here = x * size + y
    bits = obs[:, 2:6] > 0.5  # up, down, left, right
    right = torch.zeros(m, s, dtype=torch.bool, device=obs.device)
    up = torch.zeros_like(right)
    rows = torch.arange(m, device=obs.device)
    up[rows, here] = bits[:, 0]
    right[rows, here] = bits[:, 3]
    below, left = y > 0, x > 0  # the cell below / to the left stores the wall between
    up[rows[below], here[below] - 1] = bits[below, 1]
    right[rows[left], here[left] - size] = bits[left, 2]
    return right, up
