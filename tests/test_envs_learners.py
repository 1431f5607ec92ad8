"""Contract tests over every registered env and learner, reference equivalence, known results."""

from __future__ import annotations

import pytest
import torch

from icl_rl.envs import ENVS, Bandit, make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import LEARNERS, compatible_pairs, make_learner
from icl_rl.rollout import rollout
from tests.reference import reference_bandit_run

BANDIT_LEARNERS = ["random", "epsilon_greedy", "ucb", "thompson"]


PAIRS = compatible_pairs()


def test_every_env_has_a_learner():
    assert {e for e, _ in PAIRS} == set(ENVS)
    assert {lr for _, lr in PAIRS} == set(LEARNERS)


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_env_contract(env_name, gen):
    env = make_env(env_name)
    spec = env.spec
    tasks = env.sample_tasks(16, gen)
    assert tasks.shape == (16, spec.task_dim) and tasks.dtype == torch.float32
    obs = env.reset(tasks.clone(), torch.Generator().manual_seed(0))
    assert obs.shape == (16, spec.obs_dim) and obs.dtype == torch.float32
    for t in range(3 * spec.episode_len):
        opt = env.optimal_action()
        assert opt.shape == (16,) and opt.dtype == torch.long
        assert ((opt >= 0) & (opt < spec.num_actions)).all()
        action = torch.randint(0, spec.num_actions, (16,), generator=gen)
        obs, reward, done = env.step(action)
        assert obs.shape == (16, spec.obs_dim)
        assert reward.shape == (16,) and reward.dtype == torch.float32
        assert done.shape == (16,) and done.dtype == torch.bool
        assert bool(done.all()) == ((t + 1) % spec.episode_len == 0)
        assert bool(done.any()) == bool(done.all())  # lockstep episodes
        assert ((reward >= spec.reward_low) & (reward <= spec.reward_high)).all()
        assert torch.equal(env.tasks, tasks)  # the task is never resampled within a history
    assert env.optimal_episode_return().shape == (16,)


def test_sample_tasks_deterministic_per_seed():
    for name in ENVS:
        env = make_env(name)
        a = env.sample_tasks(8, torch.Generator().manual_seed(5))
        b = env.sample_tasks(8, torch.Generator().manual_seed(5))
        c = env.sample_tasks(8, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("env_name", "learner_name"), PAIRS)
def test_learner_contract(env_name, learner_name, gen):
    env = make_env(env_name)
    learner = make_learner(learner_name, env)
    tasks = env.sample_tasks(32, gen)
    steps = 4 * env.spec.episode_len + 3

    def run(seed):
        return rollout(env, learner, tasks, steps, torch.Generator().manual_seed(seed),
                       torch.Generator().manual_seed(seed + 1))

    h = run(0)
    assert h.observations.shape == (32, steps, env.spec.obs_dim)
    assert h.actions.shape == h.rewards.shape == h.dones.shape == (32, steps)
    assert h.actions.dtype == torch.long and h.rewards.dtype == torch.float32
    assert h.dones.dtype == torch.bool and h.optimal_actions.shape == (32, steps)
    assert ((h.actions >= 0) & (h.actions < env.spec.num_actions)).all()
    assert torch.isfinite(h.rewards).all()
    assert torch.equal(h.tasks, tasks) and torch.equal(env.tasks, tasks)
    assert int(h.dones[0].sum()) == steps // env.spec.episode_len
    h2 = run(0)
    for field in ("observations", "actions", "rewards", "dones", "optimal_actions"):
        assert torch.equal(getattr(h, field), getattr(h2, field)), field


@pytest.mark.parametrize("env_kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("learner_name", BANDIT_LEARNERS)
def test_vectorised_bandit_learner_matches_reference(env_kind, learner_name):
    noise = 0.5
    env = (make_env("bernoulli_bandit", num_arms=4) if env_kind == "bernoulli"
           else make_env("gaussian_bandit", num_arms=4, noise_std=noise))
    params = {"c": 1.5} if learner_name == "ucb" else {}
    learner = make_learner(learner_name, env, **params)
    tasks = env.sample_tasks(9, torch.Generator().manual_seed(3))
    h = rollout(env, learner, tasks, 80, torch.Generator().manual_seed(11),
                torch.Generator().manual_seed(12))
    ref_actions, ref_rewards = reference_bandit_run(learner_name, params, env_kind, tasks, 80,
                                                    11, 12, noise_std=noise)
    assert h.actions.tolist() == ref_actions
    torch.testing.assert_close(h.rewards, torch.tensor(ref_rewards), rtol=0, atol=1e-5)


def test_known_regret_ordering():
    """5-arm Bernoulli, 2,000 tasks, 500 steps: Thompson < UCB1 << uniform random."""
    env = make_env("bernoulli_bandit", num_arms=5)
    tasks = env.sample_tasks(2000, torch.Generator().manual_seed(0))
    regret = {}
    for name in ("random", "ucb", "thompson"):
        h = rollout(env, make_learner(name, env), tasks, 500, torch.Generator().manual_seed(1),
                    torch.Generator().manual_seed(2))
        best = env.optimal_episode_return()[:, None]  # [N, 1]
        regret[name] = float((best - h.expected_rewards).sum(dim=1).mean())
    assert regret["ucb"] < 0.5 * regret["random"]
    assert regret["thompson"] < 0.25 * regret["random"]
    assert regret["thompson"] < regret["ucb"]


def test_bad_names_and_params():
    with pytest.raises(IclRlError, match="unknown env 'nope'"):
        make_env("nope")
    with pytest.raises(IclRlError, match="does not take size"):
        make_env("bernoulli_bandit", size=3)
    with pytest.raises(IclRlError, match="num_arms must be"):
        make_env("bernoulli_bandit", num_arms=1)
    env = make_env("bernoulli_bandit")
    with pytest.raises(IclRlError, match="unknown learner 'sarsa'"):
        make_learner("sarsa", env)
    with pytest.raises(IclRlError, match="does not take gamma"):
        make_learner("ucb", env, gamma=0.9)
    with pytest.raises(IclRlError, match="c must be >= 0"):
        make_learner("ucb", env, c=-1.0)
    with pytest.raises(IclRlError, match=r"tasks must have shape \[N, 5\]"):
        env.reset(torch.zeros(3, 4))
    assert isinstance(env, Bandit)
