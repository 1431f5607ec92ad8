"""The metric registry: metrics apply by env capability, compute from a History, and everything
that shows results (report.md, results.json, the model card, a sweep summary) iterates over it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard

import pipeline.sweep as sweep
from eval.metrics import (
    Column,
    Context,
    Metric,
    compute_metrics,
    metrics_for,
    metrics_of,
    register_metric,
    registered_metrics,
    unregister_metric,
)
from eval.report import agents_table, report
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.model_card import add_evaluation, write_model_card
from icl_rl.models import ADConfig
from icl_rl.rollout import History
from pipeline.sweep import SweepConfig
from tests.test_sweep import BASE


def first_action_share(h: History, ctx: Context) -> dict:
    """Share of steps on which the agent took action 0."""
    return {"first_action_share": float((h.actions == 0).float().mean())}


TOY = Metric("first_action_share", first_action_share,
             columns=(Column("steps with action 0", ("first_action_share",),
                             lambda a, k: f"{a['first_action_share']:.1%}"),),
             summary=("first_action_share",))


@pytest.fixture
def toy_metric():
    register_metric(TOY)
    yield TOY
    unregister_metric(TOY.name)


def names(metrics) -> list[str]:
    return [m.name for m in metrics]


def test_registry_refuses_duplicates_and_cleans_up(toy_metric):
    with pytest.raises(IclRlError, match="already registered"):
        register_metric(TOY)
    with pytest.raises(IclRlError, match="expected an eval.metrics.Metric"):
        register_metric(first_action_share)
    assert registered_metrics()[-1] is TOY  # registered last, its column comes last
    with pytest.raises(IclRlError, match="no metric named 'nope'"):
        unregister_metric("nope")


def test_metrics_apply_by_capability_not_class():
    bandit = names(metrics_for(make_env("bernoulli_bandit")))
    room = names(metrics_for(make_env("dark_room")))
    assert "cumulative_regret" in bandit and "search_exploit" not in bandit
    assert "search_exploit" in room and "episodes_to_80pct_oracle" in room
    assert "cumulative_regret" not in room
    # any object with the capabilities gets the metrics that need them
    both = SimpleNamespace(has_expected_rewards=True, is_episodic=True, has_finite_tasks=False)
    assert {"cumulative_regret", "search_exploit"} <= set(names(metrics_for(both)))
    assert "policy_divergence" not in names(metrics_for(both))  # no posterior capability
    exact = SimpleNamespace(has_expected_rewards=True, is_episodic=False, has_finite_tasks=False,
                            has_tractable_posterior=True)
    assert "policy_divergence" in names(metrics_for(exact))


def test_bandit_metrics_on_a_hand_made_history():
    """Two tasks, 2 arms (means 0.2, 0.8), four pulls: returns, improvement and its CI, the
    oracle fraction and the cumulative regret, by hand."""
    env = make_env("bernoulli_bandit", num_arms=2)
    tasks = torch.tensor([[0.2, 0.8], [0.2, 0.8]])
    actions = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    rewards = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.float32)
    h = History(torch.zeros(2, 4, 1), actions, rewards, torch.ones(2, 4, dtype=torch.bool),
                tasks, expected_rewards=tasks[0][actions])
    ctx = Context(env, np.array([0.8, 0.8]), k=1, episodes=4)
    res = compute_metrics(h, ctx, metrics_for(env))
    assert res["episode_return_mean"] == pytest.approx([0, 0.5, 1, 0.5])
    assert res["first_k_return"] == 0 and res["last_k_return"] == 0.5
    assert res["improvement"] == 0.5
    assert res["improvement_ci95"] == pytest.approx(1.96 * np.std([1, 0], ddof=1) / np.sqrt(2))
    assert res["fraction_of_oracle_last_k"] == pytest.approx(0.5 / 0.8)
    # regret per pull 0.6 for arm 0, 0 for arm 1: task 0 0.6, 1.2, 1.2, 1.2; task 1 0.6 then 0.6
    assert res["cumulative_regret_mean"] == pytest.approx([0.6, 0.9, 0.9, 0.9])
    assert res["final_regret"] == pytest.approx(0.9)
    assert "episodes_to_80pct_oracle" not in res and "rewarded_by_episode" not in res
    results = {"improvement_k": 1, "agents": {"model": res, "source": {**res,
                                                                       "final_regret": 0.45}},
               "metrics": names(metrics_for(env))}
    table = agents_table(results)
    assert "| model | 0.000 | 0.500 | +0.500 ± 0.980 | 62.5% | 0.90 ± 0.59 |" in table
    assert "- model / source: 2.00x" in table


def test_episodes_to_80pct_on_a_hand_made_history():
    """Dark Room style: two-step episodes; the mean return reaches 80% of the oracle's in the
    third episode."""
    rewards = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.float32)
    dones = (torch.arange(6) % 2 == 1).expand(2, 6)
    h = History(torch.zeros(2, 6, 2), torch.zeros(2, 6, dtype=torch.long), rewards, dones,
                torch.zeros(2, 2))
    env = make_env("dark_room")
    res = compute_metrics(h, Context(env, np.array([2.0, 2.0]), 1, 3), metrics_for(env))
    assert res["episode_return_mean"] == [0.0, 0.5, 2.0]
    assert res["episodes_to_80pct_oracle"] == 3
    assert res["rewarded_by_episode"] == [0.0, 0.5, 1.0]


def test_a_metric_without_its_extras_is_left_out():
    def mean_prob(h, ctx):
        return {"mean_p0": float(h.extras["action_probs"][..., 0].mean())}

    probs = Metric("mean_p0", mean_prob, needs=frozenset({"action_probs"}))
    h = History(torch.zeros(1, 2, 1), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2),
                torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2))
    ctx = Context(make_env("bernoulli_bandit"), np.ones(1), 1, 2)
    assert compute_metrics(h, ctx, [probs]) == {}
    h.extras["action_probs"] = torch.full((1, 2, 2), 0.25)
    assert compute_metrics(h, ctx, [probs]) == {"mean_p0": 0.25}


def test_a_registered_metric_reaches_report_results_card_and_sweep(toy_metric, tmp_path):
    """One registration, no other change: the toy metric is computed, tabulated in report.md,
    stored in results.json, put in the model card and in the sweep summary."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), **BASE,
                                    "variants": {"full": {}}}))
    summary = sweep.main(SweepConfig(sweep=str(path)))
    out = tmp_path / "out"
    results = json.loads((out / "full/eval/results.json").read_text())
    assert "first_action_share" in results["metrics"]
    share = results["agents"]["model"]["first_action_share"]
    assert 0 <= share <= 1 and names(metrics_of(results))[-1] == "first_action_share"
    cell = f"{share:.1%}"
    report_md = (out / "full/eval/report.md").read_text()
    assert "| steps with action 0 |" in report_md and f"| {cell} |" in report_md
    card = (out / "full/run/model/README.md").read_text()
    assert "| steps with action 0 |" in card and f"| {cell} |" in card
    assert summary["variants"]["full"]["agents"]["model"]["first_action_share"] == share
    saved = json.loads((out / "summary.json").read_text())
    assert saved["software"]["torch"] == torch.__version__
    assert saved["variants"]["full"]["agents"]["source"]["first_action_share"] >= 0
    table = (out / "summary.md").read_text()
    assert "steps with action 0 |" in table and f"| {cell} |" in table


def test_model_card_header_body_and_evaluation_section(tmp_path):
    mc = ADConfig(obs_dim=1, num_actions=3, hidden_size=32, num_layers=2, num_heads=2,
                  env_name="bernoulli_bandit", env_params={"num_arms": 3}, max_context=24,
                  training={"dataset": "me/ucb3", "learner": {"name": "ucb", "params": {}},
                            "steps": 6, "context": 24, "target": "actions"})  # older name
    train_config = {"dataset": "me/ucb3", "target": "actions", "lr": 0.001, "progress": False}
    metrics = [{"step": 6, "eval/loss": 0.4, "eval/accuracy": 0.7}]
    write_model_card(tmp_path, mc, train_config, metrics, 6)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: icl-rl\ntags:\n- reinforcement-learning\n")
    assert "datasets:\n- me/ucb3\n---\n\n# Algorithm Distillation model for `bernoulli" in text
    assert "A 2-layer, 32-wide decoder" in text and "`ucb` in `me/ucb3` (6 steps" in text
    assert "accuracy 70.0% (step 6)" in text and "| lr | 0.001 |" in text
    assert "| progress |" not in text
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "icl-rl" and card.data.datasets == ["me/ucb3"]

    results = {"num_tasks": 4, "tasks_from": "somewhere", "episodes": 3}
    for value in ("first", "second"):  # put, then replace
        assert add_evaluation(tmp_path, results, f"| agent | x |\n|---|---|\n| model | {value} |")
    text = (tmp_path / "README.md").read_text()
    assert text.count("## In-context evaluation") == 1 and "| model | second |" in text
    assert "4 tasks (somewhere), 3 episodes each:" in text
    assert text.startswith("---\nlibrary_name: icl-rl") and "## Training configuration" in text
    assert add_evaluation(tmp_path / "nothing", results, "") is None  # no local card: no-op


def test_report_of_older_results_uses_the_envs_metrics():
    """results.json written before the `metrics` key: the env's applicable metrics."""
    agent = {"first_k_return": 0.1, "last_k_return": 0.9, "improvement": 0.8,
             "improvement_ci95": 0.1, "fraction_of_oracle_last_k": 0.9,
             "episodes_to_80pct_oracle": None}
    results = {"improvement_k": 1, "model": "m", "env": {"name": "dark_room", "params": {}},
               "source_learner": None, "num_tasks": 2, "tasks_from": "x", "episodes": 4,
               "episode_len": 20, "window": 200, "action_selection": "sampled",
               "agents": {"model": agent}}
    text = report(results)
    assert "| model | 0.100 | 0.900 | +0.800 ± 0.100 | 90.0% | not reached |  |  |" in text
    assert "cumulative regret" not in text and "The last two columns" in text


def test_optional_columns_show_only_where_some_agent_has_numbers():
    """TV to the Bayes-optimal policy exists only on Bernoulli bandits whose dynamic program
    fits: elsewhere its column is left out, while a non-optional empty column stays."""
    base = {"first_k_return": 0.1, "last_k_return": 0.9, "improvement": 0.8,
            "improvement_ci95": 0.1, "fraction_of_oracle_last_k": 0.9,
            "episodes_to_80pct_oracle": None, "kl_to_ps": 0.5, "kl_to_ps_ci95": 0.1,
            "tv_to_ps": 0.2}
    results = {"improvement_k": 1, "model": "m", "env": {"name": "dark_room", "params": {}},
               "source_learner": None, "num_tasks": 2, "tasks_from": "x", "episodes": 4,
               "episode_len": 20, "window": 200, "action_selection": "sampled",
               "metrics": ["first_last_k_return", "improvement", "search_exploit",
                           "policy_divergence"],
               "agents": {"model": dict(base)}}
    text = report(results)
    assert "TV to posterior sampling" in text and "TV to Bayes-optimal" not in text
    assert "| TV to the source's policy" not in text
    assert "| tasks rewarded in first 1 ep. |" in text  # not optional: shown, empty
    results["agents"]["other"] = dict(base, tv_to_bayes_optimal=0.3)
    text = report(results)
    assert "| TV to Bayes-optimal |" in text and "| 0.300 |" in text
