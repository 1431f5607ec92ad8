"""Which tasks train and which are held out: the one owner of the split, for generate and eval.

A finite family (the 81 Dark Room goals) is split once, deterministically from the seed and the
held-out fraction (`Env.split`); the ids of both parts are written into the dataset card, and
evaluation reads them back from there, so it can show it never saw its tasks. A continuous
family holds tasks out by sampling fresh ones.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError

SPLITS = {"test": "held-out", "train": "training"}  # split name -> in words


def split_ids(env: Env, seed: int, heldout: float,
              train_tasks: int | None = None) -> tuple[Tensor, Tensor]:
    """(train ids, held-out ids) of a finite task set; with `train_tasks` only the first that
    many training tasks are used (the task-diversity ablation)."""
    train, test = env.split(seed, heldout)
    if train_tasks is not None:
        if train_tasks > len(train):
            raise IclRlError(f"--train-tasks {train_tasks}: {env.spec.name} has {len(train)} "
                             f"training tasks at --heldout-fraction {heldout}; choose at most "
                             f"{len(train)}")
        train = train[:train_tasks]
    return train, test


def training_pool(env: Env, seed: int, heldout: float,
                  train_tasks: int | None) -> Tensor | None:
    """The tasks a training run may draw from, or None for a continuous family's whole
    distribution: a finite family's training goals (the first `train_tasks` of them), a
    continuous family's `train_tasks` fixed samples (the task-diversity ablation)."""
    if env.has_finite_tasks:
        return env.task_set()[split_ids(env, seed, heldout, train_tasks)[0]]
    if train_tasks is None:
        return None
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 2]).generate_state(
        1, dtype=np.uint64)[0]))
    return env.sample_tasks(train_tasks, g)


def card_split(env: Env, seed: int, heldout: float, train_tasks: int | None) -> dict:
    """The `task_split` section of a dataset card (finite families only)."""
    train, test = split_ids(env, seed, heldout, train_tasks)
    return {"train": train.tolist(), "test": test.tolist()}


def model_task_meta(model_config, dataset: str | None) -> dict | None:
    """What says which tasks a trained model held out: the card of `dataset` (a folder or Hub
    id; by default the one its provenance records, when that folder exists), else the split an
    RL² run recorded in its provenance; None for neither. A dataset of another env is refused."""
    from pathlib import Path

    provenance = model_config.provenance
    path = dataset or provenance.get("dataset")
    meta = None
    if path is not None and (Path(path).exists() or dataset):
        from icl_rl.dataset import read_card

        meta = read_card(path)
        if meta and meta["env"]["name"] != model_config.env_name:
            raise IclRlError(f"{path} is {meta['env']['name']} data but the model was trained "
                             f"for {model_config.env_name}; pass its own dataset (or none)")
    if meta is None and "task_split" in provenance:  # trained without a dataset (rl2)
        meta = {"task_split": provenance["task_split"]}
    return meta


def eval_tasks(env: Env, meta: dict | None, n: int, seed: int,
               split: str = "test") -> tuple[Tensor, str]:
    """n evaluation tasks and where they came from: the held-out (`test`) or training goals of
    a finite task set, as the dataset card lists them, or fresh samples of a continuous one."""
    if split not in SPLITS:
        raise IclRlError(f"--split must be test (held-out tasks) or train, got {split!r}")
    if env.has_finite_tasks:
        name = SPLITS[split]
        if meta and "task_split" in meta:
            ids = torch.tensor(meta["task_split"][split], dtype=torch.long)
            where = f"the dataset's {name} task split"
        else:
            ids = env.split(seed, 0.1)[0 if split == "train" else 1]
            where = f"a {name} split of the task set (no dataset card)"
        if len(ids) == 0:
            raise IclRlError(f"the {name} task split is empty; regenerate with "
                             "--heldout-fraction in (0, 1)")
        return env.task_set()[ids[torch.arange(n) % len(ids)]], where
    if split == "train":
        raise IclRlError(f"--split train: {env.spec.name} has no finite task set to hold tasks "
                         "out of (every evaluation task is a fresh sample); use --split test")
    g = torch.Generator().manual_seed(seed)
    return env.sample_tasks(n, g), f"{n} freshly sampled tasks (seed {seed})"
