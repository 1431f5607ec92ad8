"""Gymnasium wrappers pass Gymnasium's checker; a trained model acts through the adapter."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from icl_rl import gym as icl_gym
from icl_rl.errors import IclRlError
from icl_rl.models import ADConfig, ADModel


@pytest.mark.parametrize("env_id", sorted(icl_gym.ENV_IDS))
def test_check_env_passes(env_id):
    env = icl_gym.make(env_id)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    task = info["task"].copy()
    steps = 0
    truncated = False
    while not truncated:
        obs, r, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and env.observation_space.contains(obs)
        steps += 1
    assert steps == env.horizon
    _, info = env.reset()
    assert np.array_equal(info["task"], task)  # same task: a history is many episodes of it
    _, info = env.reset(options={"new_task": True})


@pytest.mark.parametrize("env_id", sorted(icl_gym.ENV_IDS))
def test_registered_with_gymnasium(env_id):
    env = gymnasium.make(f"icl_rl/{env_id}")
    assert isinstance(env.unwrapped, icl_gym.TaskEnv)
    check_env(env.unwrapped, skip_render_check=True)  # the raw env, as Gymnasium advises
    obs, _ = env.reset(seed=0)  # and through make's wrappers (the passive checker)
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())
    vec = gymnasium.make_vec(f"icl_rl/{env_id}", num_envs=4)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, *env.observation_space.shape)
    _, r, term, trunc, _ = vec.step(vec.action_space.sample())
    assert r.shape == (4,) and not term.any()


def test_gymnasium_make_passes_task_and_params():
    env = gymnasium.make("icl_rl/DarkRoom-v0", task=[4, 5])
    env.reset(seed=0)
    obs, r, _, _, _ = env.step(1)
    assert obs.tolist() == [4.0, 5.0] and r == 1.0
    assert gymnasium.make("icl_rl/BernoulliBandit-v0", num_arms=3).action_space.n == 3
    icl_gym.register_envs()  # idempotent: no second registration, no warning


def test_gymnasium_make_in_a_fresh_process():
    # Gymnasium >= 1.0 loads no plugin entry points; its "module:id" form imports us.
    code = ("import gymnasium\n"
            "env = gymnasium.make('icl_rl.gym:icl_rl/DarkRoom-v0')\n"
            "print(env.reset(seed=0)[0].shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(2,)"


def test_dark_room_task_and_vector_env():
    env = icl_gym.make("DarkRoom-v0", task=[4, 5])
    env.reset(seed=0)
    obs, r, _, _, info = env.step(1)  # up from the centre (4, 4) onto the goal
    assert obs.tolist() == [4.0, 5.0] and r == 1.0 and info["optimal_action"] == 0
    vec = icl_gym.make_vec("DarkRoom-v0", tasks=[[0, 0], [8, 8], [4, 4]])
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (3, 2)
    obs, r, term, trunc, _ = vec.step(np.array([0, 0, 0]))
    assert r.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(IclRlError, match="unknown env id"):
        icl_gym.make("LightRoom-v0")
    with pytest.raises(IclRlError, match="task must have 2 values"):
        icl_gym.make("DarkRoom-v0", task=[1, 2, 3])


def test_model_acts_through_the_adapter():
    torch.manual_seed(0)
    model = ADModel(ADConfig(obs_dim=1, num_actions=3, hidden_size=16, num_layers=1,
                             num_heads=2, max_context=8))
    vec = icl_gym.make_vec("BernoulliBandit-v0", num_envs=4, num_arms=3)
    policy = icl_gym.ModelAdapter(model, seed=1)
    obs, _ = vec.reset(seed=0)
    for _ in range(20):  # past the context: the window slides
        action = policy.act(obs)
        assert action.shape == (4,) and ((action >= 0) & (action < 3)).all()
        obs, r, term, trunc, _ = vec.step(action)
        policy.observe(action, r, term, trunc)
    single = icl_gym.make("BernoulliBandit-v0", num_arms=3)
    o, _ = single.reset(seed=0)
    policy.reset()
    a = policy.act(o)
    assert isinstance(a, int) and 0 <= a < 3
