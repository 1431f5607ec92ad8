"""Posterior sampling over hidden cells of the dark gridworlds: near Bayes-optimal explorers.

The prior is uniform over every cell (the env's own task distribution, not a training split).
A step that could have paid and did not rules out the cell it ended on; a paying step reveals
it. The agent walks to a cell sampled from what is still possible and resamples when that cell
is ruled out. Before it finds what it looks for, its behaviour does not depend on the task, so
a model that imitates it learns exploration that transfers to tasks it never saw (a noisy
oracle, by contrast, leaks the goal into its early actions).

- Dark Room and Dark Room Hard: one hidden goal (`GoalPosteriorSampling`);
- Dark Key-to-Door: a hidden key, then a hidden door, each with its own posterior
  (`KeyDoorPosteriorSampling`);
- dark mazes: a hidden goal, reached through the walls seen so far with unseen walls taken as
  open (`MazePosteriorSampling`: the goal posterior is exact, the maze is planned
  optimistically, not sampled).

`make_learner("posterior_sampling", env)` picks the one for the env. Their action
distributions are the references of the `policy_divergence` metric (`icl_rl.bayes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.envs.gridworld import STAY, DarkRoom
from icl_rl.envs.key_to_door import DarkKeyToDoor
from icl_rl.envs.maze import DarkMaze, seen_walls
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams


@dataclass(frozen=True)
class PosteriorSamplingParams(LearnerParams):
    """Posterior sampling over the hidden cells of a dark gridworld."""

    epsilon: float = 0.0
    """Probability of a uniformly random action instead of the planned one."""
    per_step: bool = False
    """Draw a new cell at every step instead of keeping the drawn one until it is ruled out:
    then every action is drawn from the posterior predictive of the oracle's move, the
    `policy_divergence` reference (and the policy a model that matches that reference
    step by step acts with)."""
    context_episodes: int = 0
    """Dark Room / Hard, with per_step: believe only the last this many finished episodes,
    the belief fixed during an episode: the Decision-Pretrained Transformer's online
    deployment rule with an exact posterior (its context holds the past episodes that fit in
    its window). 0: the whole history, updated every step."""


class HiddenCellBelief:
    """The posterior over one hidden cell of N tasks and the cell sampled from it.

    possible [N, S]: cells it may still be in (uniform over them); known [N]: revealed;
    target [N]: the sampled cell (-1 before the first draw).
    """

    def __init__(self, n: int, num_cells: int) -> None:
        self.possible = torch.ones(n, num_cells, dtype=torch.bool)
        self.known = torch.zeros(n, dtype=torch.bool)
        self.target = torch.full((n,), -1, dtype=torch.long)
        self.rows = torch.arange(n)

    def retarget(self, u: Tensor, active: Tensor | bool = True, always: bool = False) -> Tensor:
        """Draw a new target where the current one is missing or ruled out (`always`: in every
        row), only in `active` rows, uniform among the possible cells by the uniforms u [N, S];
        the rows redrawn [N]."""
        candidate = torch.where(self.possible, u, -1.0).argmax(dim=1)
        stale = (self.target < 0) | ~self.possible[self.rows, self.target.clamp(min=0)]
        stale = (stale | always) & active
        self.target = torch.where(stale, candidate, self.target)
        return stale

    def observe(self, landed: Tensor, found: Tensor, informative: Tensor | bool = True) -> None:
        """A step ended on cell `landed` [N], paid (`found` [N]) or not; only `informative`
        rows (where the hidden cell would have paid) count. A known cell is never ruled out
        again (Dark Room Hard pays once per episode)."""
        hit = found & ~self.known & informative
        self.possible[self.rows, landed] &= found | self.known | ~torch.as_tensor(informative)
        revealed = torch.zeros_like(self.possible)
        revealed[self.rows, landed] = True
        self.possible = torch.where(hit[:, None], revealed, self.possible)
        self.known |= hit


class PosteriorSampling(Learner):
    """`posterior_sampling`: builds the sampler for the env's hidden structure (Dark Room and
    Dark Room Hard, Dark Key-to-Door, dark mazes)."""

    Params = PosteriorSamplingParams
    name = "posterior_sampling"
    env_type: type = Env
    context_episodes_supported = False

    def __new__(cls, env: Env, params: PosteriorSamplingParams | None = None):
        if cls is PosteriorSampling:
            for impl in (GoalPosteriorSampling, KeyDoorPosteriorSampling, MazePosteriorSampling):
                if isinstance(env, impl.env_type):
                    return super().__new__(impl)
            raise IclRlError(f"learner 'posterior_sampling' is for dark_room, dark_room_hard, "
                             f"dark_key_to_door and dark_maze (hidden cells), not "
                             f"{env.spec.name!r}; on bandits use `thompson`")
        return super().__new__(cls)

    def __init__(self, env: Env, params: PosteriorSamplingParams | None = None) -> None:
        if not isinstance(env, self.env_type):
            raise IclRlError(f"{type(self).__name__} is for {self.env_type.family}, not "
                             f"{env.spec.name!r}; make_learner('posterior_sampling', env) picks "
                             "the sampler for the env")
        super().__init__(env, params)
        if not 0 <= self.params.epsilon <= 1:
            raise IclRlError(f"posterior_sampling: epsilon must be in [0, 1]: {self.params}")
        k = self.params.context_episodes
        if not isinstance(k, int) or k < 0:
            raise IclRlError(f"posterior_sampling: context_episodes must be an integer >= 0, "
                             f"got {k!r}")
        if k and not self.context_episodes_supported:
            raise IclRlError(f"posterior_sampling: context_episodes is for dark_room and "
                             f"dark_room_hard, not {env.spec.name!r}")
        if k and not self.params.per_step:
            raise IclRlError("posterior_sampling: context_episodes models DPT's deployment (a "
                             "fresh draw every step from a belief fixed during the episode); "
                             "set per_step: true with it")
        self.env = env
        self.cells = env.cells()
        self.size = env.size

    def cell_of(self, obs: Tensor) -> Tensor:
        """Cell index [N] of observations (x, y first)."""
        return obs[:, 0].long() * self.size + obs[:, 1].long()

    def mix(self, probs: Tensor, obs: Tensor) -> Tensor:
        """The planned distribution [N, A] mixed with epsilon-uniform, on obs's device."""
        eps = self.params.epsilon
        return ((1.0 - eps) * probs + eps / self.spec.num_actions).to(obs.device)


class GoalPosteriorSampling(PosteriorSampling):
    """Dark Room / Dark Room Hard: one hidden goal.

    Draws per step: rand [N, S] (a uniform choice among possible cells, used where a new target
    is needed), then rand [N] and randint [N] (epsilon exploration).
    """

    env_type = DarkRoom
    context_episodes_supported = True

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Uniform prior over every cell, goal unknown."""
        super().reset(n, generator)
        self.goal = HiddenCellBelief(n, self.env.num_states)
        self.resampled = torch.ones(n, dtype=torch.bool)  # whether the last act drew the target
        self.episode: list[tuple[Tensor, Tensor]] = []  # context_episodes: this episode's steps
        self.finished: list[list[tuple[Tensor, Tensor]]] = []  # ... and the last k finished

    def act(self, obs: Tensor) -> Tensor:
        """Walk toward the sampled goal; resample it once it is ruled out."""
        u = rng.rand(self.generator, self.goal.possible.shape)
        self.resampled = self.goal.retarget(u, always=self.params.per_step)
        plan = self.env.toward(obs.long(), self.cells[self.goal.target])
        return self.explore(plan, self.params.epsilon)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The distribution the last `act` drew its action from [N, 5]: where it drew a new
        target, the toward-action of a goal uniform over the possible cells; elsewhere the
        toward-action of the kept target (one-hot); mixed with epsilon / 5 uniform."""
        from icl_rl.bayes import goal_posterior_action_probs  # scipy, only when asked

        pos = obs.long().cpu()
        plan = self.env.toward(pos, self.cells[self.goal.target])
        probs = torch.nn.functional.one_hot(plan, self.spec.num_actions).float()
        rows = self.resampled.nonzero()[:, 0]
        if rows.numel():
            probs[rows] = goal_posterior_action_probs(self.goal.possible[rows], pos[rows],
                                                      self.size)
        return self.mix(probs, obs)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Rule out the cell the step ended on, or learn that it is the goal (with
        context_episodes, once the episode is over: the belief is rebuilt from the last k)."""
        step = (self.env.obs_to_state(next_obs), reward > 0)
        k = self.params.context_episodes
        if not k:
            self.goal.observe(*step)
            return
        self.episode.append(step)
        if bool(torch.as_tensor(done).any()):  # episodes run in lockstep
            self.finished = [*self.finished, self.episode][-k:]
            self.episode = []
            self.goal = HiddenCellBelief(self.n, self.env.num_states)
            for landed, found in (s for episode in self.finished for s in episode):
                self.goal.observe(landed, found)


class KeyDoorPosteriorSampling(PosteriorSampling):
    """Dark Key-to-Door: a hidden key, then a hidden door, independent a priori. A step taken
    without the key tells about the key only, a step taken with it (before the door paid in the
    episode) about the door only; each keeps its own posterior and sampled target. It walks to
    the key's target without the key, to the door's with it, and stays once the door paid.

    Draws per step: rand [N, S] (the new target, key's or door's, where one is needed), then
    rand [N] and randint [N] (epsilon exploration).
    """

    env_type = DarkKeyToDoor

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Uniform priors over every cell; the door shut."""
        super().reset(n, generator)
        self.key = HiddenCellBelief(n, self.size * self.size)
        self.door = HiddenCellBelief(n, self.size * self.size)
        self.opened = torch.zeros(n, dtype=torch.bool)  # the door paid in this episode
        self.resampled = torch.ones(n, dtype=torch.bool)

    def plan(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(the toward-action of the current phase's target [N], holds the key [N])."""
        holding = obs[:, 2].cpu() > 0.5
        target = torch.where(holding, self.door.target, self.key.target).clamp(min=0)
        plan = self.env.toward(obs[:, :2].long().cpu(), self.cells[target])
        return torch.where(self.opened, STAY, plan), holding

    def act(self, obs: Tensor) -> Tensor:
        """Toward the key's target, then the door's; resample a ruled-out target."""
        u = rng.rand(self.generator, self.key.possible.shape)
        holding = obs[:, 2].cpu() > 0.5
        always = self.params.per_step
        self.resampled = (self.key.retarget(u, ~holding, always)
                          | self.door.retarget(u, holding & ~self.opened, always))
        return self.explore(self.plan(obs)[0], self.params.epsilon)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The distribution the last `act` drew from [N, 5]: where it drew a new target, the
        toward-action of a cell uniform over that target's posterior; elsewhere one-hot."""
        from icl_rl.bayes import goal_posterior_action_probs

        plan, holding = self.plan(obs)
        probs = torch.nn.functional.one_hot(plan, self.spec.num_actions).float()
        rows = (self.resampled & ~self.opened).nonzero()[:, 0]  # an open door: stay
        if rows.numel():
            possible = torch.where(holding[rows, None], self.door.possible[rows],
                                   self.key.possible[rows])
            probs[rows] = goal_posterior_action_probs(possible, obs[rows, :2].long().cpu(),
                                                      self.size)
        return self.mix(probs, obs)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Rule out or reveal the key (a step without it) or the door (a step with it)."""
        landed, found = self.cell_of(next_obs.cpu()), (reward > 0).cpu()
        holding = obs[:, 2].cpu() > 0.5
        self.key.observe(landed, found, ~holding)
        self.door.observe(landed, found, holding & ~self.opened)
        self.opened = (self.opened | (holding & found)) & ~torch.as_tensor(done).cpu()


class MazePosteriorSampling(PosteriorSampling):
    """Dark mazes: the goal's posterior as in Dark Room (exact: the goal is drawn independently
    of the maze), reached by the env oracle's rule in the maze of the walls seen so far, unseen
    walls taken as open. Not a sample of the maze: the randomized-Kruskal prior has no closed-form
    posterior given some walls, so this sampler plans optimistically through the unseen part.
    Walls are read from the observations it acts on.

    Draws per step: rand [N, S] (the new goal target where one is needed), then rand [N] and
    randint [N] (epsilon exploration).
    """

    env_type = DarkMaze

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Uniform prior over every cell; no wall seen."""
        super().reset(n, generator)
        s = self.size * self.size
        self.goal = HiddenCellBelief(n, s)
        self.wall_right = torch.zeros(n, s, dtype=torch.bool)
        self.wall_up = torch.zeros(n, s, dtype=torch.bool)
        self.resampled = torch.ones(n, dtype=torch.bool)
        self.planned = torch.zeros(n, dtype=torch.long)  # read only where not resampled

    def distribution(self, possible: Tensor, obs: Tensor, rows: Tensor | None = None) -> Tensor:
        """maze_posterior_action_probs for the goals `possible` [R, S] of rows (all if None)."""
        from icl_rl.bayes import maze_posterior_action_probs

        sel = slice(None) if rows is None else rows
        return maze_posterior_action_probs(possible, obs[sel, :2].long().cpu(),
                                           self.wall_right[sel], self.wall_up[sel], self.size)

    def act(self, obs: Tensor) -> Tensor:
        """Toward the sampled goal through the walls seen; resample it once it is ruled out."""
        self.see_walls(obs)
        u = rng.rand(self.generator, self.goal.possible.shape)
        self.resampled = self.goal.retarget(u, always=self.params.per_step)
        onehot = torch.nn.functional.one_hot(self.goal.target, self.size * self.size).bool()
        self.planned = self.distribution(onehot, obs).argmax(dim=1)
        return self.explore(self.planned, self.params.epsilon)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The distribution the last `act` drew from [N, 5]: where it drew a new goal, the
        planned move toward a goal uniform over the possible cells; elsewhere one-hot.
        Replayed along another agent's history (fed its transitions, never acting), every step
        is a new draw: the per-step posterior's distribution."""
        self.see_walls(obs)  # what `act` would have seen, when replayed without acting
        probs = torch.nn.functional.one_hot(self.planned, self.spec.num_actions).float()
        rows = self.resampled.nonzero()[:, 0]
        if rows.numel():
            probs[rows] = self.distribution(self.goal.possible[rows], obs, rows)
        return self.mix(probs, obs)

    def see_walls(self, obs: Tensor) -> None:
        """Add the walls around the agent's cell in obs to those seen (idempotent)."""
        right, up = seen_walls(obs.cpu(), self.size)
        self.wall_right |= right
        self.wall_up |= up

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Rule out the cell the step ended on, or learn that it is the goal."""
        self.goal.observe(self.cell_of(next_obs.cpu()), (reward > 0).cpu())
