"""The two-step task: the env's transitions and payoffs, the oracle, the reference learners'
signatures, and the stay regression recovering known coefficients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.two_step import stay_regression, trials, two_step_analysis
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.rollout import rollout


def run(learner: str, n: int = 128, trials_: int = 100, seed: int = 0, **env_kw):
    env = make_env("two_step", **env_kw)
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(seed))
    agent = make_learner(learner, env)
    return env, rollout(env, agent, tasks, 2 * trials_,
                        env_generator=torch.Generator().manual_seed(seed + 1),
                        agent_generator=torch.Generator().manual_seed(seed + 2))


def analysis(h):
    return two_step_analysis(h.actions.numpy(), h.observations[..., 0].long().numpy(),
                             h.rewards.numpy())


def test_transitions_payoffs_and_drift():
    env, h = run("random", n=512, trials_=200)
    t = trials(h.actions.numpy(), h.observations[..., 0].long().numpy(), h.rewards.numpy())
    assert abs(t["common"].mean() - 0.7) < 0.01  # common transitions at 0.7
    states = h.observations[:, 1::2, 0]
    assert set(states.unique().tolist()) == {1.0, 2.0}
    assert (h.observations[:, 0::2, 0] == 0).all()  # every trial starts at stage 1
    assert (h.rewards[:, 0::2] == 0).all() and set(h.rewards.unique().tolist()) <= {0.0, 1.0}
    assert (env.p >= 0.25).all() and (env.p <= 0.75).all()  # reflected into [low, high]
    assert (env.p - h.tasks.view(-1, 2, 2)).abs().mean() > 0.05  # and they moved


def test_switch_dynamics_keep_one_good_state():
    env, h = run("random", n=256, trials_=200, dynamics="switch")
    p = env.p.amax(dim=2)
    assert torch.allclose(p.sum(dim=1), torch.ones(256))
    assert ((p - 0.9).abs() < 1e-6).logical_or((p - 0.1).abs() < 1e-6).all()
    swapped = (env.p != h.tasks.view(-1, 2, 2)).any(dim=(1, 2)).float().mean()
    assert 0.5 < swapped < 1.0  # p(odd number of swaps in 200 trials at 0.025) ~ 0.5


def test_oracle_earns_its_expected_payoff():
    env = make_env("two_step")
    tasks = env.sample_tasks(4096, torch.Generator().manual_seed(0))
    env.reset(tasks, torch.Generator().manual_seed(1))
    expected = env.optimal_episode_return()
    _, r1, _ = env.step(env.optimal_action())
    _, r2, _ = env.step(env.optimal_action())
    assert (r1 == 0).all()
    assert abs(r2.mean() - expected.mean()) < 3 * r2.std() / 4096**0.5


def test_learner_signatures():
    """Model-free: reward effect > 0, interaction ~ 0. Model-based: interaction > 0, reward
    effect ~ 0. Random: neither. CIs exclude (or include) zero accordingly."""
    mf = analysis(run("two_step_mf")[1])
    mb = analysis(run("two_step_mb")[1])
    rnd = analysis(run("random")[1])

    def excludes_zero(r, key):
        return abs(r[key]) > r[key + "_ci95"]

    assert mf["model_free_index"] > 0.5 and excludes_zero(mf, "model_free_index")
    assert not excludes_zero(mf, "model_based_index") or abs(mf["model_based_index"]) < 0.1
    assert mb["model_based_index"] > 0.2 and excludes_zero(mb, "model_based_index")
    assert abs(mb["model_free_index"]) < 0.1
    assert abs(rnd["model_free_index"]) < 0.1 and abs(rnd["model_based_index"]) < 0.1
    # the model-based learner's stay pattern: rewarded common > rewarded rare
    assert mb["stay_rewarded_common"] > mb["stay_rewarded_rare"] + 0.1


def test_regression_recovers_known_coefficients():
    """Synthetic stay data drawn from the regression's own model."""
    g = np.random.default_rng(0)
    n, e = 400, 101
    reward = g.random((n, e)) < 0.5
    common = g.random((n, e)) < 0.7
    r, c = np.where(reward[:, :-1], 1, -1), np.where(common[:, :-1], 1, -1)
    true = {"intercept": 0.3, "reward": 0.8, "transition": -0.2, "reward_x_transition": 0.5}
    logit = true["intercept"] + true["reward"] * r + true["transition"] * c \
        + true["reward_x_transition"] * r * c
    stay = g.random((n, e - 1)) < 1 / (1 + np.exp(-logit))
    res = stay_regression({"reward": reward, "common": common, "stay": stay})
    for k, v in true.items():
        assert abs(res[f"b_{k}"] - v) < max(res[f"b_{k}_ci95"], 0.05), (k, res)


def test_always_staying_is_reported_not_crashed():
    n, e = 20, 50
    t = {"reward": np.ones((n, e), bool), "common": np.ones((n, e), bool),
         "stay": np.ones((n, e - 1), bool)}
    assert stay_regression(t)["b_reward"] is None


def test_bad_settings_and_learner_env_pairs():
    with pytest.raises(IclRlError, match="dynamics"):
        make_env("two_step", dynamics="jump")
    with pytest.raises(IclRlError, match="common"):
        make_env("two_step", common=0.3)
    with pytest.raises(IclRlError, match="needs the two_step env"):
        make_learner("two_step_mb", make_env("bernoulli_bandit"))
    with pytest.raises(IclRlError, match="lr"):
        make_learner("two_step_mf", make_env("two_step"), lr=0)


def test_switch_posterior_equals_enumerating_every_swap_path():
    """P(state 1 good) before each trial against the sum over all 2^K good-state paths."""
    import itertools

    from icl_rl.bayes import two_step_posteriors

    env, h = run("random", n=6, trials_=7, dynamics="switch", seed=3)
    got = two_step_posteriors(env, h.observations, h.actions, h.rewards)
    state = h.observations[:, 1::2, 0].long() - 1
    r = h.rewards[:, 1::2]
    hi, q = env.high_p, env.switch_prob
    for i in range(6):
        for j in range(7):  # belief before trial j: paths over trials 0..j, rewards 0..j-1
            num = den = 0.0
            for path in itertools.product((0, 1), repeat=j + 1):  # 0: state 1 good
                w = 0.5
                for m in range(j + 1):
                    if m:
                        w *= q if path[m] != path[m - 1] else 1 - q
                    if m < j:
                        pay = hi if int(state[i, m]) == path[m] else 1 - hi
                        w *= pay if r[i, m] > 0 else 1 - pay
                den += w
                num += w * (path[j] == 0)
            assert got["good_state"][i, 2 * j] == pytest.approx(num / den, abs=1e-12)
            assert got["good_state"][i, 2 * j + 1] == got["good_state"][i, 2 * j]
            mean_one = got["reward_prob_mean"][i, 2 * j, 0]
            assert mean_one == pytest.approx(num / den * hi + (1 - num / den) * (1 - hi))


def test_drift_posterior_filter():
    """Without drift each probability's posterior is the uniform prior on [low, high] times
    the Bernoulli likelihood (quadrature); with drift the grid kernel is the env's own move;
    and the filter tracks the moving probabilities better than the prior does."""
    from scipy.integrate import quad

    from icl_rl.bayes import _reflected_kernel, two_step_posteriors

    env, h = run("random", n=4, trials_=60, drift_sd=0.0, seed=5)
    got = two_step_posteriors(env, h.observations, h.actions, h.rewards)["reward_prob_mean"]
    # the belief before the last trial has seen every trial but that one
    arm = (2 * (h.observations[:, 1::2, 0].long() - 1) + h.actions[:, 1::2]).numpy()[:, :-1]
    r = h.rewards[:, 1::2].numpy()[:, :-1]
    for i in range(4):
        for a in range(4):
            s = int(((arm[i] == a) & (r[i] > 0)).sum())
            f = int(((arm[i] == a) & (r[i] == 0)).sum())
            z = quad(lambda p, s=s, f=f: p**s * (1 - p) ** f, env.low, env.high)[0]
            mean = quad(lambda p, s=s, f=f: p ** (s + 1) * (1 - p) ** f, env.low, env.high)[0]
            assert got[i, -1, a] == pytest.approx(mean / z, abs=1e-4)
    # the kernel against the env's reflected step, from a point near the edge
    env = make_env("two_step")
    grid = env.low + (np.arange(101) + 0.5) * 0.5 / 101
    kernel = _reflected_kernel(grid, env.drift_sd, env.low, env.high)
    start = grid[3]
    env.reset(torch.full((200_000, 4), start, dtype=torch.float32),
              torch.Generator().manual_seed(0))
    env._move()
    moved = env.p.reshape(-1).double().numpy()
    hist = np.histogram(moved, bins=np.linspace(env.low, env.high, 102))[0] / moved.size
    assert np.abs(hist - kernel[3]).max() < 0.01
    # with drift: closer to the true probabilities than the prior mean, on 256 tasks
    env = make_env("two_step")
    tasks = env.sample_tasks(256, torch.Generator().manual_seed(7))
    truth = []
    h = rollout(env, make_learner("random", env), tasks, 400,
                env_generator=torch.Generator().manual_seed(8),
                agent_generator=torch.Generator().manual_seed(9),
                on_step=lambda _t: truth.append(env.p.reshape(-1, 4).clone()))
    before = torch.stack([tasks] + truth[:-1], dim=1).numpy()  # p before each step
    post = two_step_posteriors(env, h.observations, h.actions, h.rewards)["reward_prob_mean"]
    static = two_step_posteriors(make_env("two_step", drift_sd=0.0), h.observations,
                                 h.actions, h.rewards)["reward_prob_mean"]  # drift ignored
    late = slice(200, None)

    def mse(estimate):
        return float(((estimate[:, late] - before[:, late]) ** 2).mean())

    assert mse(post) < 0.7 * mse(np.full_like(post, 0.5)) and mse(post) < 0.95 * mse(static)
    for sd in (0.0125, 0.05):  # the env's own drift (0.025) is the best model of it
        other = two_step_posteriors(make_env("two_step", drift_sd=sd), h.observations,
                                    h.actions, h.rewards)["reward_prob_mean"]
        assert mse(post) < mse(other)
