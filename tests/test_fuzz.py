"""Fuzzing bad input: every malformed dataset or config ends in IclRlError, never another
exception, a hang or a partial output."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from data_gen.generate import validate as validate_generate
from icl_rl.dataset import load_histories
from icl_rl.errors import IclRlError
from training.train import TrainConfig
from training.train import main as train
from training.train import validate as validate_train

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return generate(GenerateConfig(out=str(tmp_path_factory.mktemp("good") / "d"),
                                   env="dark_room", learner="random", num_histories=12,
                                   steps=40, shard_size=12, heldout_fraction=0.25))


def _shard(folder: Path) -> Path:
    return next(folder.glob("data/train-*.parquet"))


def _set_row(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    idx = table.column_names.index(column)
    return table.set_column(idx, column, pa.array(values, type=table.schema.field(idx).type))


MUTATIONS = ["drop_column", "ragged", "nan_reward", "inf_reward", "bad_action", "truncate_file",
             "future_schema", "no_card_section", "garbage_yaml", "string_rewards",
             "short_obs", "overlapping_split", "task_outside_split", "empty_split"]


def mutate(folder: Path, kind: str, data) -> None:
    shard = _shard(folder)
    table = pq.read_table(shard)
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    card = folder / "README.md"
    if kind == "drop_column":
        col = data.draw(st.sampled_from(["observations", "actions", "rewards", "dones", "task"]))
        table = table.drop_columns([col])
    elif kind == "ragged":
        acts = table.column("actions").to_pylist()[row]
        table = _set_row(table, "actions", row, acts[: data.draw(st.integers(0, len(acts) - 1))])
    elif kind in ("nan_reward", "inf_reward"):
        rew = table.column("rewards").to_pylist()[row]
        rew[data.draw(st.integers(0, len(rew) - 1))] = (float("nan") if kind == "nan_reward"
                                                        else float("-inf"))
        table = _set_row(table, "rewards", row, rew)
    elif kind == "bad_action":
        acts = table.column("actions").to_pylist()[row]
        acts[data.draw(st.integers(0, len(acts) - 1))] = data.draw(
            st.one_of(st.integers(-100, -1), st.integers(5, 10**6)))
        table = _set_row(table, "actions", row, acts)
    elif kind == "string_rewards":
        idx = table.column_names.index("rewards")
        table = table.set_column(idx, "rewards", pc.cast(table.column("rewards"),
                                                         pa.list_(pa.string())))
    elif kind == "short_obs":
        obs = table.column("observations").to_pylist()[row]
        obs[data.draw(st.integers(0, len(obs) - 1))] = [1.0]
        table = _set_row(table, "observations", row, obs)
    elif kind == "truncate_file":
        raw = shard.read_bytes()
        shard.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        return
    elif kind == "future_schema":
        text = card.read_text().replace("schema_version: 1",
                                        f"schema_version: {data.draw(st.integers(2, 99))}")
        card.write_text(text)
        return
    elif kind == "no_card_section":
        card.write_text(card.read_text().replace("icl_rl:", "something_else:"))
        return
    elif kind == "garbage_yaml":
        card.write_text("---\n" + data.draw(st.sampled_from(["{", "a: [1", ": :", "- x\n y"]))
                        + "\n---\n")
        return
    elif kind in ("overlapping_split", "task_outside_split"):
        text = card.read_text()
        head, body = text.split("\n---\n", 1)
        import yaml

        meta = yaml.safe_load(head[4:])
        split = meta["icl_rl"]["task_split"]
        if kind == "overlapping_split":
            split["train"].append(split["test"][0])
        else:
            split["train"] = [t for t in split["train"]
                              if t != table.column("task_id")[row].as_py()]
        card.write_text("---\n" + yaml.safe_dump(meta) + "---\n" + body)
        return
    elif kind == "empty_split":
        table = table.slice(0, 0)
    pq.write_table(table, shard)


@FUZZ
@given(kind=st.sampled_from(MUTATIONS), data=st.data())
def test_malformed_dataset_is_refused_cleanly(good, tmp_path, kind, data):
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path)) / "bad"  # a fresh folder per example
    shutil.copytree(good, folder)
    mutate(folder, kind, data)
    with pytest.raises(IclRlError):
        load_histories(folder, "train")
    out = folder.parent / (folder.name + "-run")
    with pytest.raises(IclRlError):
        train(TrainConfig(dataset=str(folder), out=str(out), max_steps=1, progress=False))
    assert not out.exists()  # refused before anything was written


ints = st.one_of(st.integers(-5, 5), st.just(10**9))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(-1.0))
names = st.one_of(st.sampled_from(["dark_room", "bernoulli_bandit", "dark_maze", "ucb",
                                   "q_learning", "ppo", "thompson"]), st.text(max_size=8))
kwargs = st.one_of(st.none(), st.text(max_size=12),
                   st.dictionaries(st.sampled_from(["c", "lr", "gamma", "epsilon", "num_arms",
                                                    "size", "episode_len", "noise_std", "zz"]),
                                   st.one_of(ints, floats, st.text(max_size=3)), max_size=3)
                   .map(json.dumps))


@FUZZ
@given(env=names, learner=names, n=ints, steps=ints, frac=floats, shard=ints,
       env_kwargs=kwargs, learner_kwargs=kwargs)
def test_generate_config_fuzz(tmp_path, env, learner, n, steps, frac, shard, env_kwargs,
                              learner_kwargs):
    # validate() only checks; it never creates the output folder
    cfg = GenerateConfig(out=str(tmp_path / "x"), env=env, learner=learner, num_histories=n,
                         steps=steps, heldout_fraction=frac, shard_size=shard,
                         env_kwargs=env_kwargs, learner_kwargs=learner_kwargs)
    with contextlib.suppress(IclRlError):
        validate_generate(cfg)
    assert not (tmp_path / "x").exists()


@FUZZ
@given(context=ints, hidden=ints, heads=ints, batch=ints, steps=ints, lr=floats,
       schedule=st.text(max_size=8), report=st.text(max_size=10), warmup=ints)
def test_train_config_fuzz(context, hidden, heads, batch, steps, lr, schedule, report, warmup):
    cfg = TrainConfig(context=context, model_kwargs={"hidden_size": hidden, "num_heads": heads},
                      batch_size=batch,
                      max_steps=steps, lr=lr, schedule=schedule, report_to=report,
                      warmup_steps=warmup)
    with contextlib.suppress(IclRlError):
        validate_train(cfg)


def test_errors_name_the_row_across_shards_and_float32_overflow(tmp_path):
    """A split read from several shards names a bad row by its index in the split; a float64
    reward beyond float32's range (what the model reads) is refused, not turned into inf."""
    folder = generate(GenerateConfig(out=str(tmp_path / "d"), env="dark_room", learner="random",
                                     num_histories=40, steps=20, shard_size=8,
                                     heldout_fraction=0.25))
    shards = sorted(Path(folder).glob("data/train-*.parquet"))
    assert len(shards) > 1
    first = pq.read_table(shards[0]).num_rows
    second = pq.read_table(shards[1])
    pq.write_table(_set_row(second, "actions", 2, second.column("actions")[2].as_py()[:5]),
                   shards[1])
    with pytest.raises(IclRlError, match=f"row {first + 2} has 5 entries in 'actions'"):
        load_histories(folder, "train")
    pq.write_table(second, shards[1])
    def widened(table):  # rewards stored as float64
        i = table.column_names.index("rewards")
        return table.set_column(i, "rewards", pc.cast(table.column("rewards"),
                                                      pa.list_(pa.float64())))

    pq.write_table(widened(second), shards[1])  # one shard of another schema
    with pytest.raises(IclRlError, match=r"shards disagree on the schema \(Schema at index 1"):
        load_histories(folder, "train")
    for shard in shards:
        pq.write_table(widened(pq.read_table(shard)), shard)
    wide = pq.read_table(shards[1])
    rewards = wide.column("rewards").to_pylist()
    rewards[3][7] = 1e300
    pq.write_table(wide.set_column(wide.column_names.index("rewards"), "rewards",
                                   pa.array(rewards, pa.list_(pa.float64()))), shards[1])
    with pytest.raises(IclRlError, match=rf"non-finite value \(1e\+300, beyond float32\) in "
                                         rf"row {first + 3}, step 7"):
        load_histories(folder, "train")
