"""Bayesian references (icl_rl.bayes): the exact DP against brute force and other policies,
prob-best quadrature against closed forms, adaptive quadrature and Monte Carlo, the learners'
action_probs against their own act(), and the history-level references against the learners."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from icl_rl.bayes import (
    BernoulliBayesOptimal,
    GittinsPolicy,
    bandit_reference_probs,
    bayes_optimal_reference_probs,
    darkroom_reference_probs,
    expected_total_reward,
    gittins_indices,
    goal_posterior_action_probs,
    kl_divergence,
    prob_best_beta,
    prob_best_normal,
    total_variation,
)
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import GoalPosteriorSampling, make_learner
from icl_rl.rollout import rollout

PRIORS = [(1.0, 1.0), (0.5, 2.0)]


def brute_force(num_arms: int, a: float, b: float):
    """Plain recursive expectimax over the full tree: V(state, pulls left), Q(state, left, i)."""

    @cache
    def value(state, left):
        if left == 0:
            return 0.0
        return max(q(state, left, i) for i in range(num_arms))

    def q(state, left, i):
        s, f = state[i]
        m = (a + s) / (a + b + s + f)
        win, lose = list(state), list(state)
        win[i], lose[i] = (s + 1, f), (s, f + 1)
        return m * (1 + value(tuple(win), left - 1)) + (1 - m) * value(tuple(lose), left - 1)

    return value, q


@pytest.mark.parametrize("num_arms", [2, 3])
@pytest.mark.parametrize("prior", PRIORS)
def test_dp_is_exact_against_brute_force(num_arms, prior):
    value, q = brute_force(num_arms, *prior)
    root = tuple((0, 0) for _ in range(num_arms))
    rng = np.random.default_rng(num_arms)
    for horizon in range(1, 9):
        dp = BernoulliBayesOptimal(num_arms, horizon, prior)
        assert dp.value() == pytest.approx(value(root, horizon), rel=1e-12, abs=1e-12)
        # the root and random interior states, rows at different steps in one batch
        parts = [np.zeros(2 * num_arms, dtype=np.int64)]
        parts += [rng.multinomial(rng.integers(0, horizon), [1 / (2 * num_arms)] * 2 * num_arms)
                  for _ in range(25)]
        c = np.stack(parts)
        want = [[q(tuple(zip(row[0::2].tolist(), row[1::2].tolist(), strict=True)),
                   horizon - int(row.sum()), i) for i in range(num_arms)] for row in c]
        got = dp.q_values(c[:, 0::2], c[:, 1::2])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        probs = dp.action_probs(c[:, 0::2], c[:, 1::2])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        assert (probs[np.arange(len(c)), np.argmax(got, axis=1)] > 0).all()
        np.testing.assert_allclose(probs[0], 1 / num_arms)  # the root: every arm is the same


def test_dp_pinned_values_and_its_own_evaluation():
    # a regression pin beyond the brute force's reach (uniform priors, 2 arms)
    assert BernoulliBayesOptimal(2, 10).value() == pytest.approx(6.0217857142857145, abs=1e-12)
    assert BernoulliBayesOptimal(2, 100).value() == pytest.approx(64.91842065102297, abs=1e-9)
    for k, h, prior in [(2, 25, (1.0, 1.0)), (3, 9, (0.5, 2.0)), (5, 5, (2.0, 1.0))]:
        dp = BernoulliBayesOptimal(k, h, prior)
        assert expected_total_reward(dp.action_probs, k, h, prior) == pytest.approx(
            dp.value(), rel=1e-12)


def test_dp_refuses_and_checks_its_inputs():
    with pytest.raises(IclRlError, match="max_states=1,000.*Gittins"):
        BernoulliBayesOptimal(2, 50, max_states=1000)
    dp = BernoulliBayesOptimal(2, 5)
    with pytest.raises(IclRlError, match="after 5 pulls.*horizon 5"):
        dp.q_values([[3, 0]], [[1, 1]])
    with pytest.raises(IclRlError, match="non-negative integers"):
        dp.q_values([[0.5, 0]], [[0, 0]])
    with pytest.raises(IclRlError, match=r"\[N, 2\]"):
        dp.q_values([[0, 0, 0]], [[0, 0, 0]])


def learner_policy(name: str, num_arms: int):
    """A bandit learner as a count policy: its action distribution at given counts."""
    env = make_env("bernoulli_bandit", num_arms=num_arms)
    learner = make_learner(name, env)

    def policy(s, f):
        learner.reset(len(s), torch.Generator().manual_seed(0))
        learner.counts = torch.from_numpy(s + f).float()
        learner.sums = torch.from_numpy(s).float()
        learner.steps = int((s + f)[0].sum())
        obs = torch.zeros(len(s), 1)
        if name == "thompson":
            return learner.action_probs(obs).double().numpy()
        return torch.nn.functional.one_hot(learner.act(obs), num_arms).double().numpy()

    return policy


@pytest.mark.parametrize(("num_arms", "horizons"), [(2, range(1, 11)), (3, range(1, 7))])
def test_dp_beats_thompson_and_ucb(num_arms, horizons):
    thompson, ucb = learner_policy("thompson", num_arms), learner_policy("ucb", num_arms)
    for h in horizons:
        best = BernoulliBayesOptimal(num_arms, h).value()
        ts = expected_total_reward(thompson, num_arms, h)
        uc = expected_total_reward(ucb, num_arms, h)
        assert best >= ts - 1e-6 and best >= uc - 1e-12  # Thompson's probs are float32
        if h >= 2:  # neither is optimal: the comparison is not vacuous
            assert best > ts + 1e-3 and best > uc + 1e-3
    # the first pull: every policy earns the prior mean
    assert expected_total_reward(thompson, num_arms, 1) == pytest.approx(0.5)


def quad_prob_best(dists, lo, hi, points):
    """P(arm i is best) for frozen scipy distributions, by adaptive quadrature."""
    out = []
    for i, di in enumerate(dists):
        def f(x, i=i, di=di):
            return di.pdf(x) * np.prod([d.cdf(x) for j, d in enumerate(dists) if j != i])
        out.append(integrate.quad(f, lo, hi, points=points, limit=500, epsabs=1e-13,
                                  epsrel=1e-12)[0])
    return np.array(out)


BETA_ROWS = [  # (alpha, beta): flat, skewed, one arm much narrower than another, 5 arms
    ([1, 1], [1, 1]),
    ([2, 1], [1, 2]),
    ([1, 251, 3], [1, 251, 1]),
    ([1, 451, 3], [5, 51, 1]),
    ([3, 40, 41, 7, 1], [5, 60, 58, 9, 2]),
    ([0.5, 1.5], [0.5, 3.0]),  # shapes < 1: densities diverge at 0 and 1
    ([0.5, 3.5, 10.5], [4.5, 0.5, 12.5]),
]


@pytest.mark.parametrize(("alpha", "beta"), BETA_ROWS)
def test_prob_best_beta_against_quadrature_and_monte_carlo(alpha, beta):
    a, b = np.array(alpha, dtype=float), np.array(beta, dtype=float)
    p = prob_best_beta(a[None], b[None])[0]
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    draws = rng.beta(a, b, size=(1_000_000, len(a)))
    freq = np.bincount(draws.argmax(axis=1), minlength=len(a)) / len(draws)
    np.testing.assert_allclose(p, freq, atol=3e-3)
    if (a >= 1).all() and (b >= 1).all():
        ref = quad_prob_best([stats.beta(ai, bi) for ai, bi in zip(a, b, strict=True)], 0, 1,
                             sorted(a / (a + b)))
        np.testing.assert_allclose(p, ref, atol=1e-9)


def test_prob_best_closed_forms_and_shapes():
    np.testing.assert_allclose(prob_best_beta([[2, 1]], [[1, 2]]), [[5 / 6, 1 / 6]], atol=1e-12)
    np.testing.assert_allclose(prob_best_beta(np.ones((1, 4)), np.ones((1, 4))), 0.25,
                               atol=1e-12)
    mu, sd = np.array([[0.3, -0.2], [1.0, 1.0]]), np.array([[0.5, 2.0], [0.01, 3.0]])
    first = special.ndtr((mu[:, 0] - mu[:, 1]) / np.hypot(sd[:, 0], sd[:, 1]))
    np.testing.assert_allclose(prob_best_normal(mu, sd)[:, 0], first, atol=1e-12)
    # any leading shape, the same as row by row; one arm is always best
    rng = np.random.default_rng(1)
    a, b = rng.integers(1, 60, (2, 3, 4)).astype(float), rng.integers(1, 60, (2, 3, 4))
    batch = prob_best_beta(a, b)
    assert batch.shape == (2, 3, 4)
    np.testing.assert_allclose(batch[1, 2], prob_best_beta(a[1, 2][None], b[1, 2][None])[0],
                               atol=1e-13)
    np.testing.assert_allclose(prob_best_normal(np.zeros((3, 1)), np.ones((3, 1))), 1.0)
    with pytest.raises(IclRlError, match="must be > 0"):
        prob_best_normal([[0.0, 1.0]], [[1.0, 0.0]])
    with pytest.raises(IclRlError, match="same shape"):
        prob_best_beta([[1.0, 1.0]], [[1.0]])


def test_prob_best_normal_against_quadrature_and_monte_carlo():
    rng = np.random.default_rng(2)
    for k in (2, 3, 5):
        mu, sd = rng.normal(0, 1, k), np.exp(rng.uniform(-4, 0.5, k))
        p = prob_best_normal(mu[None], sd[None])[0]
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        draws = rng.normal(mu, sd, size=(1_000_000, k))
        freq = np.bincount(draws.argmax(axis=1), minlength=k) / len(draws)
        np.testing.assert_allclose(p, freq, atol=3e-3)
        ref = quad_prob_best([stats.norm(m, s) for m, s in zip(mu, sd, strict=True)],
                             mu.min() - 12 * sd.max(), mu.max() + 12 * sd.max(), sorted(mu))
        np.testing.assert_allclose(p, ref, atol=1e-9)


def assert_frequencies(actions: torch.Tensor, probs: torch.Tensor, sigmas: float = 5.0):
    """Empirical action frequencies within `sigmas` binomial standard errors of probs [A]."""
    n = len(actions)
    freq = torch.bincount(actions, minlength=len(probs)).double() / n
    p = probs.double()
    bound = sigmas * (p * (1 - p) / n).sqrt() + 1e-4
    assert ((freq - p).abs() <= bound).all(), (freq, p)


@pytest.mark.parametrize("env_name", ["bernoulli_bandit", "gaussian_bandit"])
def test_thompson_action_probs_is_the_distribution_of_act(env_name):
    env = make_env(env_name, num_arms=3)
    learner = make_learner("thompson", env)

    def at_state(n):  # arm 0 pulled 5 times (3 paid), arm 1 twice (once), arm 2 never
        learner.reset(n, torch.Generator().manual_seed(3))
        learner.counts = torch.tensor([5.0, 2.0, 0.0]).expand(n, 3).clone()
        learner.sums = torch.tensor([3.0, 1.0, 0.0]).expand(n, 3).clone()
        return torch.zeros(n, 1)

    obs = at_state(4)
    probs = learner.action_probs(obs)
    assert probs.shape == (4, 3) and probs.dtype == torch.float32
    assert torch.allclose(probs, probs[:1].expand(4, 3))
    assert_frequencies(learner.act(at_state(300_000)), probs[0])


def goal_learner(n: int, epsilon: float = 0.0, size: int = 5, seed: int = 4):
    env = make_env("dark_room", size=size, episode_len=2 * size)
    learner = make_learner("posterior_sampling", env, epsilon=epsilon)
    learner.reset(n, torch.Generator().manual_seed(seed))
    return env, learner


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_goal_posterior_matches_the_learners_resampled_action(epsilon):
    size, groups, per = 5, 4, 40_000
    env, learner = goal_learner(groups * per, epsilon, size)
    gen = torch.Generator().manual_seed(5)
    patterns = torch.rand(groups, size * size, generator=gen) < 0.4
    patterns[0] = True  # the prior
    positions = torch.tensor([[2, 2], [0, 4], [3, 1], [4, 0]])
    learner.goal.possible = patterns.repeat_interleave(per, dim=0)
    obs = positions.repeat_interleave(per, dim=0).float()
    actions = learner.act(obs)  # no target yet: every row draws one
    assert learner.resampled.all()
    ref = goal_posterior_action_probs(patterns, positions, size)
    assert torch.allclose(ref.sum(dim=1), torch.ones(groups))
    mixed = (1 - epsilon) * ref + epsilon / 5
    assert torch.allclose(learner.action_probs(obs), mixed.repeat_interleave(per, dim=0),
                          atol=1e-6)
    for g in range(groups):
        assert_frequencies(actions[g * per:(g + 1) * per], mixed[g])
    # the next act keeps every (still possible) target: one-hot on the planned action
    learner.act(obs)
    assert not learner.resampled.any()
    plan = env.toward(obs.long(), learner.cells[learner.goal.target])
    want = (1 - epsilon) * torch.nn.functional.one_hot(plan, 5).float() + epsilon / 5
    assert torch.equal(learner.action_probs(obs), want)


def test_goal_posterior_uses_the_env_rule():
    size = 4
    env = make_env("dark_room", size=size, episode_len=8)
    cells = env.cells()
    for pos, goal in itertools.product(cells, cells):
        possible = torch.zeros(1, size * size, dtype=torch.bool)
        possible[0, goal[0] * size + goal[1]] = True
        probs = goal_posterior_action_probs(possible, pos[None], size)
        assert probs[0, env.toward(pos[None], goal[None])[0]] == 1.0
    with pytest.raises(IclRlError, match="rules out every cell"):
        goal_posterior_action_probs(torch.zeros(1, 16, dtype=torch.bool), cells[:1], size)


class RecordingPosteriorSampling(GoalPosteriorSampling):
    """Keeps the goal posterior and the resampling flag of every act."""

    def reset(self, n, generator=None):
        super().reset(n, generator)
        self.log = []

    def act(self, obs):
        possible = self.goal.possible.clone()
        action = super().act(obs)
        self.log.append((possible, self.resampled.clone()))
        return action


@pytest.mark.parametrize(("env_name", "params"), [
    ("dark_room", {"size": 5, "episode_len": 6}),
    ("dark_room_hard", {"size": 5, "episode_len": 6}),
    ("dark_room", {"size": 5, "episode_len": 3, "start": "random"}),
])
def test_darkroom_reference_follows_the_learner(env_name, params):
    env = make_env(env_name, **params)
    learner = RecordingPosteriorSampling(env, GoalPosteriorSampling.Params(epsilon=0.3))
    tasks = env.sample_tasks(48, torch.Generator().manual_seed(6))
    h = rollout(env, learner, tasks, 60, torch.Generator().manual_seed(7),
                torch.Generator().manual_seed(8), extras=("action_probs",))
    ref = darkroom_reference_probs(h.observations, h.actions, h.rewards, h.dones, env.size)
    assert ref.shape == (48, 60, 5)
    assert h.rewards.sum() > 0 and h.dones.any()  # goals are found, episodes end
    for t, (possible, resampled) in enumerate(learner.log):
        want = goal_posterior_action_probs(possible, h.observations[:, t].long(), env.size)
        assert torch.allclose(ref[:, t], want, atol=1e-6), t
        # where the learner drew a new target, its recorded distribution is the reference's
        mixed = 0.7 * ref[resampled, t] + 0.3 / 5
        assert torch.allclose(h.extras["action_probs"][resampled, t], mixed, atol=1e-6)


@pytest.mark.parametrize("env_name", ["bernoulli_bandit", "gaussian_bandit"])
def test_bandit_reference_is_thompsons_own_distribution(env_name):
    env = make_env(env_name, num_arms=4)
    tasks = env.sample_tasks(32, torch.Generator().manual_seed(9))
    h = rollout(env, make_learner("thompson", env), tasks, 80,
                torch.Generator().manual_seed(10), torch.Generator().manual_seed(11),
                extras=("action_probs",))
    if env_name == "bernoulli_bandit":
        ref = bandit_reference_probs(h.actions, h.rewards, 4)
    else:
        mean, std = env.prior
        ref = bandit_reference_probs(h.actions, h.rewards, 4, "gaussian", prior_mean=mean,
                                     prior_std=std, noise_std=env.noise_std)
    assert ref.shape == (32, 80, 4) and ref.dtype == torch.float32
    assert torch.allclose(ref, h.extras["action_probs"], atol=1e-6)
    assert torch.allclose(ref[:, 0], torch.full((32, 4), 0.25))  # nothing seen yet
    with pytest.raises(IclRlError, match="kind must be"):
        bandit_reference_probs(h.actions, h.rewards, 4, "poisson")
    if env_name == "gaussian_bandit":
        with pytest.raises(IclRlError, match="0 / 1 rewards"):
            bandit_reference_probs(h.actions, h.rewards, 4)


def test_bayes_optimal_reference_along_a_history():
    env = make_env("bernoulli_bandit", num_arms=2)
    tasks = env.sample_tasks(16, torch.Generator().manual_seed(12))
    h = rollout(env, make_learner("thompson", env), tasks, 30,
                torch.Generator().manual_seed(13), torch.Generator().manual_seed(14))
    dp = BernoulliBayesOptimal(2, 30)
    ref = bayes_optimal_reference_probs(h.actions, h.rewards, dp)
    assert ref.shape == (16, 30, 2)
    assert torch.allclose(ref[:, 0], torch.full((16, 2), 0.5))
    # step t from the counts of steps < t, by hand
    a, r = h.actions[3].tolist(), h.rewards[3].tolist()
    s, f = np.zeros((30, 2), np.int64), np.zeros((30, 2), np.int64)
    for t in range(1, 30):
        s[t], f[t] = s[t - 1], f[t - 1]
        (s if r[t - 1] > 0 else f)[t, a[t - 1]] += 1
    assert torch.allclose(ref[3], torch.from_numpy(dp.action_probs(s, f)).float())
    gittins = bayes_optimal_reference_probs(h.actions, h.rewards, GittinsPolicy(2, 30))
    assert torch.allclose(gittins.sum(-1), torch.ones(16, 30))
    with pytest.raises(IclRlError, match="horizon 20"):
        bayes_optimal_reference_probs(h.actions, h.rewards, BernoulliBayesOptimal(2, 20))


def test_kl_and_total_variation():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    q = torch.tensor([[0.3, 0.3, 0.4], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    assert torch.allclose(kl_divergence(p[:1], p[:1]), torch.zeros(1), atol=1e-7)
    assert (kl_divergence(p, p) < 1e-5).all()  # zeros in q are clipped to eps
    kl = kl_divergence(p, q)
    assert torch.isfinite(kl).all() and (kl > 0).all()
    manual = (p[0] * (p[0] / q[0]).log()).sum()
    assert kl[0] == pytest.approx(float(manual), rel=1e-5)
    assert kl[1] > 10  # almost no mass on the taken action: large but finite
    tv = total_variation(p, q)
    assert torch.allclose(tv, torch.tensor([0.1, 1.0, 0.5]))
    assert torch.equal(total_variation(p, p), torch.zeros(3))
    assert torch.allclose(total_variation(q, p), tv)
    assert kl_divergence(p, q).shape == (3,) and total_variation(p[None], q[None]).shape == (1, 3)


def test_gittins_indices_known_values_and_order():
    # the classic tabulated values for a uniform prior
    assert gittins_indices(1.0, 1.0, 0.9) == pytest.approx(0.7029, abs=1e-4)
    assert gittins_indices(1.0, 1.0, 0.99) == pytest.approx(0.8699, abs=1e-4)
    s, f = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    idx = gittins_indices(1.0 + s, 1.0 + f, 0.9)
    assert idx.shape == (6, 6)
    assert (np.diff(idx, axis=0) > 0).all()  # more successes: higher
    assert (np.diff(idx, axis=1) < 0).all()  # more failures: lower
    assert (idx > (1.0 + s) / (2.0 + s + f)).all()  # above the posterior mean (exploration)
    # the grid method of GittinsPolicy agrees with the per-state calibration
    rough = GittinsPolicy(2, 12, discount=0.9, truncation=30, levels=64)
    exact = GittinsPolicy(2, 12, discount=0.9, truncation=30, tol=1e-9)
    assert exact.error < 1e-9 < rough.error < 1e-2
    for k in range(12):
        s = np.arange(k + 1)
        want = gittins_indices(1.0 + s, 1.0 + k - s, 0.9, truncation=11 + 30 - k)
        np.testing.assert_allclose(exact.table[s, k - s], want, atol=1e-9)
        assert (np.abs(rough.table[s, k - s] - want) <= rough.error + 1e-12).all()
    with pytest.raises(IclRlError, match="discount"):
        gittins_indices(1.0, 1.0, 1.0)


def test_gittins_policy_is_close_to_bayes_optimal():
    # 2 arms, 100 pulls: discount 1 - 1/H and calibration looking H pulls ahead (the defaults)
    best = BernoulliBayesOptimal(2, 100).value()
    gittins = expected_total_reward(GittinsPolicy(2, 100).action_probs, 2, 100)
    assert best * 0.995 <= gittins <= best + 1e-9


def test_prob_best_under_a_uniform_prior_matches_sampling():
    """P(best arm) for Gaussian rewards and U[0, 1] means (truncated-normal posteriors)
    against 200,000 posterior draws; unpulled arms keep the uniform prior."""
    from scipy.stats import truncnorm

    from icl_rl.bayes import prob_best_uniform_normal

    rng = np.random.default_rng(0)
    counts = np.array([[0, 3, 10, 1, 5], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0]], float)
    sums = counts * np.array([[0.5, 0.6, 0.55, 0.9, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5],
                              [0.0] * 5])
    p = prob_best_uniform_normal(counts, sums, 0.3, chunk=2)
    assert np.allclose(p.sum(-1), 1) and np.allclose(p[2], 0.2)
    for c, total, want in zip(counts, sums, p, strict=True):
        draws = []
        for n, x in zip(c, total, strict=True):
            if n == 0:
                draws.append(rng.uniform(0, 1, 200_000))
                continue
            m, sd = x / n, 0.3 / np.sqrt(n)
            draws.append(truncnorm.rvs(-m / sd, (1 - m) / sd, loc=m, scale=sd, size=200_000,
                                       random_state=rng))
        sampled = np.bincount(np.argmax(np.stack(draws), 0), minlength=5) / 200_000
        assert np.abs(sampled - want).max() < 0.005
    with pytest.raises(IclRlError, match="must share a shape"):
        prob_best_uniform_normal(counts, sums[:, :4], 0.3)


def test_thompson_with_the_uniform_prior_samples_its_exact_posterior():
    """uniform_prior: each arm's draw is the truncated normal (moments against scipy, every
    draw in [0, 1], also where the sample mean lies outside it and where an arm is unpulled),
    and act() draws from action_probs (the exact prob_best_uniform_normal)."""
    from scipy.stats import truncnorm

    env = make_env("gaussian_bandit", num_arms=4, noise_std=0.3, means="uniform")
    learner = make_learner("thompson", env, uniform_prior=True)
    # pulls [5, 2, 0, 40] with sample means [0.6, 1.3, -, -0.2]: one mean above 1, one below 0
    counts, sums = torch.tensor([5.0, 2.0, 0.0, 40.0]), torch.tensor([3.0, 2.6, 0.0, -8.0])

    def at_state(n):
        learner.reset(n, torch.Generator().manual_seed(3))
        learner.counts, learner.sums = counts.expand(n, 4).clone(), sums.expand(n, 4).clone()
        return torch.zeros(n, 1)

    at_state(200_000)
    draws = learner.posterior_sample().double().numpy()
    assert draws.min() >= 0 and draws.max() <= 1
    for arm in range(4):
        if counts[arm] == 0:
            want = stats.uniform()
        else:
            m, sd = float(sums[arm] / counts[arm]), 0.3 / float(counts[arm]) ** 0.5
            want = truncnorm(-m / sd, (1 - m) / sd, loc=m, scale=sd)
        assert draws[:, arm].mean() == pytest.approx(want.mean(), abs=0.003)
        assert draws[:, arm].std() == pytest.approx(want.std(), rel=0.02)
    probs = learner.action_probs(at_state(4))
    assert_frequencies(learner.act(at_state(300_000)), probs[0])
    with pytest.raises(IclRlError, match="uniform_prior is for Gaussian bandits"):
        make_learner("thompson", make_env("bernoulli_bandit"), uniform_prior=True)
