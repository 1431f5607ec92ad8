"""PPO source learner: it learns Dark Room, is deterministic per seed, keeps tasks independent,
computes GAE like a per-task loop, and refuses bad hyperparameters."""

from __future__ import annotations

import pytest
import torch

from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import PPO, make_learner
from icl_rl.rollout import rollout


def test_ppo_learns_dark_room(gen):
    """256 tasks, 100 episodes: from near-random to most of the oracle's return."""
    env = make_env("dark_room")
    tasks = env.sample_tasks(256, gen)
    steps = 100 * env.spec.episode_len
    returns = {}
    for name in ("ppo", "random"):
        h = rollout(env, make_learner(name, env), tasks, steps, torch.Generator().manual_seed(1),
                    torch.Generator().manual_seed(2), record_optimal=False)
        returns[name] = h.episode_returns().mean(0)  # [E]
    optimal = float(env.optimal_episode_return().mean())
    first, last = float(returns["ppo"][:10].mean()), float(returns["ppo"][-10:].mean())
    random = float(returns["random"].mean())
    assert first < 0.2 * optimal
    assert last > 0.8 * optimal
    assert last > 10 * first and last > 20 * random


def test_ppo_deterministic_per_seed(gen):
    env = make_env("dark_room")
    tasks = env.sample_tasks(16, gen)
    learner = make_learner("ppo", env, rollout_len=10)

    def run(seed):
        h = rollout(env, learner, tasks, 60, torch.Generator().manual_seed(0),
                    torch.Generator().manual_seed(seed), record_optimal=False)
        return h.actions, learner.logits.detach().clone(), learner.values.detach().clone()

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def _feed(learner, states, actions, rewards, dones, size):
    """Push fixed transitions [N, T] of cell indices through observe."""
    def obs(s):
        return torch.stack([s // size, s % size], dim=1).float()

    for t in range(states.shape[1] - 1):
        learner.observe(obs(states[:, t]), actions[:, t], rewards[:, t], obs(states[:, t + 1]),
                        dones[:, t])


@pytest.mark.parametrize("normalize", [False, True])
def test_ppo_tasks_update_independently(normalize):
    """The batched update equals one learner per task, and identical histories stay identical."""
    env = make_env("dark_room", size=5, episode_len=6)
    params = {"rollout_len": 8, "epochs": 3, "normalize_advantages": normalize}
    g = torch.Generator().manual_seed(0)
    n, steps = 5, 2 * 8 + 1  # two updates, so Adam's moments carry over
    states = torch.randint(0, env.num_states, (n, steps), generator=g)
    actions = torch.randint(0, env.spec.num_actions, (n, steps), generator=g)
    rewards = (torch.rand(n, steps, generator=g) < 0.3).float()
    dones = torch.zeros(n, steps, dtype=torch.bool)
    dones[:, 5::6] = True
    for x in (states, actions, rewards):
        x[4] = x[0]  # task 4 repeats task 0's history
    batched = make_learner("ppo", env, **params)
    batched.reset(n)
    _feed(batched, states, actions, rewards, dones, env.size)
    assert torch.equal(batched.logits[4], batched.logits[0])
    assert torch.equal(batched.values[4], batched.values[0])
    assert not torch.equal(batched.logits[1], torch.zeros_like(batched.logits[1]))
    for i in range(n):
        alone = make_learner("ppo", env, **params)
        alone.reset(1)
        _feed(alone, states[i:i + 1], actions[i:i + 1], rewards[i:i + 1], dones[i:i + 1],
              env.size)
        torch.testing.assert_close(batched.logits[i], alone.logits[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(batched.values[i], alone.values[0], rtol=0, atol=1e-6)


def test_ppo_gae_matches_per_task_loop():
    """Every step bootstraps from V(the state it led to), time limits too; the GAE sum stops
    at `done`."""
    env = make_env("dark_room", size=3, episode_len=4)
    gamma, lam, length, n = 0.8, 0.7, 6, 3
    learner = PPO(env, PPO.Params(gamma=gamma, lam=lam, rollout_len=length))
    learner.reset(n)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        learner.values.copy_(torch.randn(n, env.num_states, generator=g))
    learner.states = torch.randint(0, env.num_states, (n, length), generator=g)
    learner.rewards = torch.rand(n, length, generator=g)
    learner.dones = torch.zeros(n, length, dtype=torch.bool)
    learner.dones[0, 2] = learner.dones[1, length - 1] = True
    learner.next_states = torch.randint(0, env.num_states, (n, length), generator=g)
    adv, returns = learner.advantages()
    v = learner.values.detach().tolist()
    for i in range(n):
        running = 0.0
        for t in reversed(range(length)):
            nxt = int(learner.next_states[i, t])
            live = 0.0 if learner.dones[i, t] else 1.0
            s = int(learner.states[i, t])
            delta = float(learner.rewards[i, t]) + gamma * v[i][nxt] - v[i][s]
            running = delta + gamma * lam * live * running
            assert adv[i, t].item() == pytest.approx(running, abs=1e-5)
            assert returns[i, t].item() == pytest.approx(running + v[i][s], abs=1e-5)


def test_ppo_bad_params():
    env = make_env("dark_room")
    for bad in ({"lr": 0.0}, {"gamma": 1.5}, {"lam": -0.1}, {"clip": 0.0}, {"epochs": 0},
                {"epochs": 1.5}, {"rollout_len": 0}, {"entropy_coef": -1.0},
                {"value_coef": -1.0}):
        with pytest.raises(IclRlError, match="ppo: need"):
            make_learner("ppo", env, **bad)
    with pytest.raises(IclRlError, match="does not take sigma"):
        make_learner("ppo", env, sigma=1.0)
    with pytest.raises(IclRlError, match="needs a gridworld"):
        make_learner("ppo", make_env("bernoulli_bandit"))
