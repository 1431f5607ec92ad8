"""A route replayer: the non-planning control of the mazes-from-new-starts study (#17).

It searches by random moves until it stands on the goal, then remembers the route of that
first successful episode with its loops erased (in a perfect maze, a tree, that is the shortest
path from that episode's start). From then on it walks the remembered route from any cell on
it, searches by random moves from any other cell until it steps onto the route, and stays on
the goal. It plans nothing: from a start on the route it is optimal, from anywhere else it is
as good as a random walk's luck in meeting the route. Draws per step: one randint [N] (a move).
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.envs.gridworld import STAY
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner


class RouteReplay(Learner):
    """route [N, S]: the action the remembered route takes at each cell (-1: not on it)."""

    name = "route_replay"

    def __init__(self, env: Env, params=None) -> None:
        if not hasattr(env, "obs_to_state"):
            raise IclRlError(f"learner 'route_replay' needs a gridworld (cells to remember), not "
                             f"{env.spec.name!r}")
        super().__init__(env, params)
        self.env = env

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Nothing remembered."""
        super().reset(n, generator)
        self.route = torch.full((n, self.env.num_states), -1, dtype=torch.long)
        self.goal = torch.full((n,), -1, dtype=torch.long)  # goal cell once found
        self.cells: list[Tensor] = []  # this episode's cells [N] before each action
        self.actions: list[Tensor] = []

    def act(self, obs: Tensor) -> Tensor:
        """Stay on the goal; follow the route where on it; otherwise a random move."""
        cell = self.env.obs_to_state(obs)
        rows = torch.arange(cell.shape[0])
        move = rng.randint(self.generator, 4, (cell.shape[0],)) + 1  # UP..RIGHT
        on_route = self.route[rows, cell]
        action = torch.where(on_route >= 0, on_route, move)
        return torch.where(cell == self.goal, STAY, action)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Record the episode; on the first reward, remember its loop-erased route."""
        self.cells.append(self.env.obs_to_state(obs))
        self.actions.append(action.clone())
        first = (reward > 0) & (self.goal < 0)
        if bool(first.any()):
            goal_cell = self.env.obs_to_state(next_obs)
            cells = torch.stack(self.cells, dim=1)  # [N, t]
            actions = torch.stack(self.actions, dim=1)
            for i in first.nonzero()[:, 0].tolist():
                self.goal[i] = goal_cell[i]
                self.route[i] = self.loop_erased(cells[i].tolist(), actions[i].tolist(),
                                                 int(goal_cell[i]))
        if bool(done.all()):
            self.cells, self.actions = [], []

    def loop_erased(self, cells: list[int], actions: list[int], goal: int) -> Tensor:
        """route [S] from one episode's walk to the goal: every loop cut out, so each cell on
        the route keeps the move that last left it toward the goal."""
        path: list[int] = []  # cells of the loop-erased walk, in order
        leave: dict[int, int] = {}
        for c, a in zip(cells, actions, strict=True):
            if c in leave:  # back at a cell of the path: erase the loop since then
                del path[path.index(c) + 1:]
                leave = {p: leave[p] for p in path}
            else:
                path.append(c)
            leave[c] = a
        route = torch.full((self.env.num_states,), -1, dtype=torch.long)
        for c in path:
            if c != goal and leave[c] != STAY:
                route[c] = leave[c]
        return route
