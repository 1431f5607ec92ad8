"""Bandit source learners, batched over N tasks: epsilon-greedy, UCB1, Thompson sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.bandits import Bandit, BernoulliBandit, GaussianBandit
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams, decayed_epsilon, first_argmax


class BanditLearner(Learner):
    """Per-arm pull counts and reward sums [N, K], updated with one scatter per step."""

    def __init__(self, env: Env, params: LearnerParams | None = None) -> None:
        if not isinstance(env, Bandit):
            raise IclRlError(
                f"learner {self.name!r} is for bandits, not {env.spec.name!r}; on sequential "
                "tasks use q_learning, ppo, posterior_sampling or noise_distill (random for "
                "DPT's roll-in transitions)"
            )
        super().__init__(env, params)
        self.steps = 0

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Forget every arm's statistics."""
        super().reset(n, generator)
        k = self.spec.num_actions
        self.counts = torch.zeros(n, k)  # [N, K]
        self.sums = torch.zeros(n, k)  # [N, K]
        self.steps = 0

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Add the pull to its arm's count and sum."""
        idx = action.long()[:, None]  # [N, 1]
        self.counts.scatter_add_(1, idx, torch.ones_like(reward)[:, None])
        self.sums.scatter_add_(1, idx, reward[:, None].float())
        self.steps += 1

    def means(self, initial: float = 0.0) -> Tensor:
        """Empirical mean reward per arm [N, K]; `initial` for arms never pulled."""
        m = self.sums / self.counts.clamp(min=1.0)
        return m.masked_fill(self.counts == 0, initial)


@dataclass(frozen=True)
class EpsilonGreedyParams(LearnerParams):
    """Epsilon-greedy with a multiplicative decay of the exploration rate."""

    epsilon: float = 1.0
    """Exploration probability at the first step."""
    decay: float = 0.98
    """Multiplier applied to epsilon after every step."""
    min_epsilon: float = 0.02
    """Floor for the decayed epsilon."""


class EpsilonGreedy(BanditLearner):
    """Greedy on empirical means (ties to the lowest arm), uniform with prob. epsilon_t.

    Draws per step: one rand [N] (explore?) then one randint [N] (which arm).
    """

    Params = EpsilonGreedyParams
    name = "epsilon_greedy"

    def __init__(self, env: Env, params: EpsilonGreedyParams | None = None) -> None:
        super().__init__(env, params)
        p = self.params
        if not (0 <= p.min_epsilon <= 1 and 0 <= p.epsilon <= 1 and 0 < p.decay <= 1):
            raise IclRlError(f"epsilon_greedy: need 0<=epsilon,min_epsilon<=1, 0<decay<=1: {p}")

    def act(self, obs: Tensor) -> Tensor:
        """Explore with probability epsilon_t, else exploit."""
        return self.explore(first_argmax(self.means()), self.epsilon())

    def epsilon(self) -> float:
        """The exploration rate of the current step."""
        p = self.params
        return decayed_epsilon(p.epsilon, p.decay, p.min_epsilon, self.steps)

    def action_probs(self, obs: Tensor) -> Tensor:
        """epsilon / K on every arm plus 1 - epsilon on the greedy one: [N, K]."""
        k, eps = self.spec.num_actions, self.epsilon()
        greedy = F.one_hot(first_argmax(self.means()), k).float()
        return eps / k + (1 - eps) * greedy


@dataclass(frozen=True)
class GreedyParams(EpsilonGreedyParams):
    """Epsilon-greedy with no exploration: always the best empirical mean."""

    epsilon: float = 0.0
    """Exploration probability (0: the pure greedy empirical-mean learner)."""
    min_epsilon: float = 0.0
    """Floor for the decayed epsilon."""


class Greedy(EpsilonGreedy):
    """The greedy empirical-mean learner (unpulled arms count as mean 0; ties to the lowest
    arm): the no-exploration reference of bandit regret tables. Same draws as epsilon-greedy."""

    Params = GreedyParams
    name = "greedy"


@dataclass(frozen=True)
class UCBParams(LearnerParams):
    """UCB1 (Auer et al. 2002)."""

    c: float = 1.0
    """Scale of the exploration bonus c * sqrt(2 ln t / n_a); 1.0 is UCB1."""


class UCB1(BanditLearner):
    """Pulls every arm once (lowest first), then argmax of mean + c sqrt(2 ln t / n). No draws."""

    Params = UCBParams
    name = "ucb"

    def __init__(self, env: Env, params: UCBParams | None = None) -> None:
        super().__init__(env, params)
        if not self.params.c >= 0:
            raise IclRlError(f"ucb: c must be >= 0, got {self.params.c}")

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Forget every arm's statistics."""
        super().reset(n, generator)
        self.all_tried = False

    def act(self, obs: Tensor) -> Tensor:
        """Optimism in the face of uncertainty."""
        bonus = self.params.c * math.sqrt(2.0 * math.log(max(self.steps, 1)))
        # Untried arms score +inf, so after K steps every arm has been pulled and the counts
        # need no guard (checked once; 3 ops a step instead of 8).
        if not self.all_tried and self.steps >= self.spec.num_actions:
            self.all_tried = bool((self.counts > 0).all())
        if self.all_tried:
            score = torch.rsqrt(self.counts).mul_(bonus).add_(self.sums / self.counts)
        else:
            n = self.counts.clamp(min=1.0)
            score = (self.sums / n + bonus * n.rsqrt()).masked_fill(self.counts == 0,
                                                                    float("inf"))
        return first_argmax(score)

    def action_probs(self, obs: Tensor) -> Tensor:
        """UCB1 is deterministic: all mass on the arm `act` takes [N, K] (call before act
        changes nothing: it reads the same counts)."""
        return F.one_hot(self.act(obs), self.spec.num_actions).float().to(obs.device)


@dataclass(frozen=True)
class ThompsonParams(LearnerParams):
    """Thompson sampling; the likelihood follows the env (Beta-Bernoulli or Normal-Normal)."""

    prior_alpha: float = 1.0
    """Beta prior successes (Bernoulli bandits)."""
    prior_beta: float = 1.0
    """Beta prior failures (Bernoulli bandits)."""
    prior_mean: float | None = None
    """Normal prior mean of an arm (Gaussian bandits; default: the env's task distribution,
    0 for means ~ N(0, 1), 0.5 for means ~ U(0, 1))."""
    prior_std: float | None = None
    """Normal prior std of an arm (Gaussian bandits; default: the env's, 1 or 1/sqrt(12))."""
    uniform_prior: bool = False
    """Gaussian bandits: arm means U[0, 1] a priori (the `means: uniform` task distribution,
    the DPT paper's setting) instead of a normal prior, so the posterior is the exact one, a
    normal truncated to [0, 1] (prior_mean and prior_std are then unused)."""


class Thompson(BanditLearner):
    """Samples arm means from the posterior, pulls the best sample.

    Draws per step, Bernoulli: standard_gamma(alpha [N, K]) then standard_gamma(beta [N, K]);
    Gaussian: one randn [N, K].
    """

    Params = ThompsonParams
    name = "thompson"

    def __init__(self, env: Env, params: ThompsonParams | None = None) -> None:
        super().__init__(env, params)
        p = self.params
        gaussian = isinstance(env, GaussianBandit)
        mean, std = env.prior if gaussian else (0.0, 1.0)
        self.prior_mean = mean if p.prior_mean is None else p.prior_mean
        self.prior_std = std if p.prior_std is None else p.prior_std
        if not (p.prior_alpha > 0 and p.prior_beta > 0 and self.prior_std > 0):
            raise IclRlError(f"thompson: prior parameters must be > 0: {p}")
        self.bernoulli = isinstance(env, BernoulliBandit)
        self.noise_var = env.noise_std**2 if gaussian else 1.0
        if p.uniform_prior and not gaussian:
            raise IclRlError("thompson: uniform_prior is for Gaussian bandits (a Bernoulli "
                             "bandit's U[0, 1] prior is prior_alpha = prior_beta = 1)")

    def params_dict(self) -> dict:
        """Hyperparameters with the Gaussian prior as used (the env's when not given);
        uniform_prior only where set, so cards of the default sampler read as before."""
        params = {**super().params_dict(), "prior_mean": self.prior_mean,
                  "prior_std": self.prior_std}
        if not self.params.uniform_prior:
            params.pop("uniform_prior", None)
        return params

    def posterior_sample(self) -> Tensor:
        """One draw of every arm's mean from its posterior [N, K]."""
        p = self.params
        if self.bernoulli:
            x = rng.standard_gamma(self.generator, p.prior_alpha + self.sums)
            y = rng.standard_gamma(self.generator, p.prior_beta + self.counts - self.sums)
            return x / (x + y)
        if p.uniform_prior:
            return self._truncated_sample()
        precision = 1.0 / self.prior_std**2 + self.counts / self.noise_var
        mean = (self.prior_mean / self.prior_std**2 + self.sums / self.noise_var) / precision
        z = rng.randn(self.generator, self.counts.shape)
        return mean + z * precision.rsqrt()

    def _truncated_sample(self) -> Tensor:
        """Means from N(sample mean, noise^2 / n) truncated to [0, 1] (uniform where n = 0),
        by the inverse CDF in float64; an interval wholly in the upper tail is mirrored into
        the lower one, where the normal CDF keeps its precision. One rand [N, K]."""
        u = rng.rand(self.generator, self.counts.shape).double()
        n, total = self.counts.double(), self.sums.double()
        pulled = n > 0
        mean = torch.where(pulled, total / n.clamp(min=1), 0.5)
        scale = torch.where(pulled, (self.noise_var / n.clamp(min=1)).sqrt(),
                            torch.tensor(1e6, dtype=torch.float64))  # unpulled: ~flat
        lo, hi = (0 - mean) / scale, (1 - mean) / scale
        flip = lo > 0  # mirror: sample -z from [-hi, -lo]
        lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
        c_lo, c_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
        z = torch.special.ndtri((c_lo + u * (c_hi - c_lo)).clamp(1e-300, 1 - 1e-16))
        z = torch.where(flip, -z, z)
        x = (mean + scale * z).clamp(0, 1)
        # an interval beyond float64's tails: all the mass at the nearer bound
        x = torch.where(c_hi - c_lo > 0, x, (mean > 0.5).double())
        return torch.where(pulled, x, u).to(self.sums.dtype)

    def act(self, obs: Tensor) -> Tensor:
        """Probability matching."""
        return first_argmax(self.posterior_sample())

    def action_probs(self, obs: Tensor) -> Tensor:
        """The exact distribution `act` draws from [N, K]: P(arm i's posterior sample is the
        largest), by quadrature over the posteriors of the current counts."""
        from icl_rl.bayes import (  # scipy, only when asked
            prob_best_beta,
            prob_best_normal,
            prob_best_uniform_normal,
        )

        p = self.params
        counts, sums = self.counts.double().cpu().numpy(), self.sums.double().cpu().numpy()
        if p.uniform_prior:
            probs = prob_best_uniform_normal(counts, sums, self.noise_var**0.5)
        elif self.bernoulli:
            probs = prob_best_beta(p.prior_alpha + sums, p.prior_beta + counts - sums)
        else:  # the Normal posterior of posterior_sample
            precision = 1.0 / self.prior_std**2 + counts / self.noise_var
            mean = (self.prior_mean / self.prior_std**2 + sums / self.noise_var) / precision
            probs = prob_best_normal(mean, precision**-0.5)
        return torch.from_numpy(probs).float().to(obs.device)


@dataclass(frozen=True)
class DirichletMixParams(LearnerParams):
    """The bandit roll-in of the Decision-Pretrained Transformer (Lee et al. 2023)."""

    max_point_mass: float = 1.0
    """Upper end of the point-mass weight c ~ U[0, max_point_mass] of each history."""


class DirichletMix(BanditLearner):
    """Actions i.i.d. from one distribution per history: (1 - c) Dirichlet(1) + c point mass.

    Each history draws p ~ Dirichlet(1, ..., 1), an arm j and c ~ U[0, max_point_mass], then
    pulls arms i.i.d. from (1 - c) p + c e_j whatever the rewards: the in-context datasets of
    DPT's bandit pretraining, from nearly uniform to nearly one arm. It does not learn.

    Draws at reset: rand [N, K] (the Dirichlet, as normalised -log U), randint [N] (the arm),
    rand [N] (c); per step: one categorical [N].
    """

    Params = DirichletMixParams
    name = "dirichlet_mix"

    def __init__(self, env: Env, params: DirichletMixParams | None = None) -> None:
        super().__init__(env, params)
        if not 0 <= self.params.max_point_mass <= 1:
            raise IclRlError(f"dirichlet_mix: max_point_mass must be in [0, 1]: {self.params}")

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Draw every history's action distribution."""
        super().reset(n, generator)
        k = self.spec.num_actions
        gamma = -torch.log1p(-rng.rand(self.generator, (n, k)))  # Exp(1) = Gamma(1)
        arm = rng.randint(self.generator, k, (n,))
        c = rng.rand(self.generator, (n,)) * self.params.max_point_mass
        self.probs = ((1 - c)[:, None] * gamma / gamma.sum(dim=1, keepdim=True)
                      + c[:, None] * F.one_hot(arm, k).float())

    def act(self, obs: Tensor) -> Tensor:
        """An arm from the history's own distribution."""
        return rng.categorical(self.generator, self.probs).to(obs.device)

    def action_probs(self, obs: Tensor) -> Tensor:
        """The history's distribution [N, K]."""
        return self.probs.to(obs.device)
