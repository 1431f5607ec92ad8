"""Learning-history datasets: one row per history, stored in the Hugging Face Hub layout.

A dataset folder holds `data/{split}-0000i-of-0000n.parquet` shards (split `train` and the
held-out split `test`) and a `README.md` dataset card whose YAML says how the data was made
(env, learner, parameters, seed, task split, schema version). `datasets.load_dataset(folder)`
reads it; so does `load_histories` below, which also validates it against the card.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from icl_rl import __version__
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write, atomic_write_text
from icl_rl.rollout import History

SCHEMA_VERSION = 1
SPLITS = ("train", "test")  # `test` is the held-out split: tasks the training never sees
COLUMNS = ("observations", "actions", "rewards", "dones", "optimal_actions", "task", "task_id",
           "seed")
REQUIRED = ("observations", "actions", "rewards", "dones", "task")
CARD_KEY = "icl_rl"  # the card's YAML section with everything icl-rl needs to read the data


def shard_path(split: str, index: int, count: int) -> str:
    """Hub-layout path of shard `index` of `count` of `split`, relative to the dataset folder."""
    return f"data/{split}-{index:05d}-of-{count:05d}.parquet"


def _nested(flat: np.ndarray, *lengths: int) -> pa.Array:
    """Wrap a flat numpy array in list levels of fixed lengths (innermost last)."""
    arr: pa.Array = pa.array(flat)
    for length in reversed(lengths):
        n = len(arr) // length
        arr = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * length), arr)
    return arr


def history_table(history: History, task_ids: Tensor, seed: int) -> pa.Table:
    """One row per history; built from flat buffers with no per-row Python."""
    n, t, d = history.observations.shape
    cols = {
        "observations": _nested(history.observations.float().reshape(-1).numpy(), t, d),
        "actions": _nested(history.actions.reshape(-1).numpy().astype(np.int64), t),
        "rewards": _nested(history.rewards.float().reshape(-1).numpy(), t),
        "dones": _nested(history.dones.reshape(-1).numpy(), t),
    }
    if history.optimal_actions is not None:
        cols["optimal_actions"] = _nested(history.optimal_actions.reshape(-1).numpy(), t)
    cols["task"] = _nested(history.tasks.float().reshape(-1).numpy(), history.tasks.shape[1])
    cols["task_id"] = pa.array(task_ids.numpy().astype(np.int64))
    cols["seed"] = pa.array(np.full(n, seed, dtype=np.int64))
    return pa.table(cols)


def write_shard(table: pa.Table, path: Path) -> None:
    """Write one parquet shard atomically."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every parquet shard under folder/data, by relative path."""
    import hashlib

    out = {}
    for p in sorted((folder / "data").glob("*.parquet")):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def content_hash(hashes: dict[str, str]) -> str:
    """One sha256 over the per-file hashes (sorted by path)."""
    import hashlib

    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def verify(folder: str | Path) -> dict:
    """Check a dataset folder against the hashes in its card, then validate every split.

    Raises IclRlError naming the first file that is missing, extra or changed.
    """
    folder = Path(folder)
    meta = read_card(folder)
    want = meta.get("files")
    if not isinstance(want, dict):
        raise IclRlError(f"{folder}/README.md: the card records no file hashes (made before "
                         "icl-rl 0.1.0?); regenerate the dataset to be able to verify it")
    have = file_hashes(folder)
    for path in sorted(set(want) | set(have)):
        if path not in have:
            raise IclRlError(f"{folder}/{path}: missing (listed in the card); regenerate it")
        if path not in want:
            raise IclRlError(f"{folder}/{path}: not listed in the card; remove it")
        if have[path] != want[path]:
            raise IclRlError(f"{folder}/{path}: content differs from the card's sha256 "
                             f"({have[path][:12]}... vs {want[path][:12]}...); regenerate it")
    if content_hash(have) != meta.get("content_hash"):
        raise IclRlError(f"{folder}/README.md: content_hash does not match the file hashes")
    rows = {split: load_histories(folder, split).history.num_histories
            for split in meta.get("splits", {})}
    return {"files": len(have), "content_hash": meta["content_hash"], "histories": rows}


# -- the dataset card ------------------------------------------------------------------------


def write_card(folder: Path, meta: dict, body: str) -> None:
    """Write README.md: Hub metadata (configs, license, tags) plus the icl_rl section."""
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license=meta.get("license", "mit"),
        tags=["reinforcement-learning", "in-context-learning", "algorithm-distillation",
              meta["env"]["name"], meta["learner"]["name"]],
        task_categories=["reinforcement-learning"],
        pretty_name=meta.get("pretty_name"),
        configs=[{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/{s}-*"} for s in meta["splits"]],
        }],
        **{CARD_KEY: meta},
    )
    atomic_write_text(folder / "README.md", f"---\n{data.to_yaml()}\n---\n{body}")


def card_meta(env, learner: str, learner_params: dict, splits: dict,
              task_split: dict | None, license: str, **settings) -> dict:
    """The card's icl_rl section: schema and generator versions, env (name, params, spec),
    learner, the generate settings (seed, steps, episode_stride, shard_size,
    heldout_fraction, train_tasks), the splits' sizes, the license and the task split of a
    finite family."""
    import dataclasses

    meta = {
        "schema_version": SCHEMA_VERSION,
        "generator_version": __version__,
        "env": {"name": env.spec.name, "params": env.params(),
                # through JSON: tuples become lists, which the card's YAML can hold
                "spec": json.loads(json.dumps(dataclasses.asdict(env.spec)))},
        "learner": {"name": learner, "params": learner_params},
        **settings,
        "splits": splits,
        "license": license,
    }
    if task_split is not None:
        meta["task_split"] = task_split
    return meta


def card_body(meta: dict) -> str:
    """The human part of the dataset card."""
    env, learner = meta["env"], meta["learner"]
    k = meta.get("episode_stride", 1)
    stride = (f" (every {k}th episode of {meta['steps'] * k} steps of learning: the learner's "
              f"episodes 0, {k}, {2 * k}, ...)" if k > 1 else ", consecutive")
    rows = "\n".join(f"| {s} | {v['num_histories']} | {v['num_shards']} |"
                     for s, v in meta["splits"].items())
    few = (f" The `train` histories cycle through only {meta['train_tasks']} distinct "
           "task(s) (a task-diversity ablation)." if meta.get("train_tasks") else "")
    return f"""
# {learner['name']} learning histories on {env['name']}

Learning histories of the **{learner['name']}** algorithm ({learner['params']}) on tasks of
**{env['name']}** ({env['params']}), made with icl-rl {meta['generator_version']}. Each row is
one history: one task, {meta['steps']} steps of the learner learning it{stride}. Episodes
last {env['spec']['episode_len']} step(s); `dones` marks the last step of each.

| split | histories | shards |
|---|---|---|
{rows}

The `test` split is held out: its tasks are never used for training.{few} Content hash (sha256 of
the shards' hashes): `{meta['content_hash']}`; `icl-rl verify FOLDER` checks it.

## Schema (version {meta['schema_version']})

| column | type | meaning |
|---|---|---|
| observations | list of list of float32 [T, {env['spec']['obs_dim']}] | o_t |
| actions | list of int64 [T] | a_t chosen by the learner |
| rewards | list of float32 [T] | r_t |
| dones | list of bool [T] | t is the last step of an episode |
| optimal_actions | list of int64 [T] | the oracle's action at o_t |
| task | list of float32 | the task parameters |
| task_id, seed | int64 | which task, which base seed |

## Load it

```python
from datasets import load_dataset
ds = load_dataset("PATH_OR_REPO_ID")  # splits: train, test
```

or, validated against this card, as tensors: `icl_rl.dataset.load_histories(PATH, "train")`.
"""


def read_card_text(text: str, where: str) -> dict:
    """The icl_rl metadata of a card's text; `where` names the file in errors."""
    import yaml

    if not text.startswith("---"):
        raise IclRlError(f"{where}: no YAML header; is this an icl-rl dataset folder?")
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError as e:
        raise IclRlError(f"{where}: the YAML header does not parse ({e})") from None
    if not isinstance(header, dict):
        raise IclRlError(f"{where}: the YAML header is not a mapping of keys to values")
    meta = header.get(CARD_KEY)
    if not isinstance(meta, dict):
        raise IclRlError(
            f"{where}: the card has no '{CARD_KEY}' section; regenerate the data with "
            "`icl-rl generate` or add the section"
        )
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise IclRlError(
            f"{where}: schema_version {version!r} is not one this icl-rl ({__version__}) reads "
            f"(<= {SCHEMA_VERSION}); upgrade icl-rl"
        )
    return meta


def read_card(source: str | Path) -> dict:
    """The icl_rl metadata of a dataset folder or Hub repo id."""
    path = Path(source)
    if not path.exists():
        path = resolve_source(source)
    if path.is_dir():
        card = path / "README.md"
        if not card.exists():
            raise IclRlError(f"{path}: no README.md dataset card; is this an icl-rl dataset?")
        return read_card_text(card.read_text(), str(card))
    return {}  # a lone parquet file has no card


# -- reading ---------------------------------------------------------------------------------


@dataclass
class Histories:
    """A split read back into tensors, with its card metadata."""

    history: History
    task_ids: Tensor  # [N]
    meta: dict
    source: str


def resolve_source(source: str | Path) -> Path:
    """A local folder or parquet file as is; a Hub repo id downloaded to the local cache."""
    path = Path(source)
    if path.exists():
        return path
    from icl_rl import hub

    return hub.download(str(source), "dataset")


def split_files(folder: Path, split: str) -> list[Path]:
    """The parquet shards of one split of a Hub-layout folder."""
    files = sorted((folder / "data").glob(f"{split}-*.parquet"))
    if not files:
        have = sorted({p.name.split("-")[0] for p in (folder / "data").glob("*.parquet")})
        raise IclRlError(f"{folder}: no split {split!r} (data/{split}-*.parquet); it has: "
                         f"{', '.join(have) or 'no parquet shards'}")
    return files


def _load_arrow(source: str | Path, split: str) -> pa.Table:
    """The split's rows as one Arrow table.

    Read straight from the parquet shards (the same files `datasets.load_dataset` reads):
    no copy into a cache, and never a stale cached copy of a folder regenerated in place.
    """
    path = resolve_source(source)
    files = [path] if path.is_file() else split_files(path, split)
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowInvalid, OSError) as e:
            raise IclRlError(f"{f} ({split} split): does not read as parquet ({e}); regenerate "
                             "the dataset with icl-rl generate (an interrupted copy or download "
                             "truncates shards)") from None
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as e:
        first = str(e).strip().splitlines()[0]
        raise IclRlError(f"{source} [{split}]: shards disagree on the schema ({first} ...); "
                         "regenerate the dataset, or rewrite the odd shards with the others' "
                         "column types") from None


# The innermost value type each column must have, and how deeply it is nested in lists.
_TYPES = {"observations": (pa.types.is_floating, 2, "float"),
          "actions": (pa.types.is_integer, 1, "int"),
          "rewards": (pa.types.is_floating, 1, "float"),
          "dones": (pa.types.is_boolean, 1, "bool"),
          "optimal_actions": (pa.types.is_integer, 1, "int"),
          "task": (pa.types.is_floating, 1, "float"),
          "task_id": (pa.types.is_integer, 0, "int")}


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray:
    """A column, its type checked against `_TYPES` (chunks kept: one per shard or batch)."""
    if name not in table.column_names:
        raise IclRlError(
            f"{where}: column {name!r} is missing (has {table.column_names}); "
            "regenerate with `icl-rl generate`"
        )
    col = table.column(name)
    check, depth, what = _TYPES[name]
    t = col.type
    for _ in range(depth):
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t)):
            t = None
            break
        t = t.value_type
    if t is None or not check(t):
        raise IclRlError(f"{where}: column {name!r} has type {col.type}, expected "
                         f"{'list of ' * depth}{what}; regenerate with `icl-rl generate`")
    return col


def _row_length(arr: pa.ChunkedArray, name: str, where: str, length: int | None) -> int:
    """The common length of a list column's rows (`length` if given); ragged rows refused."""
    lengths = pc.list_value_length(arr).to_numpy()
    if len(lengths) == 0:
        return length or 0
    want = int(lengths[0]) if length is None else length
    bad = np.nonzero(lengths != want)[0]
    if len(bad):
        raise IclRlError(
            f"{where}: row {bad[0]} has {lengths[bad[0]]} entries in {name!r}, expected {want} "
            "(ragged histories); every history of a split must have the same number of steps"
        )
    return want


def _rows(col: pa.ChunkedArray, name: str, where: str, length: int | None,
          dtype) -> tuple[np.ndarray, int]:
    """A list column of scalars whose rows must all have the same length, flattened into one
    new array of `dtype`; returns (flat values, length). Each chunk is converted straight into
    its slice of the result: one copy, where concatenating the chunks and then casting made
    two (a 100,000-history split is ~10 GB of such copies)."""
    want = _row_length(col, name, where, length)
    out = np.empty(len(col) * want, dtype=dtype)
    i = 0
    for chunk in col.chunks:
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        with np.errstate(over="ignore"):  # a float64 beyond float32: inf, refused by the caller
            out[i:i + len(values)] = values
        i += len(values)
    return out, want


def load_histories(source: str | Path, split: str = "train") -> Histories:
    """Read and validate one split of a learning-history dataset (folder, parquet or repo id)."""
    meta = read_card(source)
    return table_to_histories(_load_arrow(source, split), meta, source, split)


def split_sources(dataset: str) -> list[str]:
    """The datasets a `--dataset` names: one, or several separated by commas."""
    sources = [s.strip() for s in str(dataset).split(",")]
    if not all(sources):
        raise IclRlError(f"--dataset {dataset!r}: an empty name between commas; give one "
                         "dataset, or several as a,b")
    return sources


def load_pooled(sources: list[str], split: str = "train") -> Histories:
    """One split of several datasets of the same env, pooled: their histories stacked in
    order. They must agree on the env (name and parameters), the history length, the held-out
    task split and the columns; the first one's card stands for the pool (its held-out tasks,
    its source learner)."""
    parts = [load_histories(s, split) for s in sources]
    first = parts[0]
    if len(parts) == 1:
        return first
    h0 = first.history
    for part in parts[1:]:
        where, h = f"{part.source} (pooled with {first.source})", part.history
        for key, what in (("env", "env"), ("task_split", "held-out task split")):
            if part.meta.get(key) != first.meta.get(key):
                raise IclRlError(f"{where}: its {what} {part.meta.get(key)} differs from "
                                 f"{first.meta.get(key)}; pool only datasets of one env and "
                                 "task split")
        if h.num_steps != h0.num_steps:
            raise IclRlError(f"{where}: histories of {h.num_steps} steps, the first dataset's "
                             f"have {h0.num_steps}; pool only histories of one length")
        if (h.optimal_actions is None) != (h0.optimal_actions is None):
            raise IclRlError(f"{where}: one of the two has no optimal_actions column; "
                             "regenerate it with icl-rl generate, which records it")
    history = History.cat([p.history for p in parts])
    return Histories(history, torch.cat([p.task_ids for p in parts]), first.meta,
                     ",".join(p.source for p in parts))


def iter_histories(source: str | Path, split: str, rows: int, rank: int = 0,
                   world: int = 1) -> Iterator[Histories]:
    """Stream a split in validated chunks of at most `rows` histories, never all at once.

    Rank r of `world` reads shards r, r + world, ... (whole shards, so no row is read twice
    across processes); with fewer shards than ranks, rows are dealt out instead.
    """
    meta = read_card(source)
    path = resolve_source(source)
    files = [path] if path.is_file() else split_files(path, split)
    by_shard = len(files) >= world
    for i, f in enumerate(files):
        if by_shard and i % world != rank:
            continue
        try:
            pf = pq.ParquetFile(f)
            for j, batch in enumerate(pf.iter_batches(batch_size=rows)):
                table = pa.Table.from_batches([batch])
                if not by_shard:
                    table = table.take(list(range(rank, table.num_rows, world)))
                    if table.num_rows == 0:
                        continue
                yield table_to_histories(table, meta, f, f"{split}, rows from {j * rows}")
        except (pa.ArrowInvalid, OSError) as e:
            raise IclRlError(f"{f}: does not read as parquet ({e}); regenerate it") from None


def table_to_histories(table: pa.Table, meta: dict, source, split: str) -> Histories:
    """Validate an Arrow table of histories against the card and turn it into tensors."""
    where = f"{source} [{split}]"
    n = table.num_rows
    if n == 0:
        raise IclRlError(f"{where}: the split has no histories")
    acts, t = _rows(_column(table, "actions", where), "actions", where, None, np.int64)
    rew_col = _column(table, "rewards", where)
    rew, _ = _rows(rew_col, "rewards", where, t, np.float32)
    dones, _ = _rows(_column(table, "dones", where), "dones", where, t, bool)
    obs_col = _column(table, "observations", where)
    _row_length(obs_col, "observations", where, t)
    obs_dim = meta.get("env", {}).get("spec", {}).get("obs_dim")
    # one level down: a chunked column of per-step observation lists
    obs_steps = pa.chunked_array([c.flatten() for c in obs_col.chunks], obs_col.type.value_type)
    obs, obs_dim = _rows(obs_steps, "observations", where, obs_dim, np.float32)
    task, task_dim = _rows(_column(table, "task", where), "task", where, None, np.float32)
    bad = np.nonzero(~np.isfinite(rew))[0]  # as the model reads them: float32
    if len(bad):
        value = pc.list_flatten(rew_col)[int(bad[0])].as_py()
        raise IclRlError(
            f"{where}: field 'rewards' has a non-finite value ({value}"
            f"{'' if not np.isfinite(value) else ', beyond float32'}) in row "
            f"{bad[0] // t}, step {bad[0] % t}; fix or drop that history"
        )
    num_actions = meta.get("env", {}).get("spec", {}).get("num_actions")
    if num_actions is not None and len(acts) and (acts.min() < 0 or acts.max() >= num_actions):
        i = int(np.nonzero((acts < 0) | (acts >= num_actions))[0][0])
        raise IclRlError(
            f"{where}: field 'actions' has {acts[i]} in row {i // t}, step {i % t}, outside the "
            f"action space [0, {num_actions}) of the card's env"
        )
    opt = None
    if "optimal_actions" in table.column_names:
        o, _ = _rows(_column(table, "optimal_actions", where), "optimal_actions", where, t,
                     np.int64)
        opt = torch.from_numpy(o).reshape(n, t)
    task_ids = (torch.from_numpy(_column(table, "task_id", where).to_numpy().astype(np.int64))
                if "task_id" in table.column_names else torch.arange(n))
    check_task_split(meta, split.split(",")[0], task_ids, where)
    history = History(
        observations=torch.from_numpy(obs).reshape(n, t, obs_dim),
        actions=torch.from_numpy(acts).reshape(n, t),
        rewards=torch.from_numpy(rew).reshape(n, t),
        dones=torch.from_numpy(dones).reshape(n, t),
        tasks=torch.from_numpy(task).reshape(n, task_dim),
        optimal_actions=opt,
    )
    return Histories(history, task_ids, meta, str(source))


def check_task_split(meta: dict, split: str, task_ids: Tensor, where: str) -> None:
    """A finite family's split must be disjoint and every row's task must belong to its split."""
    ts = meta.get("task_split")
    if not ts:
        return
    train, test = set(ts.get("train", [])), set(ts.get("test", []))
    overlap = sorted(train & test)
    if overlap:
        raise IclRlError(f"{where}: the card's task_split puts task(s) {overlap[:5]} in both "
                         "train and test; held-out tasks must never be trained on — regenerate")
    allowed = train if split == "train" else test if split == "test" else train | test
    bad = [i for i, t in enumerate(task_ids.tolist()) if t not in allowed]
    if bad:
        raise IclRlError(f"{where}: row {bad[0]} has task_id {int(task_ids[bad[0]])}, which the "
                         f"card's task_split does not list under {split!r}; regenerate")
