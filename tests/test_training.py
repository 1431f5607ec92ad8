"""AD model and the accelerate training loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModel

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from icl_rl.data import WindowDataset
from icl_rl.dataset import load_histories
from icl_rl.errors import IclRlError
from icl_rl.models import ADConfig, ADModel
from icl_rl.rollout import History
from icl_rl.transitions import Transitions, sequences
from tests.launch import accelerate_launch
from training.train import TrainConfig
from training.train import main as train


@pytest.fixture(scope="module")
def ucb_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "ucb"
    return generate(GenerateConfig(out=str(out), env="bernoulli_bandit", num_arms=5,
                                   learner="ucb", num_histories=600, steps=64, shard_size=300,
                                   heldout_fraction=0.2, seed=1))


def tiny(data, out, **kw) -> TrainConfig:
    """A small AD run; the family's options (hidden_size, ...) may be given flat."""
    shape = {"hidden_size": 32, "num_layers": 2, "num_heads": 2}
    shape.update({k: kw.pop(k) for k in list(kw) if k in shape})
    base = dict(dataset=str(data), out=str(out), context=32, model_kwargs=shape, batch_size=16,
                max_steps=20, warmup_steps=2, eval_every=10, eval_batches=2, save_every=10,
                log_every=5, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_model_round_trip_and_auto_class(tmp_path):
    cfg = ADConfig(obs_dim=2, num_actions=5, env_name="x", env_params={"size": 9},
                   hidden_size=32, num_layers=2, num_heads=2, max_context=16)
    model = ADModel(cfg)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, ADModel)
    assert loaded.config.env_name == "x" and loaded.config.env_params == {"size": 9}
    for (n, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(),
                              strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_acting_step_by_step_equals_the_training_forward(kv_heads):
    """The acting protocol (init_state, one step per call, ring KV cache) gives the logits of
    the training forward over the same aligned history: train/eval parity by construction;
    with shared key/value heads (grouped-query attention) too, whose cache holds only those."""
    torch.manual_seed(0)
    cfg = ADConfig(obs_dim=2, num_actions=4, hidden_size=64, num_layers=3, num_heads=4,
                   num_kv_heads=kv_heads, max_context=48)
    model = ADModel(cfg).eval()
    b, t = 5, 48
    obs = torch.randn(b, t, 2)
    actions = torch.randint(0, 4, (b, t))
    rewards = torch.rand(b, t)
    dones = (torch.arange(t) % 6 == 5).expand(b, t)
    x = sequences(obs, actions, rewards, dones)
    with torch.no_grad():
        full = model(**x.as_dict()).logits
        state = model.init_state(b, window=t)
        steps = []
        for i in range(t):
            out = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), state,
                             output_features=True)
            state = out.state
            steps.append(out.logits)
            assert out.features.shape == (b, 3, 64)
    diff = (torch.stack(steps, dim=1) - full).abs().max().item()
    assert diff < 1e-4
    assert state.cache.layers[0].keys.shape == (b, kv_heads, t, 16)


def test_shared_key_value_heads(tmp_path):
    """num_kv_heads: fewer k/v projections (counted in the FLOPs), saved and reloaded, and a
    count that does not divide the heads refused in one line."""
    cfg = ADConfig(obs_dim=2, num_actions=5, hidden_size=64, num_layers=2, num_heads=4,
                   num_kv_heads=1, max_context=16)
    model, full = ADModel(cfg), ADModel(ADConfig(**{**cfg.to_dict(), "num_kv_heads": 4}))
    attn = model.backbone.layers[0].self_attn
    assert attn.k_proj.out_features == attn.v_proj.out_features == 16
    d = 64  # 4 heads of 16: k and v are 1/4 as wide, 2 * 2 * (d * d - d * d / 4) per layer
    assert full.flops_per_token(16) - model.flops_per_token(16) == 3 * 2 * 2 * 2 * (
        d * d - d * d // 4)
    with pytest.raises(IclRlError, match="num_kv_heads must be a positive integer that "
                                         "divides num_heads 4"):
        ADConfig(num_heads=4, num_kv_heads=3)
    assert ADConfig(num_heads=2).num_kv_heads == 2  # default: one per head
    with pytest.raises(IclRlError, match="num_kv_heads must be a positive integer, got 0"):
        ADConfig(num_heads=4, num_kv_heads=0)
    # the demo's default follows its head count (`icl-rl demo --num-heads 2` alone works)
    from pipeline.config import DemoConfig
    assert ADConfig(num_heads=2, num_kv_heads=DemoConfig().num_kv_heads).num_kv_heads == 2
    assert "with 4 attention heads over 1 key/value head" in cfg.describe()  # model card
    assert "with 2 attention heads (" in ADConfig(num_heads=2).describe()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert loaded.config.num_kv_heads == 1
    assert loaded.backbone.layers[0].self_attn.k_proj.out_features == 16


def test_windows_carry_the_previous_transition(ucb_data):
    h = load_histories(ucb_data, "train").history
    ds = WindowDataset(h, context=10)
    assert len(ds) == h.num_histories * (64 - 10 + 1)
    batch = ds.__getitems__([0, 57])  # history 0 start 0; history 1 start 2
    assert batch["observations"].shape == (2, 10, 1)
    assert batch["prev_actions"][0, 0] == -1 and batch["episode_starts"][0, 0]  # no previous
    assert batch["prev_rewards"][0, 0] == 0
    assert batch["prev_actions"][1, 0] == h.actions[1, 1]
    assert batch["prev_rewards"][1, 0] == h.rewards[1, 1]
    assert torch.equal(batch["prev_actions"][1, 1:], h.actions[1, 2:11])
    assert torch.equal(batch["targets"][1], h.actions[1, 2:12])
    short = WindowDataset(h, context=100)  # longer than the histories
    b = short.__getitems__([3])
    assert b["observations"].shape == (1, 100, 1) and b["attention_mask"][0].sum() == 64


def test_history_start_fraction_windows(ucb_data, tmp_path):
    """--history-start-fraction f: that share of the windows, in memory and streamed, start
    at a history's first step (the context of the model's first K steps at evaluation);
    uniform windows start there 1 time in T - K + 1."""
    from icl_rl.data import StreamingWindows

    h = load_histories(ucb_data, "train").history
    plain = WindowDataset(h, context=10)
    ds = WindowDataset(h, context=10, history_start_fraction=0.25)
    assert len(plain) == h.num_histories * 55
    assert abs(ds.extra / len(ds) - 0.25) < 1e-3
    added = ds.__getitems__([len(plain), len(plain) + 1, len(ds) - 1])
    again = plain.__getitems__([0, 55, ((len(ds) - 1 - len(plain)) % h.num_histories) * 55])
    for k in added:
        assert torch.equal(added[k], again[k]), k
    assert (added["prev_actions"][:, 0] == -1).all()  # no previous action: the history's start

    def start_share(windows):
        prev = torch.cat([b["prev_actions"] for b in windows])
        return (prev[:, 0] == -1).float().mean().item()

    g = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(ds), (4000,), generator=g).tolist()
    assert abs(start_share([ds.__getitems__(picks)]) - 0.25 - 0.75 / 55) < 0.03
    assert start_share([plain.__getitems__([i % len(plain) for i in picks])]) < 0.05
    with pytest.raises(IndexError):
        plain.__getitems__([len(plain)])
    for f in (0.0, 0.5):
        stream = StreamingWindows(ucb_data, "train", 10, 32, seed=0,
                                  windows_per_history=20, history_start_fraction=f)
        assert abs(start_share(list(stream)) - (f + (1 - f) / 55)) < 0.04, f
    with pytest.raises(IclRlError, match="history_start_fraction must be in"):
        WindowDataset(h, context=10, history_start_fraction=1.0)
    with pytest.raises(IclRlError, match="--history-start-fraction must be in"):
        train(tiny(ucb_data, tmp_path / "x", history_start_fraction=-0.1))
    assert not (tmp_path / "x").exists()


def test_dpt_target_windows_and_training(ucb_data, tmp_path):
    """--target optimal_actions: the same input tokens, the oracle's action as the label; a
    short run predicts the best arm more often than the source itself pulls it."""
    h = load_histories(ucb_data, "train").history
    ad = WindowDataset(h, context=10).__getitems__([0, 57, 300])
    dpt = WindowDataset(h, context=10, target="optimal_actions").__getitems__([0, 57, 300])
    for k in ("observations", "prev_actions", "prev_rewards", "episode_starts"):
        assert torch.equal(ad[k], dpt[k])
    assert torch.equal(dpt["targets"][1], h.optimal_actions[1, 2:12])
    assert not torch.equal(ad["targets"], dpt["targets"])
    blind = History(h.observations, h.actions, h.rewards, h.dones, h.tasks)  # no oracle labels
    with pytest.raises(IclRlError, match="no optimal_actions column"):
        WindowDataset(blind, context=10, target="optimal_actions")
    with pytest.raises(IclRlError, match="--target must be one of"):
        train(tiny(ucb_data, tmp_path / "x", target="best"))
    res = train(tiny(ucb_data, tmp_path / "dpt", target="optimal_actions", max_steps=200,
                     eval_every=200, save_every=0, lr=2e-3, warmup_steps=20, context=64,
                     hidden_size=64, num_heads=4, batch_size=32, eval_batches=4))
    test = load_histories(ucb_data, "test").history
    source_hits = float((test.actions == test.optimal_actions).float().mean())
    accuracy = [m for m in res["metrics"] if "eval/accuracy" in m][-1]["eval/accuracy"]
    assert accuracy > source_hits + 0.1, (accuracy, source_hits)
    model = AutoModel.from_pretrained(res["model_dir"])
    assert model.config.provenance["target"] == "optimal_actions"
    assert "Oracle-action distillation" in (Path(res["model_dir"]) / "README.md").read_text()


def test_validation_loss_falls_below_uniform(ucb_data, tmp_path):
    res = train(tiny(ucb_data, tmp_path / "run", max_steps=300, eval_every=100,
                     save_every=0, lr=2e-3, warmup_steps=20, context=64, hidden_size=64,
                     num_heads=4, batch_size=32, eval_batches=4))
    evals = [m["eval/loss"] for m in res["metrics"] if "eval/loss" in m]
    uniform = math.log(5)
    assert evals[-1] < 0.6 * uniform, evals
    assert evals[-1] < evals[0]
    model = AutoModel.from_pretrained(res["model_dir"])
    assert model.config.env_name == "bernoulli_bandit" and model.config.num_actions == 5
    assert json.loads((Path(res["model_dir"]) / "train_config.json").read_text())["max_steps"] \
        == 300


def test_resume_gives_identical_weights(ucb_data, tmp_path):
    kw = dict(schedule="constant", max_steps=24, save_every=12, eval_every=0, batch_size=8)
    straight = train(tiny(ucb_data, tmp_path / "a", **kw))
    train(tiny(ucb_data, tmp_path / "b", **{**kw, "max_steps": 12}))
    resumed = train(tiny(ucb_data, tmp_path / "b", **kw, resume_from_checkpoint="latest"))
    assert resumed["steps"] == 24
    a = AutoModel.from_pretrained(straight["model_dir"]).state_dict()
    b = AutoModel.from_pretrained(resumed["model_dir"]).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").iterdir()) == [
        "step_00000012", "step_00000024"]


def test_compiled_training_matches_eager_and_its_checkpoints_resume_eagerly(ucb_data, tmp_path):
    """--compile (torch.compile through accelerate) takes the same steps as eager training, to
    float tolerance; its saved model and checkpoints carry plain parameter names, so a run
    started compiled resumes without compiling."""
    kw = dict(schedule="constant", max_steps=8, save_every=4, eval_every=0, batch_size=8)
    eager = train(tiny(ucb_data, tmp_path / "eager", **kw))
    train(tiny(ucb_data, tmp_path / "compiled", **{**kw, "max_steps": 4}, compile=True))
    resumed = train(tiny(ucb_data, tmp_path / "compiled", **kw,
                         resume_from_checkpoint="latest"))
    assert resumed["steps"] == 8
    a = AutoModel.from_pretrained(eager["model_dir"]).state_dict()
    b = AutoModel.from_pretrained(resumed["model_dir"]).state_dict()
    assert list(a) == list(b) and not [k for k in b if "_orig_mod" in k]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_processes_match_one_process_with_double_batch(ucb_data, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) against 1 process with twice the batch."""
    common = ["--dataset", str(ucb_data), "--context", "32", "--model-kwargs",
              '{"hidden_size": 32, "num_layers": 2, "num_heads": 2}', "--max-steps", "12",
              "--warmup-steps",
              "2", "--log-every", "2", "--eval-every", "6", "--eval-batches", "2",
              "--save-every", "6", "--progress", "false"]
    accelerate_launch(["training.train", *common, "--batch-size", "8",
                       "--out", str(tmp_path / "two")])
    one = train(TrainConfig(**{**tiny(ucb_data, tmp_path / "one").__dict__, "batch_size": 16,
                               "max_steps": 12, "log_every": 2, "eval_every": 6,
                               "save_every": 6}))

    def rows(path):
        return [json.loads(x) for x in Path(path, "metrics.jsonl").read_text().splitlines()]

    two_rows = rows(tmp_path / "two")
    sums = next(r["ranks/param_checksums"] for r in two_rows if "ranks/param_checksums" in r)
    assert len(sums) == 2 and sums[0] == sums[1]  # every rank holds the same parameters
    two = [r["train/loss"] for r in two_rows if "train/loss" in r]
    single = [r["train/loss"] for r in rows(tmp_path / "one") if "train/loss" in r]
    assert len(two) == len(single) == 6
    torch.testing.assert_close(torch.tensor(two), torch.tensor(single), rtol=1e-4, atol=1e-4)
    assert abs(one["param_checksums"][0] - sums[0]) <= 1e-4 * max(1.0, abs(sums[0]))


def test_bad_inputs(ucb_data, tmp_path):
    res = train(tiny(ucb_data, tmp_path / "run", max_steps=4, eval_every=0, save_every=0))
    # an existing run is not overwritten
    before = (Path(res["model_dir"]) / "model.safetensors").read_bytes()
    with pytest.raises(IclRlError, match="already holds a run"):
        train(tiny(ucb_data, tmp_path / "run", max_steps=4))
    assert (Path(res["model_dir"]) / "model.safetensors").read_bytes() == before
    # a missing checkpoint
    with pytest.raises(IclRlError, match="has no checkpoint"):
        train(tiny(ucb_data, tmp_path / "fresh", resume_from_checkpoint="latest"))
    with pytest.raises(IclRlError, match="not a checkpoint folder"):
        train(tiny(ucb_data, tmp_path / "fresh", resume_from_checkpoint=str(tmp_path / "nope")))
    # a dataset of another env than the model
    other = generate(GenerateConfig(out=str(tmp_path / "g3"), env="gaussian_bandit", num_arms=3,
                                    learner="thompson", num_histories=40, steps=40,
                                    shard_size=40, heldout_fraction=0.25))
    with pytest.raises(IclRlError, match="but the model .* was trained for bernoulli_bandit"):
        train(tiny(other, tmp_path / "ft", init_model=res["model_dir"]))
    # a window longer than the model's context
    with pytest.raises(IclRlError, match="longer than the model's context 32"):
        train(tiny(ucb_data, tmp_path / "ft2", init_model=res["model_dir"], context=64))
    with pytest.raises(IclRlError, match="--model-kwargs: hidden_size 30 must be divisible"):
        train(tiny(ucb_data, tmp_path / "x", hidden_size=30, num_heads=4))
    with pytest.raises(IclRlError, match="--report-to: unknown tracker"):
        train(tiny(ucb_data, tmp_path / "x", report_to="mlfloww"))
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "x").exists()


def test_streaming_reads_disjoint_shards_per_rank(ucb_data):
    from icl_rl.dataset import iter_histories

    seen = [torch.cat([h.task_ids for h in iter_histories(ucb_data, "train", 64, r, 2)])
            for r in range(2)]
    everything = load_histories(ucb_data, "train").task_ids
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == sorted(everything.tolist())
    three = [torch.cat([h.task_ids for h in iter_histories(ucb_data, "train", 64, r, 3)])
             for r in range(3)]  # more ranks than shards: rows are dealt out
    assert sorted(torch.cat(three).tolist()) == sorted(everything.tolist())


def test_streaming_training_learns_and_resumes_identically(ucb_data, tmp_path):
    kw = dict(streaming=True, schedule="constant", max_steps=40, save_every=20, eval_every=20,
              batch_size=8, lr=2e-3)
    straight = train(tiny(ucb_data, tmp_path / "a", **kw))
    evals = [m["eval/loss"] for m in straight["metrics"] if "eval/loss" in m]
    assert evals[-1] < math.log(5)
    train(tiny(ucb_data, tmp_path / "b", **{**kw, "max_steps": 20}))
    resumed = train(tiny(ucb_data, tmp_path / "b", **kw, resume_from_checkpoint="latest"))
    a = AutoModel.from_pretrained(straight["model_dir"]).state_dict()
    b = AutoModel.from_pretrained(resumed["model_dir"]).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_process_streaming_run(ucb_data, tmp_path):
    """Streaming under `accelerate launch` with 2 CPU processes: each rank reads its shards,
    gradients are synchronised, every rank ends with the same parameters."""
    accelerate_launch(["training.train", "--dataset", str(ucb_data), "--out",
                       str(tmp_path / "s2"), "--context", "32", "--model-kwargs",
                       '{"hidden_size": 32, "num_layers": 1, "num_heads": 2}', "--batch-size", "8",
                       "--max-steps", "10", "--eval-every", "5", "--save-every", "0",
                       "--streaming", "true", "--progress", "false"])
    rows = [json.loads(x) for x in (tmp_path / "s2/metrics.jsonl").read_text().splitlines()]
    sums = next(r["ranks/param_checksums"] for r in rows if "ranks/param_checksums" in r)
    assert len(sums) == 2 and sums[0] == sums[1]
    assert any("eval/loss" in r for r in rows)


def test_hidden_inputs_are_never_seen(tmp_path):
    """An ablation model ignores the hidden parts of its tokens, keeps the rest, and saves
    which parts it hides."""
    cfg = ADConfig(obs_dim=1, num_actions=3, hidden_size=16, num_layers=1, num_heads=2,
                   max_context=8, hidden_inputs=["reward"])
    torch.manual_seed(0)
    model = ADModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    x = sequences(torch.zeros(2, 8, 1), torch.randint(0, 3, (2, 8), generator=g),
                  torch.rand(2, 8, generator=g), torch.zeros(2, 8, dtype=torch.bool))
    other_reward = Transitions(x.observations, x.prev_actions, x.prev_rewards + 5.0,
                               x.episode_starts)
    other_action = Transitions(x.observations, (x.prev_actions + 1) % 3, x.prev_rewards,
                               x.episode_starts)
    with torch.no_grad():
        base = model(**x.as_dict()).logits
        assert torch.equal(model(**other_reward.as_dict()).logits, base)
        assert not torch.allclose(model(**other_action.as_dict()).logits, base)
    model.save_pretrained(tmp_path / "m")
    assert AutoModel.from_pretrained(tmp_path / "m").config.hidden_inputs == ["reward"]
    with pytest.raises(IclRlError, match="--hide-inputs: unknown part 'rewards'"):
        train(TrainConfig(dataset="unused", out=str(tmp_path / "x"), hide_inputs="rewards"))
    # --hide-inputs is a list, given space- or comma-separated
    assert TrainConfig(hide_inputs="action, reward").hide_inputs == ["action", "reward"]
    assert TrainConfig(hide_inputs=["action", "reward"]).hide_inputs == ["action", "reward"]


def test_a_heldout_shard_that_does_not_read_is_an_error(tmp_path, caplog):
    """A held-out split that exists but is truncated ends the run naming the fix (it used to
    train silently without validation); only a dataset with no held-out split trains without
    one, and says so."""
    import shutil

    data = generate(GenerateConfig(out=str(tmp_path / "d"), env="bernoulli_bandit", num_arms=3,
                                   learner="ucb", num_histories=40, steps=20, shard_size=40,
                                   heldout_fraction=0.25))
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    [shard] = (broken / "data").glob("test-*.parquet")
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(IclRlError, match="does not read as parquet.*regenerate"):
        train(tiny(broken, tmp_path / "run", context=20, max_steps=2))
    assert not (tmp_path / "run").exists()
    shard.unlink()  # no held-out split at all: trains, without validation, and says so
    with caplog.at_level("WARNING", logger="training.train"):
        res = train(tiny(broken, tmp_path / "run2", context=20, max_steps=2, eval_every=1))
    assert res["final_eval_loss"] is None
    assert "no held-out split" in caplog.text
    info = json.loads((tmp_path / "run2/run_info.json").read_text())
    assert info["num_processes"] == 1 and info["device"] == "cpu"
    assert info["software"]["torch"] == torch.__version__
    assert info["software"]["transformers"] == transformers.__version__


def test_pooled_datasets(ucb_data, tmp_path):
    """--dataset a,b pools the histories of datasets of one env (train and held-out splits,
    in order; the first card stands for the pool); another env, another history length, an
    empty name and --streaming are refused in one line."""
    from icl_rl.dataset import load_pooled

    other = generate(GenerateConfig(out=str(tmp_path / "ts"), env="bernoulli_bandit",
                                    num_arms=5, learner="thompson", num_histories=100, steps=64,
                                    shard_size=100, heldout_fraction=0.2, seed=2))
    pooled = load_pooled([str(ucb_data), str(other)], "test")
    a, b = load_histories(ucb_data, "test"), load_histories(other, "test")
    assert pooled.history.num_histories == a.history.num_histories + b.history.num_histories
    assert torch.equal(pooled.history.actions, torch.cat([a.history.actions,
                                                          b.history.actions]))
    assert torch.equal(pooled.history.optimal_actions[-20:], b.history.optimal_actions)
    assert pooled.meta["learner"]["name"] == "ucb" and pooled.source == f"{ucb_data},{other}"

    res = train(tiny(f"{ucb_data}, {other}", tmp_path / "run", max_steps=4, eval_every=4))
    model = AutoModel.from_pretrained(res["model_dir"])
    header = (Path(res["model_dir"]) / "README.md").read_text().split("---")[1]
    assert "datasets:" not in header  # local folders, not Hub ids
    assert model.config.provenance["dataset"] == str(ucb_data)
    assert model.config.provenance["pooled_with"] == [str(other)]
    assert res["final_eval_loss"] is not None

    for bad, match in (
        (GenerateConfig(out=str(tmp_path / "g"), env="gaussian_bandit", num_arms=5,
                        learner="thompson", num_histories=20, steps=64, shard_size=20),
         "its env .* differs"),
        (GenerateConfig(out=str(tmp_path / "s"), env="bernoulli_bandit", num_arms=5,
                        learner="thompson", num_histories=20, steps=32, shard_size=20),
         "histories of 32 steps, the first dataset's have 64"),
    ):
        with pytest.raises(IclRlError, match=match):
            train(tiny(f"{ucb_data},{generate(bad)}", tmp_path / "bad", max_steps=1))
    with pytest.raises(IclRlError, match="an empty name between commas"):
        train(tiny(f"{ucb_data},", tmp_path / "bad", max_steps=1))
    with pytest.raises(IclRlError, match="--streaming reads one dataset"):
        train(tiny(f"{ucb_data},{other}", tmp_path / "bad", max_steps=1, streaming=True))
    assert not (tmp_path / "bad").exists()
