"""Belief probes: the posterior targets, the cross-validated scores and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval.probe import ProbeConfig, probe_scores, targets_for
from eval.probe import main as probe
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.models import build_model
from icl_rl.rollout import rollout


def histories(env, learner: str, n: int, steps: int):
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(0))
    return rollout(env, make_learner(learner, env), tasks, steps,
                   env_generator=torch.Generator().manual_seed(1),
                   agent_generator=torch.Generator().manual_seed(2))


def test_bandit_targets_are_the_posterior_before_each_step():
    env = make_env("bernoulli_bandit", num_arms=3)
    h = histories(env, "thompson", 4, 30)
    keep = np.array([0, 7, 29])
    t = targets_for(env, h, keep)
    mean = t["posterior_mean"][0]
    for i in range(4):
        for j, s in enumerate(keep):
            a, r = h.actions[i, :s].numpy(), h.rewards[i, :s].numpy()
            for arm in range(3):
                wins, pulls = r[a == arm].sum(), (a == arm).sum()
                assert mean[i, j, arm] == pytest.approx((1 + wins) / (2 + pulls))
    entropy = t["best_arm_entropy"][0]
    assert entropy[:, 0, 0] == pytest.approx(np.log(3), abs=1e-4)  # nothing seen: uniform
    assert (entropy[:, 2, 0] < entropy[:, 0, 0]).all()
    assert np.allclose(t["true_means"][0][:, 1], h.tasks.numpy())


def test_dark_room_goal_posterior():
    env = make_env("dark_room")
    h = histories(env, "posterior_sampling", 6, 200)
    keep = np.arange(0, 200, 10)
    t = targets_for(env, h, keep)
    post, found = t["goal_posterior"][0], t["goal_found"][0][..., 0]
    assert np.allclose(post.sum(-1), 1)
    goal = (h.tasks[:, 0] * 9 + h.tasks[:, 1]).long().numpy()
    for i in range(6):
        for j, s in enumerate(keep):
            before = h.rewards[i, :s].sum() > 0
            assert found[i, j] == int(before)
            assert post[i, j, goal[i]] > 0  # the true goal is never ruled out
            if before:
                assert post[i, j, goal[i]] == 1
    assert found[:, -1].all() and not found[:, 0].any()  # the searcher finds every goal


@pytest.mark.parametrize(("env_name", "cells"), [("dark_key_to_door", ("key", "door")),
                                                  ("dark_maze", ("goal",))])
def test_key_door_and_maze_posteriors(env_name, cells):
    env = make_env(env_name, size=5, episode_len=24)
    h = histories(env, "posterior_sampling", 8, 240)
    keep = np.arange(0, 240, 8)
    t = targets_for(env, h, keep)
    assert set(t) == {f"{p}{c}{q}" for c in cells
                      for p, q in (("", "_posterior"), ("", "_found"), ("true_", ""))}
    for i, c in enumerate(cells):
        post, found = t[f"{c}_posterior"][0], t[f"{c}_found"][0][..., 0]
        xy = h.tasks[:, 2 * i:2 * i + 2].long()
        true = (xy[:, 0] * 5 + xy[:, 1]).numpy()
        assert np.allclose(post.sum(-1), 1)
        on_true = post[np.arange(8), :, true]  # [tasks, kept]
        assert (on_true > 0).all()  # the true cell is never ruled out
        assert np.allclose(on_true[found == 1], 1)  # and is certain once found
        assert found[:, -1].all() and not found[:, 0].any()
        assert np.allclose(t[f"true_{c}"][0][:, 0], xy.numpy())
    if env_name == "dark_key_to_door":  # the door is found after the key
        assert (t["door_found"][0] <= t["key_found"][0]).all()


def test_probe_scores_separate_signal_from_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 10, 2))
    signal = np.concatenate([y + 0.1 * rng.normal(size=y.shape), rng.normal(size=(40, 10, 6))],
                            axis=-1)
    noise = rng.normal(size=(40, 10, 8))
    good = probe_scores(signal, y, "regression", folds=4, buckets=2, seed=0)
    bad = probe_scores(noise, y, "regression", folds=4, buckets=2, seed=0)
    assert good["score"] > 0.9 and bad["score"] < 0.1
    assert good["score"] - good["ci95"] > bad["score"] + bad["ci95"]
    labels = (y[..., :1] > 0).astype(int)
    acc = probe_scores(signal, labels, "classification", folds=4, buckets=2, seed=0)
    assert acc["score"] > 0.9 and len(acc["buckets"]) == 2


def test_probe_command_writes_scores_per_layer_with_controls(tmp_path):
    meta = {"name": "bernoulli_bandit", "params": {"num_arms": 3},
            "spec": {"obs_dim": 1, "num_actions": 3}}
    torch.manual_seed(0)
    model = build_model("ad", meta, {"hidden_size": 16, "num_layers": 2, "num_heads": 2},
                        max_context=20)
    model.save_pretrained(tmp_path / "m")
    res = probe(ProbeConfig(model=str(tmp_path / "m"), out=str(tmp_path / "p"), num_tasks=12,
                            steps_per_task=8, batch_size=5, folds=3, buckets=2,
                            progress=False))
    assert res["layers"] == 2 and len(res["kept_steps"]) == 8
    assert set(res["targets"]) == {"posterior_mean", "best_arm_entropy", "true_means"}
    for t in res["targets"].values():
        assert all(len(t[w]) == 2 for w in ("trained", "untrained", "shuffled"))
    assert res["memory_bytes"] == 2 * 12 * 8 * 2 * 16 * 4
    saved = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert saved["targets"].keys() == res["targets"].keys()
    assert "| layer | trained model" in (tmp_path / "p" / "probe.md").read_text()
    assert (tmp_path / "p" / "probe.png").exists()
    with pytest.raises(IclRlError, match="--folds must be >= 2"):
        probe(ProbeConfig(model=str(tmp_path / "m"), folds=1))


@pytest.mark.parametrize("dynamics", ["drift", "switch"])
def test_probe_on_the_two_step_task(tmp_path, dynamics):
    """The two-step task's targets: the Bayesian observer's payoff probabilities (and, with
    switching, P(state 1 is good)) and the true, moving probabilities before each step."""
    env = make_env("two_step", dynamics=dynamics)
    meta = {"name": "two_step", "params": env.params(),
            "spec": {"obs_dim": 1, "num_actions": 2, "episode_len": 2, "obs_levels": [3]}}
    torch.manual_seed(0)
    model = build_model("ad", meta, {"hidden_size": 16, "num_layers": 2, "num_heads": 2},
                        max_context=40)
    model.save_pretrained(tmp_path / "m")
    res = probe(ProbeConfig(model=str(tmp_path / "m"), out=str(tmp_path / "p"), num_tasks=12,
                            episodes=20, steps_per_task=10, batch_size=5, folds=3, buckets=2,
                            progress=False))
    want = {"reward_prob_posterior", "true_reward_probs"}
    assert set(res["targets"]) == want | ({"good_state_posterior"} if dynamics == "switch"
                                          else set())
    h = histories(env, "two_step_mb", 8, 40)
    keep = np.array([0, 1, 20, 39])
    t = targets_for(env, h, keep)
    post = t["reward_prob_posterior"][0]
    assert post.shape == (8, 4, 4) and np.allclose(post[:, 0], 0.5, atol=1e-3)  # the prior
    assert np.allclose(post[:, 0], post[:, 1])  # a stage-1 transition says nothing
    assert not np.allclose(post[:, 3], 0.5, atol=1e-3)
