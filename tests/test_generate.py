"""`icl-rl generate`: Hub layout, round trip through load_dataset, byte-identity, bad input."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from data_gen.generate import GenerateConfig, main, plan
from icl_rl.config import parse_config
from icl_rl.dataset import load_histories, read_card
from icl_rl.errors import IclRlError
from tests.launch import accelerate_launch


def small(out, **kw) -> GenerateConfig:
    base = dict(out=str(out), env="bernoulli_bandit", num_arms=3, learner="thompson",
                num_histories=50, steps=40, shard_size=16, heldout_fraction=0.2, seed=7)
    base.update(kw)
    return GenerateConfig(**base)


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_round_trip_through_load_dataset(tmp_path):
    cfg = small(tmp_path / "ds")
    out = main(cfg)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == ["data/test-00000-of-00001.parquet"] + [
        f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset(str(out))
    assert set(ds) == {"train", "test"}
    assert ds["train"].num_rows == 40 and ds["test"].num_rows == 10
    row = ds["train"][0]
    assert len(row["actions"]) == 40 and len(row["observations"][0]) == 1
    assert len(row["task"]) == 3

    loaded = load_histories(out, "train")
    h = loaded.history
    assert h.actions.shape == (40, 40)
    np.testing.assert_array_equal(np.array(ds["train"]["actions"]), h.actions.numpy())
    np.testing.assert_array_equal(np.array(ds["train"]["rewards"], dtype=np.float32),
                                  h.rewards.numpy())
    meta = read_card(out)
    assert meta["env"]["name"] == "bernoulli_bandit" and meta["env"]["params"] == {"num_arms": 3}
    assert meta["learner"] == {"name": "thompson", "params": {
        "prior_alpha": 1.0, "prior_beta": 1.0, "prior_mean": 0.0, "prior_std": 1.0}}
    assert meta["seed"] == 7 and meta["schema_version"] == 1
    assert meta["splits"] == {"train": {"num_histories": 40, "num_shards": 3},
                              "test": {"num_histories": 10, "num_shards": 1}}
    card = (out / "README.md").read_text()
    assert "reinforcement-learning" in card and "load_dataset" in card
    # held-out histories are other tasks than the training ones
    test = load_histories(out, "test")
    assert set(test.task_ids.tolist()).isdisjoint(loaded.task_ids.tolist())
    # rewards are Bernoulli draws of the recorded task's arm means
    assert set(torch.unique(h.rewards).tolist()) <= {0.0, 1.0}


def test_same_bytes_whatever_num_proc(tmp_path):
    a = main(small(tmp_path / "a", num_proc=1))
    b = main(small(tmp_path / "b", num_proc=2))
    da, db = digest(a), digest(b)
    assert da == db and len(da) == 6  # 4 shards, card, config stamp
    c = main(small(tmp_path / "c", seed=8))
    assert digest(c)["data/train-00000-of-00003.parquet"] != da["data/train-00000-of-00003.parquet"]


def test_resume_writes_only_missing_shards(tmp_path):
    out = main(small(tmp_path / "ds"))
    before = digest(out)
    victim = out / "data/train-00001-of-00003.parquet"
    keep = out / "data/train-00000-of-00003.parquet"
    victim.unlink()
    (out / "README.md").unlink()  # as if killed before the card
    mtime = keep.stat().st_mtime_ns
    main(small(tmp_path / "ds"))
    assert digest(out) == before
    assert keep.stat().st_mtime_ns == mtime  # finished shards are not redone


def test_refuses_a_folder_with_a_different_dataset(tmp_path):
    out = main(small(tmp_path / "ds"))
    before = digest(out)
    with pytest.raises(IclRlError, match=r"already holds a different dataset \(differs in: seed"):
        main(small(tmp_path / "ds", seed=99))
    assert digest(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(IclRlError, match="not empty and holds no icl-rl dataset"):
        main(small(other))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("kw", "msg"), [
    ({"env": "nope"}, "unknown env 'nope'"),
    ({"learner": "nope"}, "unknown learner 'nope'"),
    ({"num_histories": -5}, "--num-histories must be a positive integer"),
    ({"steps": 0}, "--steps must be a positive integer"),
    ({"heldout_fraction": 1.5}, "--heldout-fraction must be in"),
    ({"learner_kwargs": "{c: 2"}, "--learner-kwargs: not valid JSON"),
    ({"learner": "ucb", "learner_kwargs": '{"gamma": 2}'}, "does not take gamma"),
])
def test_bad_config(tmp_path, kw, msg):
    with pytest.raises(IclRlError, match=msg):
        main(small(tmp_path / "ds", **kw))
    assert not (tmp_path / "ds").exists()


def test_plan_covers_every_history_once():
    jobs = plan(GenerateConfig(num_histories=10000, heldout_fraction=0.1, shard_size=4096))
    assert sum(j.size for j in jobs if j.split == "train") == 9000
    assert sum(j.size for j in jobs if j.split == "test") == 1000
    assert [j.size for j in jobs] == [4096, 4096, 808, 1000]


def test_yaml_config_and_flags(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("learner: ucb\nsteps: 33\nnum-arms: 4\n")
    cfg = parse_config(GenerateConfig, ["--config", str(yml), "--steps", "12"])
    assert (cfg.learner, cfg.steps, cfg.num_arms) == ("ucb", 12, 4)
    yml.write_text("stepz: 3\n")
    with pytest.raises(IclRlError, match="unknown option"):
        parse_config(GenerateConfig, ["--config", str(yml)])


def test_cli_errors_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "data_gen", *args], capture_output=True,
                              text=True, timeout=120)

    r = run("--env", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    from icl_rl.envs import ENVS

    assert r.stderr.strip().splitlines() == [
        f"icl-rl generate: error: unknown env 'nope'; choose one of: {', '.join(sorted(ENVS))}"]
    r = run("--num-histories", "-3", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "positive integer" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "Histories in all, train and held-out together" in r.stdout


def test_regenerated_folder_is_read_fresh(tmp_path):
    """A folder deleted and regenerated in place must never be served from a stale cache."""
    import shutil

    out = main(small(tmp_path / "ds", steps=20))
    assert load_histories(out, "train").history.num_steps == 20
    shutil.rmtree(out)
    main(small(tmp_path / "ds", steps=30))
    assert load_histories(out, "train").history.num_steps == 30


def test_accelerate_launch_two_ranks_gives_the_same_bytes(tmp_path):
    """`accelerate launch -m data_gen` on 2 CPU processes: each rank writes its own shards,
    rank 0 the card; the folder equals a single-process run's, byte for byte."""
    args = ["--env", "dark_room", "--learner", "q_learning", "--num-histories", "300",
            "--steps", "60", "--shard-size", "50", "--heldout-fraction", "0.2"]
    main(parse_config(GenerateConfig, [*args, "--out", str(tmp_path / "one")]))
    log = accelerate_launch(["data_gen", *args, "--out", str(tmp_path / "two")]).stdout
    # both ranks took part, each with its own shards (3 + 4 of 7: 5 train, 2 test)
    assert "rank 0 of 2 writes 4 shards" in log and "rank 1 of 2 writes 3 shards" in log, log
    one, two = digest(tmp_path / "one"), digest(tmp_path / "two")
    assert one == two and len(one) == 9  # 5 + 2 shards, card, stamp


@pytest.mark.parametrize("command", ["generate", "verify", "train", "rl2", "eval", "probe",
                                     "compare", "sweep", "demo"])
def test_every_option_has_help(command, capsys):
    """`icl-rl CMD --help` lists every field of the command's config with its docstring."""
    import dataclasses
    import importlib

    from icl_rl.cli import COMMANDS, main

    module = importlib.import_module(COMMANDS[command][0])
    config_cls = getattr(module, COMMANDS[command][1])  # the command module uses this class
    assert dataclasses.is_dataclass(config_cls)
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for field in dataclasses.fields(config_cls):
        assert f"--{field.name}" in text or f"--{field.name.replace('_', '-')}" in text
    assert text.count("(default:") >= len(dataclasses.fields(config_cls)) - 3
    assert not re.search(r"\(default: [^)]*\)\s+\(default:", text)  # each default said once


@pytest.mark.parametrize("env_name,learner,stride", [("dark_room", "q_learning", 3),
                                                      ("bernoulli_bandit", "ucb", 4)])
def test_episode_stride_keeps_every_kth_episode(env_name, learner, stride):
    """A strided history is exactly episodes 0, k, 2k, ... of the full learning history."""
    from icl_rl.envs import make_env
    from icl_rl.learners import make_learner
    from icl_rl.rollout import rollout

    env = make_env(env_name)
    tasks = env.sample_tasks(8, torch.Generator().manual_seed(0))
    ep = env.spec.episode_len
    kept_episodes = 5

    def run(steps, k):
        return rollout(env, make_learner(learner, env), tasks, steps,
                       torch.Generator().manual_seed(1), torch.Generator().manual_seed(2),
                       episode_stride=k)

    full = run(kept_episodes * stride * ep, 1)
    strided = run(kept_episodes * ep, stride)
    keep = torch.cat([torch.arange(e * ep, (e + 1) * ep)
                      for e in range(0, kept_episodes * stride, stride)])
    for name in ("observations", "actions", "rewards", "dones", "optimal_actions"):
        assert torch.equal(getattr(strided, name), getattr(full, name)[:, keep]), name
    assert not torch.equal(strided.actions, full.actions[:, :kept_episodes * ep])


def test_generate_records_the_episode_stride(tmp_path):
    out = main(small(tmp_path / "ds", env="dark_room", num_arms=None, learner="q_learning",
                     num_histories=20,
                     steps=60, episode_stride=5))
    assert read_card(out)["episode_stride"] == 5
    assert "every 5th episode of 300 steps" in (out / "README.md").read_text()
    assert load_histories(out, "train").history.num_steps == 60
    with pytest.raises(IclRlError, match="--episode-stride must be a positive integer"):
        main(small(tmp_path / "bad", episode_stride=0))


def test_train_tasks_restricts_the_training_distribution(tmp_path):
    """--train-tasks K: train histories cycle through K tasks (bandits: a seeded pool the same
    in every shard; gridworlds: the first K training goals); held-out histories unchanged."""
    few = main(small(tmp_path / "few", train_tasks=3))
    full = main(small(tmp_path / "full"))
    train, test = load_histories(few, "train"), load_histories(few, "test")
    assert len({tuple(t) for t in train.history.tasks.tolist()}) == 3  # across 3 shards
    assert set(train.task_ids.tolist()) == {0, 1, 2}
    assert torch.equal(test.history.tasks, load_histories(full, "test").history.tasks)
    assert read_card(few)["train_tasks"] == 3 and read_card(full)["train_tasks"] is None
    grid = main(small(tmp_path / "grid", env="dark_room", num_arms=None, learner="random",
                      train_tasks=2))
    card = read_card(grid)
    assert len(card["task_split"]["train"]) == 2
    assert set(load_histories(grid, "train").task_ids.tolist()) == set(card["task_split"]["train"])
    with pytest.raises(IclRlError, match="has 65 training tasks"):
        main(small(tmp_path / "x", env="dark_room", num_arms=None, learner="random",
                   train_tasks=66))
    with pytest.raises(IclRlError, match="--train-tasks must be a positive integer"):
        main(small(tmp_path / "x", train_tasks=0))


def test_progress_flag_hides_the_bar_and_is_not_part_of_the_dataset(tmp_path, capsys):
    """Like every command, generate takes --no-progress; it does not change the dataset's
    identity, so a rerun with the bar finds the dataset complete."""
    from data_gen.config import GenerateConfig
    from icl_rl.cli import main as cli_main

    assert GenerateConfig(progress=False).identity() == GenerateConfig().identity()
    out = str(tmp_path / "d")
    cli_main(["generate", "--num-histories", "8", "--steps", "5", "--out", out, "--no-progress"])
    assert "generate ucb" not in capsys.readouterr().err  # no bar
    stamp = (tmp_path / "d" / "generate_config.json").read_text()
    cli_main(["generate", "--num-histories", "8", "--steps", "5", "--out", out])
    assert (tmp_path / "d" / "generate_config.json").read_text() == stamp
