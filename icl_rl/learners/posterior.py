"""Posterior sampling over the hidden goal of Dark Room: a near Bayes-optimal explorer.

The prior is uniform over every cell (the env's own task distribution, not a training split).
A step that ends on a cell without reward rules that cell out; a rewarded step reveals the goal.
The agent walks to a goal sampled from what is still possible and resamples when that cell is
ruled out. Before the goal is found, its behaviour does not depend on the goal at all, so a
model that imitates it learns exploration that transfers to goals it never saw (a noisy oracle,
by contrast, leaks the goal into its early actions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.envs.gridworld import DarkRoom
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams


@dataclass(frozen=True)
class PosteriorSamplingParams(LearnerParams):
    """Goal posterior sampling for Dark Room."""

    epsilon: float = 0.0
    """Probability of a uniformly random action instead of the planned one."""


class GoalPosteriorSampling(Learner):
    """possible [N, S]: cells the goal may still be in; target [N]: the sampled goal.

    Draws per step: rand [N, S] (a uniform choice among possible cells, used where a new target
    is needed), then rand [N] and randint [N] (epsilon exploration).
    """

    Params = PosteriorSamplingParams
    name = "posterior_sampling"

    def __init__(self, env: Env, params: PosteriorSamplingParams | None = None) -> None:
        if not isinstance(env, DarkRoom):
            raise IclRlError(f"learner 'posterior_sampling' is for dark_room / dark_room_hard "
                             f"(a hidden goal cell), not {env.spec.name!r}")
        super().__init__(env, params)
        if not 0 <= self.params.epsilon <= 1:
            raise IclRlError(f"posterior_sampling: epsilon must be in [0, 1]: {self.params}")
        self.env = env
        self.cells = env.cells()

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Uniform prior over every cell, goal unknown."""
        super().reset(n, generator)
        self.possible = torch.ones(n, self.env.num_states, dtype=torch.bool)
        self.known = torch.zeros(n, dtype=torch.bool)
        self.target = torch.full((n,), -1, dtype=torch.long)  # none yet: sampled at the first act
        self.resampled = torch.ones(n, dtype=torch.bool)  # whether the last act drew the target
        self.rows = torch.arange(n)

    def act(self, obs: Tensor) -> Tensor:
        """Walk toward the sampled goal; resample it once it is ruled out."""
        u = rng.rand(self.generator, self.possible.shape)
        candidate = torch.where(self.possible, u, -1.0).argmax(dim=1)  # uniform among possible
        stale = (self.target < 0) | ~self.possible[self.rows, self.target.clamp(min=0)]
        self.target = torch.where(stale, candidate, self.target)
        self.resampled = stale
        plan = self.env.toward(obs.long(), self.cells[self.target])
        return self.explore(plan, self.params.epsilon)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The distribution the last `act` drew its action from [N, 5]: where it drew a new
        target, the toward-action of a goal uniform over the possible cells; elsewhere the
        toward-action of the kept target (one-hot); mixed with epsilon / 5 uniform."""
        from icl_rl.bayes import goal_posterior_action_probs  # scipy, only when asked

        pos = obs.long().cpu()
        plan = self.env.toward(pos, self.cells[self.target])
        probs = torch.nn.functional.one_hot(plan, self.spec.num_actions).float()
        rows = self.resampled.nonzero()[:, 0]
        if rows.numel():
            probs[rows] = goal_posterior_action_probs(self.possible[rows], pos[rows],
                                                      self.env.size)
        eps = self.params.epsilon
        return ((1.0 - eps) * probs + eps / self.spec.num_actions).to(obs.device)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Rule out the cell the step ended on, or learn that it is the goal."""
        landed = self.env.obs_to_state(next_obs)  # where the step ended, also at a time limit
        found = reward > 0
        revealed = torch.zeros_like(self.possible)
        revealed[self.rows, landed] = True
        # Dark Room Hard pays only once per episode: a known goal is never ruled out again.
        self.possible[self.rows, landed] &= found | self.known
        self.possible = torch.where((found & ~self.known)[:, None], revealed, self.possible)
        self.known |= found
