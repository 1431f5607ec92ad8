"""The Bayes-optimal reference agent for Bernoulli bandits (`--baselines bayes_optimal`).

Exact where the dynamic program fits in `max_states` (`icl_rl.bayes.BernoulliBayesOptimal`; with
the default 5e7 states: 2 arms up to 184 pulls, 3 arms 54, 4 arms 31, 5 arms 22); beyond that the
Gittins-index policy, an approximation, and `exact` says which one runs. Ties split evenly
and the action is drawn from that split (one categorical [N] per step), so `action_probs` is
the distribution acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.bandits import BernoulliBandit
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.bandits import BanditLearner
from icl_rl.learners.base import LearnerParams

METHODS = ("auto", "exact", "gittins")


@dataclass(frozen=True)
class BayesOptimalParams(LearnerParams):
    """Bayes-optimal play of a Beta(1, 1)-prior Bernoulli bandit over a finite horizon."""

    horizon: int = 100
    """Pulls the policy plans for (icl-rl eval sets it to the evaluation's horizon)."""
    method: str = "auto"
    """exact (the dynamic program; an error when it does not fit in max_states), gittins (the
    Gittins-index approximation, discount 1 - 1/horizon) or auto (exact when it fits)."""
    max_states: int = 50_000_000
    """Largest dynamic program solved exactly (8 bytes per state)."""


@lru_cache(maxsize=4)
def _policy(num_arms: int, horizon: int, method: str, max_states: int):
    """The solved policy (cached: every evaluation of the same shape shares it)."""
    from icl_rl import bayes

    if method in ("auto", "exact"):
        try:
            return bayes.BernoulliBayesOptimal(num_arms, horizon, max_states=max_states), True
        except IclRlError:
            if method == "exact":
                raise
    return bayes.GittinsPolicy(num_arms, horizon), False


class BayesOptimal(BanditLearner):
    """Acts with the Bayes-optimal (or Gittins) policy of its posterior counts."""

    Params = BayesOptimalParams
    name = "bayes_optimal"

    def __init__(self, env: Env, params: BayesOptimalParams | None = None) -> None:
        super().__init__(env, params)
        p = self.params
        if not isinstance(env, BernoulliBandit):
            raise IclRlError(f"learner 'bayes_optimal' is for bernoulli_bandit (Beta posteriors), "
                             f"not {env.spec.name!r}; use thompson (posterior sampling) there")
        if p.method not in METHODS:
            raise IclRlError(f"bayes_optimal: method must be one of {', '.join(METHODS)}, "
                             f"got {p.method!r}")
        if not (isinstance(p.horizon, int) and p.horizon >= 1):
            raise IclRlError(f"bayes_optimal: horizon must be a positive integer: {p}")
        self.policy, self.exact = _policy(self.spec.num_actions, p.horizon, p.method,
                                          p.max_states)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The policy's split over its best arms given the counts so far [N, K]."""
        if self.steps >= self.params.horizon:
            raise IclRlError(f"bayes_optimal planned for {self.params.horizon} pulls; pass "
                             "learner_kwargs horizon >= the steps rolled out")
        succ = self.sums.double().numpy()
        probs = self.policy.action_probs(succ, self.counts.double().numpy() - succ)
        return torch.as_tensor(probs, dtype=torch.float32, device=obs.device)

    def act(self, obs: Tensor) -> Tensor:
        """A best arm (uniform among ties)."""
        return rng.categorical(self.generator, self.action_probs(obs).cpu()).to(obs.device)
