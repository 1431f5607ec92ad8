"""Training windows: K consecutive steps of a learning history, aligned for any model family.

AD trains on windows that span several episodes of one history. A window starting at step s
carries the transition before it (a_{s-1}, r_{s-1}) in its first position, exactly as a sliding
window does at evaluation time: both go through `icl_rl.transitions`. A batch holds the aligned
raw transitions (the keyword arguments of every family's `forward`), the targets and the
padding mask; each family turns the transitions into its own inputs. Batches are cut with
tensor indexing (`__getitems__`), no per-window Python.

At evaluation the model's first K steps see the history from its first step; among the
T - K + 1 windows of a history only one starts there, so a random window almost never shows
the model the context it will act in while it searches a new task. `history_start_fraction`
makes that share of the windows start at step 0.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from icl_rl.errors import IclRlError
from icl_rl.rollout import History
from icl_rl.transitions import window

TARGETS = ("actions", "optimal_actions")


class WindowDataset(Dataset):
    """Every window of `context` steps of every history; item i = (history, start).

    The window's target at each step (the `actions` of a batch) is `target`: the action the
    source took (Algorithm Distillation) or the oracle's action in that state
    (`optimal_actions`, the label of the Decision-Pretrained Transformer). The inputs are the
    source's transitions either way.

    With `history_start_fraction` f > 0 the index space grows by items that all start at
    step 0 (history i % N), so that a uniform pick over it starts there with probability f.

    With `queries` (the Decision-Pretrained Transformer) each window also carries a query
    state, `query_observations` [B, obs_dim]: the observation at a step of the same history
    (so of the same task), chosen by a fixed hash of the window's index; the targets are then
    the oracle's action at that state (`target` must be `optimal_actions`), repeated at every
    position so that every prefix of the window is trained on the same query.
    """

    def __init__(self, history: History, context: int, target: str = "actions",
                 source: str = "the dataset", history_start_fraction: float = 0.0,
                 queries: bool = False) -> None:
        if context < 1:
            raise IclRlError(f"context must be >= 1, got {context}")
        check_start_fraction(history_start_fraction)
        if target not in TARGETS:
            raise IclRlError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if target == "optimal_actions" and history.optimal_actions is None:
            fix = ("a DPT model learns only that label" if queries
                   else "or train on --target actions")
            raise IclRlError(f"{source} has no optimal_actions column (the oracle's action at "
                             "every step) to train on; regenerate it with icl-rl generate, "
                             f"which records it for every env ({fix})")
        if queries and target != "optimal_actions":
            raise IclRlError("query windows (DPT) are labelled with the oracle's action at the "
                             "query state: target must be optimal_actions")
        self.queries = queries
        self.targets = history.actions if target == "actions" else history.optimal_actions
        self.h = history
        self.context = context
        n, t = history.actions.shape
        self.length = min(context, t)  # steps of real data per window
        self.starts = t - self.length + 1  # windows per history
        self.n = n
        self.steps = torch.arange(self.length)
        f = history_start_fraction
        self.extra = round(f / (1 - f) * n * self.starts) if f > 0 else 0

    def __len__(self) -> int:
        """Number of windows: every start of every history, plus the added history starts."""
        return self.n * self.starts + self.extra

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One window (a batch of one, squeezed)."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        """A batch of windows: the aligned transitions (observations [B, K, obs_dim],
        prev_actions, prev_rewards, episode_starts [B, K]), targets [B, K], attention_mask."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() and not 0 <= int(idx.min()) <= int(idx.max()) < len(self):
            raise IndexError(f"window index out of range [0, {len(self)})")
        regular = self.n * self.starts
        added = idx >= regular  # the added items: history (i - regular) % n from step 0
        idx = torch.where(added, ((idx - regular) % self.n) * self.starts, idx)
        rows = (idx // self.starts)[:, None]  # [B, 1]
        cols = (idx % self.starts)[:, None] + self.steps  # [B, L]
        h = self.h
        batch = window(h.observations, h.actions, h.rewards, h.dones, rows, cols).as_dict()
        batch["targets"] = self.targets[rows, cols]
        if self.queries:  # step of the same history: a fixed hash of the window's index
            steps = h.actions.shape[1]
            query = torch.remainder(idx * 7919 + 17, steps)[:, None]
            query_obs = h.observations[rows[:, 0], query[:, 0]]
            batch["targets"] = self.targets[rows, query].expand(-1, self.length)
        batch["attention_mask"] = torch.ones_like(batch["targets"])
        pad = self.context - self.length
        if pad:  # histories shorter than the context: pad on the right, mask the padding
            for k, v in batch.items():
                batch[k] = torch.nn.functional.pad(v, (0, 0) * (v.ndim - 2) + (0, pad))
        if self.queries:
            batch["query_observations"] = query_obs
        return batch


def check_start_fraction(f: float, name: str = "history_start_fraction") -> None:
    """history_start_fraction must leave room for the other windows."""
    if not 0 <= f < 1:
        raise IclRlError(f"{name} must be in [0, 1), got {f}")


def collate_batch(batch):
    """Identity: `WindowDataset.__getitems__` already returns a collated batch."""
    if isinstance(batch, list):  # a sampler that fetched single items
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    return batch


class StreamingWindows(torch.utils.data.IterableDataset):
    """Batches of random windows from a split read chunk by chunk: memory does not grow with
    the dataset. Each process reads its own shards (`iter_histories`), so nothing downstream
    may split the stream again: iterate it directly, do not `accelerator.prepare` it."""

    def __init__(self, source, split: str, context: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, chunk_rows: int = 256,
                 windows_per_history: int = 4,
                 target: str = "actions", history_start_fraction: float = 0.0,
                 queries: bool = False) -> None:
        check_start_fraction(history_start_fraction)
        self.args = (source, split, chunk_rows, rank, world)
        self.window = (context, target, str(source), history_start_fraction, queries)
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        self.windows_per_history = windows_per_history
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently (and reproducibly) each pass."""
        self.epoch = epoch

    def __iter__(self):
        from icl_rl.dataset import iter_histories

        g = torch.Generator().manual_seed(hash((self.seed, self.rank, self.epoch)) % 2**62)
        for chunk in iter_histories(*self.args):
            windows = WindowDataset(chunk.history, *self.window)
            n = chunk.history.num_histories * self.windows_per_history
            picks = torch.randint(0, len(windows), (n,), generator=g)
            for b in range(0, n - self.batch_size + 1, self.batch_size):
                yield windows.__getitems__(picks[b:b + self.batch_size].tolist())
