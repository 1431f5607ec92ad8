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
