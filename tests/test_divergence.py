"""Divergence from posterior sampling and the Bayes-optimal baseline, as eval computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.metrics import Context, policy_divergence
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.rollout import rollout


def run(env, learner, n=64, steps=150, **params):
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(0))
    return rollout(env, make_learner(learner, env, **params), tasks, steps,
                   extras=("action_probs",), env_generator=torch.Generator().manual_seed(1),
                   agent_generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("env_name", ["bernoulli_bandit", "gaussian_bandit"])
def test_posterior_sampling_is_zero_and_others_are_not(env_name):
    env = make_env(env_name, num_arms=5)
    ctx = Context(env, np.ones(64), 10, 150)
    div = {name: policy_divergence(run(env, name), ctx)
           for name in ("thompson", "random", "ucb", "greedy")}
    assert div["thompson"]["kl_to_ps"] < 0.01 and div["thompson"]["tv_to_ps"] < 0.01
    assert div["random"]["kl_to_ps"] > 0.5
    for name in ("random", "ucb", "greedy"):
        assert div[name]["kl_to_ps"] > 10 * div["thompson"]["kl_to_ps"] + 0.05, name
    assert len(div["ucb"]["kl_to_ps_curve"]) == 150
    # the source's policy replayed along an agent's own history (teacher forcing)
    with_source = Context(env, np.ones(64), 10, 150, source=make_learner("ucb", env))
    assert policy_divergence(run(env, "ucb"), with_source)["tv_to_source"] < 1e-6
    assert policy_divergence(run(env, "thompson"), with_source)["tv_to_source"] > 0.1


def test_bayes_optimal_agent_and_its_divergence():
    env = make_env("bernoulli_bandit", num_arms=2)
    h = run(env, "bayes_optimal", steps=40, horizon=40)
    ctx = Context(env, np.ones(64), 4, 40)
    div = policy_divergence(h, ctx)
    assert div["tv_to_bayes_optimal"] < 1e-6  # it is the policy it is compared with
    ts = policy_divergence(run(env, "thompson", steps=40), ctx)
    assert ts["tv_to_bayes_optimal"] > 0.05
    # exact regret ordering on the same tasks and env noise: Bayes-optimal earns the most
    bo_return = float(h.expected_rewards.sum(1).mean())
    ts_return = float(run(env, "thompson", steps=40).expected_rewards.sum(1).mean())
    assert bo_return > ts_return - 0.2
    wide = make_learner("bayes_optimal", make_env("bernoulli_bandit", num_arms=5), horizon=200)
    assert not wide.exact  # past the dynamic program's budget: the Gittins approximation
    with pytest.raises(IclRlError, match="does not fit|Gittins"):
        make_learner("bayes_optimal", make_env("bernoulli_bandit", num_arms=5), horizon=200,
                     method="exact")
    with pytest.raises(IclRlError, match="bernoulli_bandit"):
        make_learner("bayes_optimal", make_env("gaussian_bandit"))


def test_dark_room_posterior_sampler_is_its_own_reference():
    env = make_env("dark_room")
    tasks = env.task_set()[torch.arange(0, 81, 3)]
    h = rollout(env, make_learner("posterior_sampling", env), tasks, 200,
                extras=("action_probs",), env_generator=torch.Generator().manual_seed(1),
                agent_generator=torch.Generator().manual_seed(2))
    ctx = Context(env, np.ones(len(tasks)), 2, 10)
    ps = policy_divergence(h, ctx)
    rnd = policy_divergence(run(env, "random", n=27, steps=200), ctx)
    assert rnd["kl_to_ps"] > 5 * ps["kl_to_ps"] + 0.1
