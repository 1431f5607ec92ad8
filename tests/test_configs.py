"""The command sets shipped in configs/ parse, validate and chain into each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.generate import GenerateConfig
from data_gen.generate import validate as validate_generate
from eval.evaluate import EvalConfig
from eval.evaluate import validate as validate_eval
from icl_rl.config import parse_config
from training.train import TrainConfig
from training.train import validate as validate_train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SETS = sorted(p for p in CONFIGS.iterdir() if (p / "generate.yaml").exists())


def test_there_are_command_sets():
    assert {"darkroom", "darkroom_eps", "darkroom_q"} <= {p.name for p in SETS}


@pytest.mark.parametrize("folder", SETS, ids=lambda p: p.name)
def test_command_set_parses_validates_and_chains(folder):
    gen = parse_config(GenerateConfig, ["--config", str(folder / "generate.yaml")])
    train = parse_config(TrainConfig, ["--config", str(folder / "train.yaml")])
    ev = parse_config(EvalConfig, ["--config", str(folder / "eval.yaml")])
    validate_generate(gen)  # builds the env and the learner from its kwargs
    validate_train(train)
    validate_eval(ev)
    assert train.dataset == gen.out
    assert ev.dataset == gen.out
    assert Path(ev.model) in (Path(train.out), Path(train.out) / "model")


RL2_SETS = sorted(p for p in CONFIGS.iterdir() if (p / "rl2.yaml").exists())


@pytest.mark.parametrize("folder", RL2_SETS, ids=lambda p: p.name)
def test_rl2_command_set_parses_validates_and_chains(folder):
    from training.rl2 import RL2Config
    from training.rl2 import validate as validate_rl2

    rl2 = parse_config(RL2Config, ["--config", str(folder / "rl2.yaml")])
    ev = parse_config(EvalConfig, ["--config", str(folder / "eval.yaml")])
    validate_rl2(rl2)
    validate_eval(ev)
    assert Path(ev.model) in (Path(rl2.out), Path(rl2.out) / "model")
    assert ev.episodes == rl2.trial_episodes  # evaluated on the trial it was trained for


def test_the_fast_rl2_bandit_recipe_chains():
    """rl2_fast.yaml is rl2.yaml's recipe at a throughput shape, evaluated like it."""
    from training.rl2 import RL2Config
    from training.rl2 import validate as validate_rl2

    folder = CONFIGS / "rl2_bandit"
    base = parse_config(RL2Config, ["--config", str(folder / "rl2.yaml")])
    fast = parse_config(RL2Config, ["--config", str(folder / "rl2_fast.yaml")])
    validate_rl2(fast)
    ev, ev_fast = (parse_config(EvalConfig, ["--config", str(folder / name)])
                   for name in ("eval.yaml", "eval_fast.yaml"))
    validate_eval(ev_fast)
    assert Path(ev_fast.model) == Path(fast.out) / "model" and fast.out != base.out
    assert (fast.epochs, fast.minibatches) == (1, 8) and fast.num_envs >= 4 * base.num_envs
    same = ("env", "env_kwargs", "model", "model_kwargs", "trial_episodes", "gamma",
            "gae_lambda", "entropy_coef", "memory", "hide_inputs", "train_tasks", "seed")
    assert {f: getattr(fast, f) for f in same} == {f: getattr(base, f) for f in same}
    assert {f: getattr(ev_fast, f) for f in ("num_tasks", "episodes", "seed", "baselines")} == \
        {f: getattr(ev, f) for f in ("num_tasks", "episodes", "seed", "baselines")}


def test_every_sweep_file_plans(monkeypatch):
    from pipeline.sweep import SweepConfig, plan

    monkeypatch.chdir(CONFIGS.parent)  # sweep files name stage files relative to the repo

    for path in sorted((CONFIGS / "sweeps").glob("*.yaml")):
        out, variants = plan(SweepConfig(sweep=str(path)))
        assert variants and str(out).startswith("runs/sweeps/")


def test_every_stage_file_parses_and_validates():
    """Every generate*, train* and eval* file of every command set, the named variants too."""
    kinds = {"generate": (GenerateConfig, validate_generate),
             "train": (TrainConfig, validate_train), "eval": (EvalConfig, validate_eval)}
    seen = 0
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        kind = path.stem.split("_")[0]
        if path.parent.name == "sweeps" or kind not in kinds:
            continue
        cls, validate = kinds[kind]
        validate(parse_config(cls, ["--config", str(path)]))
        seen += 1
    assert seen > 30


def test_the_long_dpt_recipe_chains():
    folder = CONFIGS / "dpt_bandit"
    gen = parse_config(GenerateConfig, ["--config", str(folder / "generate_rollin_100k.yaml")])
    train = parse_config(TrainConfig, ["--config", str(folder / "train_dpt_long.yaml")])
    ev = parse_config(EvalConfig, ["--config", str(folder / "eval_dpt_long.yaml")])
    assert train.dataset == gen.out == ev.dataset and ev.model == f"{train.out}/model"
    assert gen.num_histories == 100_000 and train.max_steps == 12_000
    gen = parse_config(GenerateConfig, ["--config", str(folder / "generate_rollin_400k.yaml")])
    train = parse_config(TrainConfig, ["--config", str(folder / "train_dpt_400k.yaml")])
    ev = parse_config(EvalConfig, ["--config", str(folder / "eval_dpt_400k.yaml")])
    assert train.dataset == gen.out == ev.dataset and ev.model == f"{train.out}/model"
    assert gen.num_histories == 400_000 and gen.seed not in (0, 1, 2)  # fresh sets
    assert train.max_steps * train.batch_size <= gen.num_histories * 0.95  # each seen once
    assert ev.baseline_specs()["exact"] == ("thompson", {"uniform_prior": True})
    # then on Thompson-sampling histories: fresh tasks, from that model, each history once
    ts = parse_config(GenerateConfig, ["--config", str(folder / "generate_thompson_100k.yaml")])
    tune = parse_config(TrainConfig, ["--config", str(folder / "train_dpt_400k_ts.yaml")])
    ev_ts = parse_config(EvalConfig, ["--config", str(folder / "eval_dpt_400k_ts.yaml")])
    assert tune.dataset == ts.out and tune.init_model == f"{train.out}/model"
    assert ts.learner == "thompson" and ts.env_kwargs == gen.env_kwargs
    assert ts.seed not in (0, 1, 2, 3) and ts.steps == gen.steps
    assert tune.max_steps * tune.batch_size <= ts.num_histories * 0.95
    assert ev_ts.model == f"{tune.out}/model" and ev_ts.dataset == ev.dataset
    assert {f: getattr(ev_ts, f) for f in ("num_tasks", "episodes", "seed", "baselines")} == \
        {f: getattr(ev, f) for f in ("num_tasks", "episodes", "seed", "baselines")}
    # and on a pool of fresh roll-ins and those Thompson histories, half each
    mix = parse_config(TrainConfig, ["--config", str(folder / "train_dpt_400k_mix.yaml")])
    ev_mix = parse_config(EvalConfig, ["--config", str(folder / "eval_dpt_400k_mix.yaml")])
    rollins, thompson = mix.dataset.split(",")
    assert thompson == ts.out and rollins not in (gen.out, ev.dataset) and mix.init_model == \
        tune.init_model
    assert {f: getattr(mix, f) for f in ("max_steps", "batch_size", "lr", "warmup_steps")} == \
        {f: getattr(tune, f) for f in ("max_steps", "batch_size", "lr", "warmup_steps")}
    assert ev_mix.model == f"{mix.out}/model" and ev_mix.dataset == ev.dataset
    assert ev_mix.baselines == ev.baselines and ev_mix.offline_context == ev.offline_context
    # or from scratch on a pool of the 100k roll-ins and those Thompson histories
    pool = parse_config(TrainConfig, ["--config", str(folder / "train_dpt_pool.yaml")])
    ev_pool = parse_config(EvalConfig, ["--config", str(folder / "eval_dpt_pool.yaml")])
    r100k = parse_config(GenerateConfig, ["--config", str(folder / "generate_rollin_100k.yaml")])
    assert pool.dataset.split(",") == [r100k.out, ts.out] and pool.init_model is None
    assert r100k.seed != ts.seed and r100k.learner == "dirichlet_mix"
    assert pool.max_steps * pool.batch_size <= (r100k.num_histories + ts.num_histories) * 0.95
    assert ev_pool.model == f"{pool.out}/model" and ev_pool.dataset == r100k.out
    assert {f: getattr(ev_pool, f) for f in ("num_tasks", "episodes", "seed", "baselines")} == \
        {f: getattr(ev_mix, f) for f in ("num_tasks", "episodes", "seed", "baselines")}
    folder = CONFIGS / "dpt_darkroom"
    gen = parse_config(GenerateConfig, ["--config", str(folder / "generate_100k.yaml")])
    train = parse_config(TrainConfig, ["--config", str(folder / "train_long.yaml")])
    ev = parse_config(EvalConfig, ["--config", str(folder / "eval_long.yaml")])
    assert train.dataset == gen.out == ev.dataset and ev.model == f"{train.out}/model"
