"""The model as an in-context agent, `icl-rl eval`, and `icl-rl demo`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.evaluate import EvalConfig, summarize
from eval.evaluate import main as evaluate
from eval.metrics import episodes_to
from eval.report import report
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.models import ADConfig, ADModel
from icl_rl.policy import ModelAgent
from icl_rl.rollout import History, rollout
from icl_rl.tasks import eval_tasks
from pipeline.demo import DemoConfig
from pipeline.demo import main as demo
from training.train import TrainConfig
from training.train import main as train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    data = generate(GenerateConfig(out=str(root / "data"), env="bernoulli_bandit", num_arms=4,
                                   learner="ucb", num_histories=300, steps=40, shard_size=150,
                                   heldout_fraction=0.2))
    run = train(TrainConfig(dataset=str(data), out=str(root / "run"), context=40,
                            model_kwargs={"hidden_size": 32, "num_layers": 2, "num_heads": 2},
                            batch_size=16,
                            max_steps=60, warmup_steps=5, eval_every=0, save_every=0,
                            lr=2e-3, progress=False))
    return data, run["model_dir"]


def small_model(window: int) -> ADModel:
    torch.manual_seed(0)
    return ADModel(ADConfig(obs_dim=1, num_actions=5, hidden_size=32, num_layers=3,
                            num_heads=4, max_context=window)).eval()


def greedy_rollout(model, tasks, steps, **agent_kw):
    """Greedy rollout on 5-arm bandits: (History, logits [N, T, A])."""
    env = make_env("bernoulli_bandit", num_arms=5)
    agent = ModelAgent(model, greedy=True, **agent_kw)
    logits = []
    h = rollout(env, agent, tasks, steps, torch.Generator().manual_seed(1),
                torch.Generator().manual_seed(2),
                on_step=lambda _t: logits.append(agent.last_logits))
    return h, torch.stack(logits, dim=1)


def test_sliding_window_cache_matches_recompute():
    """Same actions as recomputing the window: exactly before the first eviction, and all but
    a few after it (cached keys of deeper layers still carry evicted tokens' influence)."""
    w, steps = 16, 64
    model = small_model(w)
    tasks = make_env("bernoulli_bandit", num_arms=5).sample_tasks(
        64, torch.Generator().manual_seed(0))
    (hc, lc), (hf, lf) = (greedy_rollout(model, tasks, steps, window=w, use_cache=c)
                          for c in (True, False))
    assert (lc[:, :w] - lf[:, :w]).abs().max() < 1e-4
    assert torch.equal(hc.actions[:, :w], hf.actions[:, :w])
    agree = (hc.actions[:, w:] == hf.actions[:, w:]).float().mean()
    assert agree > 0.9, agree


def test_cpu_decoding_attention_equals_the_models_own():
    """Cached decoding through plain matmul attention (the CPU fast path) gives the logits of
    the model's own SDPA attention, and leaves the model's setting as it was."""
    w, steps = 16, 48
    model = small_model(w)
    tasks = make_env("bernoulli_bandit", num_arms=5).sample_tasks(
        32, torch.Generator().manual_seed(0))
    before = model.backbone.config._attn_implementation
    (_, fast), (_, own) = (greedy_rollout(model, tasks, steps, window=w, decode_attention=a)
                           for a in ("eager", None))
    assert (fast - own).abs().max() < 1e-5
    assert model.backbone.config._attn_implementation == before


def test_ten_times_the_context_with_flat_memory():
    w = 16
    model = small_model(w)
    env = make_env("bernoulli_bandit", num_arms=5)
    agent = ModelAgent(model, window=w)
    sizes = {}
    h = rollout(env, agent, env.sample_tasks(32, torch.Generator().manual_seed(0)), 10 * w,
                on_step=lambda t: sizes.setdefault(t, agent.cache_bytes()))
    assert h.actions.shape == (32, 10 * w)
    head_dim = 32 // 4
    full = 2 * 3 * 32 * 4 * w * head_dim * 4  # (k, v) x layers x tasks x heads x window x dim
    assert sizes[w - 1] == sizes[10 * w - 1] == full
    assert all(layer.get_seq_length() == w for layer in agent.state.cache.layers)


def test_eval_writes_report_and_beats_random(trained, tmp_path):
    data, model_dir = trained
    res = evaluate(EvalConfig(model=model_dir, dataset=str(data), out=str(tmp_path / "ev"),
                              num_tasks=128, episodes=40, progress=False))
    assert set(res["agents"]) == {"model", "source", "random", "oracle", "thompson"}
    for f in ("curves.png", "report.md", "results.json", "eval_config.json"):
        assert (tmp_path / "ev" / f).stat().st_size > 0
    a = res["agents"]
    assert len(a["model"]["episode_return_mean"]) == 40
    assert len(a["model"]["cumulative_regret_mean"]) == 40
    assert a["oracle"]["final_regret"] == 0.0
    assert a["model"]["final_regret"] < a["random"]["final_regret"]
    assert a["source"]["final_regret"] < a["random"]["final_regret"]
    report = (tmp_path / "ev/report.md").read_text()
    assert "| model |" in report and "cumulative regret" in report
    saved = json.loads((tmp_path / "ev/results.json").read_text())
    assert saved["num_tasks"] == 128
    # what it ran with, so a result that does not reproduce elsewhere can be traced
    assert saved["software"]["torch"] == torch.__version__
    assert saved["software"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_eval_bad_inputs(trained, tmp_path):
    data, model_dir = trained
    with pytest.raises(IclRlError, match="trained for bernoulli_bandit"):
        evaluate(EvalConfig(model=model_dir, env="gaussian_bandit", out=str(tmp_path / "e")))
    other = generate(GenerateConfig(out=str(tmp_path / "g"), env="gaussian_bandit", num_arms=4,
                                    learner="thompson", num_histories=20, steps=10,
                                    shard_size=20, heldout_fraction=0.5))
    with pytest.raises(IclRlError, match="gaussian_bandit data but the model"):
        evaluate(EvalConfig(model=model_dir, dataset=str(other), out=str(tmp_path / "e")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IclRlError, match="no config.json"):
        evaluate(EvalConfig(model=str(tmp_path / "empty"), out=str(tmp_path / "e")))
    with pytest.raises(IclRlError, match="--num-tasks must be a positive integer"):
        evaluate(EvalConfig(model=model_dir, num_tasks=0, out=str(tmp_path / "e")))
    with pytest.raises(IclRlError, match="change the spaces"):
        evaluate(EvalConfig(model=model_dir, env_kwargs='{"num_arms": 7}',
                            out=str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()
    r = subprocess.run([sys.executable, "-m", "eval", "--model", model_dir, "--num-tasks", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "icl-rl eval: error: --num-tasks must be a positive integer, got 0"]


def test_episodes_to_a_fraction_of_the_oracle():
    curve = np.array([0.1, 0.85, 0.7, 0.95])
    assert episodes_to(curve, 0.8) == 2 and episodes_to(curve, 0.9) == 4
    assert episodes_to(curve, 0.99) is None and episodes_to(curve, 0.0) is None
    agent = {"first_k_return": 0.1, "last_k_return": 0.9, "improvement": 0.8,
             "improvement_ci95": 0.1, "fraction_of_oracle_last_k": 0.9}
    results = {"improvement_k": 1, "model": "m", "env": {"name": "dark_room", "params": {}},
               "source_learner": None, "num_tasks": 2, "tasks_from": "x", "episodes": 4,
               "episode_len": 20, "window": 200, "action_selection": "sampled",
               "agents": {"model": {**agent, "episodes_to_80pct_oracle": 2},
                          "random": {**agent, "episodes_to_80pct_oracle": None}}}
    text = report(results)
    assert "episodes to 80% of oracle |" in text
    assert "| 90.0% | 2 |" in text and "| 90.0% | not reached |" in text
    # a mean over training seeds (a sweep with seeds) reads to one decimal
    results["agents"]["model"]["episodes_to_80pct_oracle"] = 23 / 3
    assert "| 90.0% | 7.7 |" in report(results)


def test_search_and_exploit_split():
    """Gridworld evaluations split learning into search (tasks with some reward by episode e)
    and exploitation (return after the first rewarded episode, per task's oracle); bandits,
    rewarded on every pull, do not get it."""
    rewards = torch.tensor([[0, 0, 0, 1, 1, 1],    # returns 0, 1, 2: found in episode 2
                            [1, 0, 1, 1, 0, 1],    # 1, 2, 1: found in episode 1
                            [0, 0, 0, 0, 0, 0]],   # never
                           dtype=torch.float32)
    dones = (torch.arange(6) % 2 == 1).expand(3, 6)
    h = History(torch.zeros(3, 6, 2), torch.zeros(3, 6, dtype=torch.long), rewards, dones,
                torch.zeros(3, 2))
    oracle = np.array([2.0, 2.0, 1.0])
    res = summarize(h, make_env("dark_room"), 2, oracle)
    assert res["rewarded_by_episode"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # after the first reward: task 0 episode 3 (2 of 2), task 1 episodes 2, 3 (2 of 2, 1 of 2)
    assert res["fraction_of_oracle_after_first_reward"] == pytest.approx((1 + 1 + 0.5) / 3)
    never = History(h.observations, h.actions, torch.zeros(3, 6), dones, h.tasks)
    res0 = summarize(never, make_env("dark_room"), 2, oracle)
    assert res0["rewarded_by_episode"] == [0, 0, 0]
    assert res0["fraction_of_oracle_after_first_reward"] is None
    bandit = summarize(h, make_env("bernoulli_bandit"), 2, oracle)
    assert "rewarded_by_episode" not in bandit
    results = {"improvement_k": 2, "model": "m", "env": {"name": "dark_room", "params": {}},
               "source_learner": None, "num_tasks": 3, "tasks_from": "x", "episodes": 3,
               "episode_len": 2, "window": 6, "action_selection": "sampled",
               "agents": {"model": res, "random": res0}}
    text = report(results)
    assert "tasks rewarded in first 2 ep. | return after first reward / oracle |" in text
    assert "| 67% | 83% |" in text and "| 0% |  |" in text


def test_split_picks_training_or_heldout_goals(trained, tmp_path):
    env = make_env("dark_room")
    meta = {"task_split": {"train": list(range(0, 81, 2)), "test": list(range(1, 81, 2))}}
    goals = env.task_set()
    for split, ids in meta["task_split"].items():
        tasks, where = eval_tasks(env, meta, 50, 0, split)
        assert {tuple(t) for t in tasks.tolist()} == {tuple(goals[i].tolist()) for i in ids[:50]}
        assert ("held-out" if split == "test" else "training") in where
    data, model_dir = trained
    with pytest.raises(IclRlError, match="no finite task set"):
        evaluate(EvalConfig(model=model_dir, split="train", out=str(tmp_path / "e")))
    with pytest.raises(IclRlError, match="--split must be test"):
        evaluate(EvalConfig(model=model_dir, split="heldout", out=str(tmp_path / "e")))


def test_demo_end_to_end_small(tmp_path, capsys):
    res = demo(DemoConfig(out=str(tmp_path / "demo"), num_histories=200, steps=30,
                          train_steps=20, batch_size=8, hidden_size=32, num_layers=1,
                          num_tasks=32, progress=False))
    assert "it/s]" not in capsys.readouterr().err  # --no-progress reaches every stage
    for f in ("report.md", "summary.json", "eval/curves.png", "dataset/README.md",
              "run/model/config.json"):
        assert (tmp_path / "demo" / f).exists(), f
    s = res["summary"]
    assert s["model_vs_source"] > 0 and s["total_s"] > 0
    assert "## Demo run" in (tmp_path / "demo/report.md").read_text()


def test_eval_numbers_do_not_depend_on_batch_size(trained, tmp_path):
    data, model_dir = trained

    def run(batch):
        return evaluate(EvalConfig(model=model_dir, dataset=str(data), num_tasks=60,
                                   episodes=25, batch_size=batch, progress=False,
                                   out=str(tmp_path / f"b{batch}")))["agents"]

    full, small, odd = run(None), run(16), run(7)

    def split(agents):  # the divergence from posterior sampling apart: it reads the agents'
        # action distributions, which Thompson sampling computes by quadrature over its batch
        # and the model by a float32 forward over its batch (rounding differs with the batch:
        # ~1e-9 for the quadrature, ~1e-8 nats for the model's, e.g. a CI of 0 at step 0
        # read as 1.5e-8)
        exact = {a: {k: v for k, v in r.items() if not k.startswith(("kl_", "tv_"))}
                 for a, r in agents.items()}
        close = {a: {k: v for k, v in r.items() if k.startswith(("kl_", "tv_"))}
                 for a, r in agents.items()}
        return exact, close

    (e_full, c_full), (e_small, c_small), (e_odd, c_odd) = map(split, (full, small, odd))
    assert e_full == e_small == e_odd  # every curve, CI and regret, bit for bit
    for other in (c_small, c_odd):
        for a, r in c_full.items():
            assert r.keys() == other[a].keys()
            for k, v in r.items():
                assert np.allclose(v, other[a][k], rtol=1e-6, atol=1e-6), (a, k)
    assert c_full["model"]["kl_to_ps"] > 0
    assert full["model"]["final_regret"] != full["random"]["final_regret"]


def test_baselines_take_labels_and_hyperparameters(trained, tmp_path):
    """LABEL=LEARNER runs a learner twice; --baseline-kwargs sets a baseline's
    hyperparameters, recorded in results.json and the report, with the same numbers as that
    learner run under its own name."""
    data, model_dir = trained

    def run(name, baselines, kwargs):
        return evaluate(EvalConfig(model=model_dir, dataset=str(data), num_tasks=64,
                                   episodes=30, baselines=baselines, baseline_kwargs=kwargs,
                                   progress=False, out=str(tmp_path / name)))

    both = run("both", "oracle,ucb,wide=ucb", '{"wide": {"c": 4.0}}')
    assert set(both["agents"]) == {"model", "oracle", "ucb", "wide"}
    assert both["baselines"]["wide"] == {"learner": "ucb", "params": {"c": 4.0}}
    assert both["baselines"]["ucb"] == {"learner": "ucb", "params": {}}
    a = both["agents"]
    assert a["wide"]["final_regret"] != a["ucb"]["final_regret"]  # c = 4 explores more
    alone = run("alone", "ucb", {"ucb": {"c": 4.0}})  # a YAML file gives a mapping
    assert alone["agents"]["ucb"]["final_regret"] == a["wide"]["final_regret"]
    assert "- baselines: wide = `ucb` {'c': 4.0}" in (tmp_path / "both/report.md").read_text()
    # a relabelled source learner runs beside the source (same learner, its own settings)
    src = run("src", "source,ucb_again=ucb", None)
    assert {"source", "ucb_again"} <= set(src["agents"])

    for baselines, kwargs, match in [
            ("ucb", '{"thompson": {}}', "'thompson' is not among --baselines"),
            ("ucb,ucb", None, "label 'ucb' is given twice"),
            ("ucb,model=thompson", None, "the model's own"),
            ("best=oracle", None, "oracle cannot be relabelled"),
            ("oracle", '{"oracle": {"c": 1}}', "oracle takes no hyperparameters"),
            ("ucb", '{"ucb": 2}', "must be a JSON object"),
            ("ucb", '{"ucb": ', "--baseline-kwargs: not valid JSON"),
            ("=ucb", None, "is not NAME or LABEL=LEARNER")]:
        with pytest.raises(IclRlError, match=match):
            EvalConfig(model=model_dir, baselines=baselines, baseline_kwargs=kwargs)
    with pytest.raises(IclRlError, match="learner 'ucb' does not take tau"):
        run("bad", "ucb", '{"ucb": {"tau": 1}}')
    assert not (tmp_path / "bad").exists()
