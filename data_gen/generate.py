"""`icl-rl generate`: roll a learning RL algorithm out on many tasks, write a Hub-layout dataset.

Histories are produced in fixed-size shards. Each shard's tasks, environment randomness and
learner randomness come from generators seeded by (seed, split, shard index) only, so the bytes
of every shard are the same whatever `--num-proc` is, and an interrupted run resumes by
generating only the shards that are missing.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data_gen.config import GenerateConfig
from icl_rl.config import parse_config, require_positive
from icl_rl.dataset import (
    card_body,
    content_hash,
    file_hashes,
    history_table,
    shard_path,
    write_card,
    write_shard,
)
from icl_rl.dataset import card_meta as dataset_card_meta
from icl_rl.envs import Env, make_env
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text, remove_stale_temporaries
from icl_rl.learners import make_learner
from icl_rl.rollout import rollout
from icl_rl.tasks import card_split, split_ids, training_pool

log = logging.getLogger(__name__)
STAMP = "generate_config.json"  # written first; identifies the dataset a folder is becoming


def validate(config: GenerateConfig) -> tuple[Env, object]:
    """Check every field before any work; returns the env and a learner built from the config."""
    require_positive(config, "num_histories", "steps", "shard_size", "num_proc",
                     "episode_stride")
    if not 0.0 <= config.heldout_fraction < 1.0:
        raise IclRlError(f"--heldout-fraction must be in [0, 1), got {config.heldout_fraction}")
    require_positive(config, "train_tasks", optional=True)
    env = make_env(config.env, **config.env_params())
    learner = make_learner(config.learner, env, **config.learner_params())
    if env.has_finite_tasks:
        split_ids(env, config.seed, config.heldout_fraction, config.train_tasks)
    return env, learner


@dataclass(frozen=True)
class ShardJob:
    """One shard: which split, which index, which histories."""

    split: str
    index: int
    count: int
    start: int  # first history index within the split
    size: int


def plan(config: GenerateConfig) -> list[ShardJob]:
    """All shards of the dataset, train first."""
    n_train = plan_train_size(config)
    sizes = {"train": n_train, "test": config.num_histories - n_train}
    jobs = []
    for split, n in sizes.items():
        count = -(-n // config.shard_size)
        for i in range(count):
            start = i * config.shard_size
            jobs.append(ShardJob(split, i, count, start, min(config.shard_size, n - start)))
    return jobs


def shard_seeds(seed: int, split: str, index: int) -> list[int]:
    """Seeds for the (task, env, learner) generators of one shard; independent of --num-proc."""
    ss = np.random.SeedSequence([seed, ("train", "test").index(split), index])
    return [int(s) for s in ss.generate_state(3, dtype=np.uint64)]


def shard_tasks(env: Env, config: GenerateConfig, job: ShardJob,
                task_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Tasks [n, task_dim] and task ids [n] of one shard."""
    rows = torch.arange(job.start, job.start + job.size)  # history indices within the split
    pool = config.train_tasks if job.split == "train" else None
    if not env.has_finite_tasks:
        if pool is not None:  # the same few tasks for every train shard, ids = pool index
            tasks = training_pool(env, config.seed, config.heldout_fraction, pool)
            return tasks[rows % pool], rows % pool
        tasks = env.sample_tasks(job.size, task_gen)
        offset = 0 if job.split == "train" else plan_train_size(config)
        return tasks, rows + offset
    train_ids, test_ids = split_ids(env, config.seed, config.heldout_fraction,
                                    config.train_tasks)
    ids = train_ids if job.split == "train" else test_ids
    if len(ids) == 0:
        raise IclRlError(f"{config.env}: the {job.split} split has no tasks; change "
                         "--heldout-fraction")
    pick = ids[rows % len(ids)]
    return env.task_set()[pick], pick


def plan_train_size(config: GenerateConfig) -> int:
    """Number of train histories."""
    return config.num_histories - int(round(config.num_histories * config.heldout_fraction))


def run_shard(config: GenerateConfig, job: ShardJob, threads: int | None = None) -> str:
    """Generate and write one shard; returns its relative path."""
    if threads is not None:
        torch.set_num_threads(threads)
    env, learner = validate(config)
    task_seed, env_seed, agent_seed = shard_seeds(config.seed, job.split, job.index)
    tasks, task_ids = shard_tasks(env, config, job, torch.Generator().manual_seed(task_seed))
    history = rollout(env, learner, tasks, config.steps,
                      env_generator=torch.Generator().manual_seed(env_seed),
                      agent_generator=torch.Generator().manual_seed(agent_seed),
                      episode_stride=config.episode_stride)
    rel = shard_path(job.split, job.index, job.count)
    write_shard(history_table(history, task_ids, config.seed), Path(config.out) / rel)
    return rel


def _prepare_folder(config: GenerateConfig) -> bool:
    """Create the output folder or check it holds this same dataset; True if already complete."""
    out = Path(config.out)
    stamp = out / STAMP
    if out.exists() and not out.is_dir():
        raise IclRlError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not stamp.exists():
            raise IclRlError(f"--out {out} is not empty and holds no icl-rl dataset; choose a new "
                             "folder (nothing was written)")
        try:
            old = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            raise IclRlError(f"{stamp} is corrupt; remove the folder {out} and regenerate") \
                from None
        new = config.identity()
        # a field added in a later version (absent from an old stamp) counts as its default
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise IclRlError(
                f"--out {out} already holds a different dataset (differs in: {', '.join(diff)});"
                " choose a new --out or remove it (nothing was overwritten)"
            )
        return (out / "README.md").exists()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(config.identity(), indent=2, sort_keys=True))
    return False


def card_meta(config: GenerateConfig, env: Env, learner, jobs: list[ShardJob]) -> dict:
    """The icl_rl section of the dataset card, for this config's shards."""
    splits = {}
    for s in ("train", "test"):
        n = sum(j.size for j in jobs if j.split == s)
        if n:
            splits[s] = {"num_histories": n, "num_shards": sum(j.split == s for j in jobs)}
    task_split = (card_split(env, config.seed, config.heldout_fraction, config.train_tasks)
                  if env.has_finite_tasks else None)
    return dataset_card_meta(env, config.learner, learner.params_dict(), splits, task_split,
                             seed=config.seed, steps=config.steps,
                             episode_stride=config.episode_stride,
                             shard_size=config.shard_size,
                             heldout_fraction=config.heldout_fraction,
                             train_tasks=config.train_tasks, license=config.license)


def _process_group():
    """accelerate's PartialState when launched with several processes (accelerate launch,
    torchrun), else None. Each rank then writes its own shards; rank 0 writes the card."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # As AcceleratorState does: without cpu=True, PartialState on a machine without a GPU
    # silently falls back to one process (every rank rank 0 of 1, all writing every shard).
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes != int(os.environ["WORLD_SIZE"]):
        raise IclRlError(f"launched as {os.environ['WORLD_SIZE']} processes but accelerate "
                         f"set up {state.num_processes}; check the launcher's settings")
    return state


def main(config: GenerateConfig) -> Path:
    """Generate the dataset described by `config`; returns its folder."""
    env, learner = validate(config)
    out = Path(config.out)
    group = _process_group()
    rank, world = (group.process_index, group.num_processes) if group else (0, 1)
    complete = _prepare_folder(config) if rank == 0 else False
    if group:  # the others look only once rank 0 has made or checked the folder
        group.wait_for_everyone()
        if rank:
            complete = _prepare_folder(config)
    if complete:
        log.info("%s already holds this complete dataset; nothing to do", out)
        if rank == 0:
            _push(config, out)
        return out
    # A killed run may have left half-written temporaries (never a half-written shard).
    if rank == 0 and remove_stale_temporaries(out) + remove_stale_temporaries(out / "data"):
        log.info("removed temporary files of an interrupted run in %s", out)
    jobs = plan(config)
    todo = [j for j in jobs if not (out / shard_path(j.split, j.index, j.count)).exists()]
    if len(todo) < len(jobs) and rank == 0:
        log.info("resuming: %d of %d shards already written", len(jobs) - len(todo), len(jobs))
    todo = todo[rank::world]  # shards are independent: any split of them gives the same bytes
    if group:
        log.info("rank %d of %d writes %d shards", rank, world, len(todo))
    bar = tqdm(total=sum(j.size for j in todo), unit="hist", desc=f"generate {config.learner}",
               disable=rank != 0 or not config.progress)
    if config.num_proc == 1 or len(todo) <= 1:
        for job in todo:
            run_shard(config, job)
            bar.update(job.size)
    else:
        threads = max(1, (os.cpu_count() or 1) // config.num_proc)
        ctx = get_context("spawn")  # forking after torch's thread pools start can deadlock
        with ProcessPoolExecutor(config.num_proc, mp_context=ctx) as pool:
            futures = {pool.submit(run_shard, config, j, threads): j for j in todo}
            for fut in futures:
                fut.result()
                bar.update(futures[fut].size)
    bar.close()
    if group:
        group.wait_for_everyone()
    if rank == 0:
        meta = card_meta(config, env, learner, jobs)
        meta["files"] = file_hashes(out)  # `icl-rl verify` checks the bytes against these
        meta["content_hash"] = content_hash(meta["files"])
        write_card(out, meta, card_body(meta))
        _push(config, out)
    if group:
        group.wait_for_everyone()
    return out


def _push(config: GenerateConfig, out: Path) -> None:
    """Upload the finished folder if asked (the same bytes `icl-rl verify` checks)."""
    if config.push_to_hub:
        from icl_rl import hub

        hub.push_folder(out, config.push_to_hub, "dataset", private=config.private)
        log.info("uploaded %s to the Hub dataset repo %s", out, config.push_to_hub)


def cli(argv: list[str] | None = None) -> Path:
    """Parse flags and run."""
    return main(parse_config(GenerateConfig, argv, prog="icl-rl generate"))
