"""`icl-rl sweep`: variants run once, resume, refuse edited settings, and are summarised."""

from __future__ import annotations

import json

import pytest
import yaml

import pipeline.sweep as sweep
from icl_rl.errors import IclRlError
from pipeline.sweep import SweepConfig

BASE = {
    "generate": {"env": "bernoulli_bandit", "num_arms": 3, "learner": "ucb",
                 "num_histories": 80, "steps": 24, "shard_size": 40, "heldout_fraction": 0.25},
    "train": {"context": 24, "model_kwargs": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
              "batch_size": 8, "max_steps": 6, "warmup_steps": 1, "eval_every": 3,
              "save_every": 3, "eval_batches": 1, "progress": False},
    "eval": {"num_tasks": 8, "episodes": 24, "baselines": "source,oracle", "progress": False},
}


def write(tmp_path, variants, **extra):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), **BASE, **extra,
                                    "variants": variants}))
    return str(path)


def test_sweep_runs_each_variant_once_and_resumes(tmp_path, monkeypatch):
    file = write(tmp_path, {"full": {}, "short": {"train": {"context": 4}}})
    calls = {"generate": 0, "train": 0, "eval": 0}
    for stage in calls:
        real = getattr(sweep, stage if stage != "eval" else "evaluate")

        def counted(cfg, real=real, stage=stage):
            calls[stage] += 1
            return real(cfg)

        monkeypatch.setattr(sweep, stage if stage != "eval" else "evaluate", counted)

    first = sweep.main(SweepConfig(sweep=file, only="full"))
    assert list(first["variants"]) == ["full"] and calls == {"generate": 1, "train": 1,
                                                              "eval": 1}
    # the whole sweep now: `full` is done and kept, `short` reuses the dataset
    out = tmp_path / "out"
    kept = (out / "full/eval/results.json").read_bytes()
    summary = sweep.main(SweepConfig(sweep=file))
    assert calls == {"generate": 1, "train": 2, "eval": 2}
    assert (out / "full/eval/results.json").read_bytes() == kept
    assert set(summary["variants"]) == {"full", "short"}
    assert len(list((out / "datasets").iterdir())) == 1
    short = json.loads((out / "short/eval/results.json").read_text())
    assert short["window"] == 4
    table = (out / "summary.md").read_text()
    assert "| full |" in table and "| short |" in table
    assert (out / "curves.png").stat().st_size > 0
    # an interrupted variant: its model is gone but checkpoints remain -> train resumes
    import shutil

    shutil.rmtree(out / "short/eval")
    shutil.rmtree(out / "short/run/model")
    sweep.main(SweepConfig(sweep=file))
    assert calls == {"generate": 1, "train": 3, "eval": 3}
    rows = [json.loads(x) for x in (out / "short/run/metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("step") in (1, 2) for r in rows[-3:])  # resumed at step 6, not 0


def test_edited_finished_variant_is_refused(tmp_path):
    file = write(tmp_path, {"full": {}})
    sweep.main(SweepConfig(sweep=file))
    edited = write(tmp_path, {"full": {"train": {"lr": 0.01}}})
    with pytest.raises(IclRlError, match="run with other settings"):
        sweep.main(SweepConfig(sweep=edited))


def test_no_progress_silences_every_stage_and_is_not_a_setting(tmp_path, capsys):
    """--no-progress turns off the bars the sweep file left on; a finished variant rerun with
    bars on (or off) is kept, not refused as changed."""
    loud = {**BASE, "train": {**BASE["train"], "progress": True},
            "eval": {**BASE["eval"], "progress": True}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), **loud,
                                    "variants": {"full": {}}}))
    sweep.main(SweepConfig(sweep=str(path), progress=False))
    err = capsys.readouterr().err
    assert "it/s]" not in err and "hist/s]" not in err and "step/s]" not in err
    kept = (tmp_path / "out/full/eval/results.json").read_bytes()
    sweep.main(SweepConfig(sweep=str(path)))  # bars on now: the same settings, kept
    assert (tmp_path / "out/full/eval/results.json").read_bytes() == kept


def test_variant_from_an_older_version_is_kept(tmp_path, monkeypatch):
    """A finished variant stamped before an option existed (its stamp lacks the option, the
    run used its default) is kept, not refused or rerun; an edited option still is refused."""
    file = write(tmp_path, {"full": {}})
    sweep.main(SweepConfig(sweep=file))
    stamp_file = tmp_path / "out/full/variant.json"
    old = json.loads(stamp_file.read_text())
    del old["train"]["target"], old["eval"]["split"], old["generate"]["train_tasks"]
    old["train"]["dataset"] = old["eval"]["dataset"] = "out/datasets/0123456789ab"  # old name
    # list options were stamped as comma-separated strings; a list default as missing
    old["eval"]["baselines"] = ",".join(old["eval"]["baselines"])
    old["train"]["report_to"] = "none"
    del old["train"]["hide_inputs"]
    stamp_file.write_text(json.dumps(old))
    monkeypatch.setattr(sweep, "train", lambda *a: pytest.fail("a kept variant was retrained"))
    sweep.main(SweepConfig(sweep=file))
    old["train"]["lr"] = 0.5
    stamp_file.write_text(json.dumps(old))
    with pytest.raises(IclRlError, match="run with other settings"):
        sweep.main(SweepConfig(sweep=file))


@pytest.mark.parametrize(("variants", "extra", "msg"), [
    ({"a": {"train": {"contxt": 3}}}, {}, "unknown train option"),
    ({"a": {"train": {"out": "x"}}}, {}, "set by the sweep"),
    ({"a": {"evaluate": {}}}, {}, "keys among generate, train, eval"),
    ({"a/b": {}}, {}, "variant name"),
    ({}, {}, "`variants` must map"),
    ({"a": {"train": {"model_kwargs": {"hidden_size": 16, "num_heads": 3}}}}, {},
     "hidden_size 16 must be divisible by num_heads 3"),
    ({"a": {"train": {"num_heads": 3}}}, {}, "num_heads belong.* to the model family"),
    ({"a": {"eval": {"episodes": 0}}}, {}, "--episodes must be a positive integer"),
    ({"a": {"eval": {"temperature": 0.0}}}, {}, "--temperature must be > 0"),
    ({"a": {}}, {"extra": 1}, "unknown key"),
])
def test_bad_sweep_files(tmp_path, variants, extra, msg):
    with pytest.raises(IclRlError, match=msg):
        sweep.main(SweepConfig(sweep=write(tmp_path, variants, **extra)))
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_only_names_a_missing_variant(tmp_path):
    with pytest.raises(IclRlError, match="--only: no variant"):
        sweep.main(SweepConfig(sweep=write(tmp_path, {"a": {}}), only="b"))


RL2 = {"env": "bernoulli_bandit", "env_kwargs": {"num_arms": 3}, "trial_episodes": 24,
       "num_envs": 8, "iterations": 2, "minibatches": 2, "model_kwargs": {"hidden_size": 16},
       "progress": False}


def test_both_ways_in_one_sweep_with_the_same_ingredient_names(tmp_path, monkeypatch):
    """A sweep with an rl2 stage runs RL² next to AD in every variant, each with its own
    resumable folder and stamp, and the summary has a table for each."""
    ran = []
    real = sweep.rl2
    monkeypatch.setattr(sweep, "rl2", lambda cfg: ran.append(cfg) or real(cfg))
    file = write(tmp_path, {"full": {}, "no_reward": {"train": {"hide_inputs": "reward"},
                                                      "rl2": {"hide_inputs": "reward"}}},
                 rl2=RL2)
    summary = sweep.main(SweepConfig(sweep=file))
    out = tmp_path / "out"
    assert [c.hide_inputs for c in ran] == [[], ["reward"]]
    for name in ("full", "no_reward"):
        assert {"model", "rl2"} <= set(summary["variants"][name]["agents"])
        rl2_results = json.loads((out / name / "rl2_eval/results.json").read_text())
        assert rl2_results["episodes"] == 24 and (out / name / "rl2_variant.json").exists()
    table = (out / "summary.md").read_text()
    assert "RL² policy on held-out tasks" in table and "Model on held-out tasks" in table
    sweep.main(SweepConfig(sweep=file))  # everything done: nothing runs again
    assert len(ran) == 2
    edited = write(tmp_path, {"full": {"rl2": {"lr": 0.01}}}, rl2=RL2)
    with pytest.raises(IclRlError, match="run with other settings"):
        sweep.main(SweepConfig(sweep=edited))


def test_an_rl2_only_sweep_needs_no_dataset(tmp_path):
    path = tmp_path / "rl2.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "rl2": RL2,
                                    "eval": BASE["eval"] | {"baselines": "random,oracle"},
                                    "variants": {"no_memory": {"rl2": {"memory": "none"}}}}))
    summary = sweep.main(SweepConfig(sweep=str(path)))
    assert set(summary["variants"]["no_memory"]["agents"]) == {"rl2"}
    assert not (tmp_path / "out" / "datasets").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"out": "x", "eval": BASE["eval"], "variants": {"a": {}}}))
    with pytest.raises(IclRlError, match="rl2"):
        sweep.plan(SweepConfig(sweep=str(bad)))


def test_seeds_train_each_variant_per_seed_and_report_a_ci_over_seeds(tmp_path, monkeypatch):
    """`seeds` trains every variant once per seed on one dataset and the same evaluation tasks;
    the table's CI is a t-interval over the seeds; a seed added later runs alone."""
    trained = []
    real = sweep.train
    monkeypatch.setattr(sweep, "train", lambda cfg: trained.append(cfg.seed) or real(cfg))
    file = write(tmp_path, {"full": {}}, seeds=[0, 1])
    summary = sweep.main(SweepConfig(sweep=file))
    out = tmp_path / "out"
    assert trained == [0, 1] and len(list((out / "datasets").iterdir())) == 1
    assert set(summary["variants"]) == {"full/seed0", "full/seed1"}
    runs = [json.loads((out / f"full/seed{k}/eval/results.json").read_text()) for k in (0, 1)]
    assert runs[0]["agents"]["oracle"] == runs[1]["agents"]["oracle"]  # the same tasks
    regrets = [r["agents"]["model"]["final_regret"] for r in runs]
    assert regrets[0] != regrets[1]  # the seeds trained different models
    full = summary["seeds"]["full"]
    assert full["seeds"] == [0, 1] and full["per_seed"]["model"]["final_regret"] == regrets
    assert full["agents"]["model"]["final_regret"] == pytest.approx(sum(regrets) / 2)
    # t(0.975, 1 dof) = 12.706; sd of two values = |a - b| / sqrt(2); over sqrt(2) seeds
    assert full["agents"]["model"]["final_regret_ci95"] == pytest.approx(
        12.706 * abs(regrets[0] - regrets[1]) / 2, rel=1e-3)
    table = (out / "summary.md").read_text()
    assert "t-interval over seeds" in table and "| full | 2 |" in table
    assert "| full/seed0 |" in table and "| full/seed1 |" in table
    # one more seed: only it trains; --only names the sweep file's variant
    sweep.main(SweepConfig(sweep=write(tmp_path, {"full": {}}, seeds=[0, 1, 2]), only="full"))
    assert trained == [0, 1, 2]
    assert json.loads((out / "summary.json").read_text())["seeds"]["full"]["seeds"] == [0, 1, 2]


@pytest.mark.parametrize(("seeds", "variants", "msg"), [
    ([0, 0], {"a": {}}, "distinct non-negative integers"),
    (["x"], {"a": {}}, "distinct non-negative integers"),
    ([], {"a": {}}, "distinct non-negative integers"),
    (3, {"a": {}}, "distinct non-negative integers"),  # not one seed, not three: refused
    ([0, 1], {"a": {"train": {"seed": 3}}}, "train sets `seed`, but `seeds`"),
])
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, seeds, variants, msg):
    with pytest.raises(IclRlError, match=msg):
        sweep.main(SweepConfig(sweep=write(tmp_path, variants, seeds=seeds)))
    assert not (tmp_path / "out").exists()
