"""Training windows: K consecutive steps of a learning history, as model-ready tokens.

AD trains on windows that span several episodes of one history. A window starting at step s
carries the transition before it (a_{s-1}, r_{s-1}) in its first token, exactly as a sliding
window does at evaluation time. Batches are cut with tensor indexing (`__getitems__`), no
per-window Python.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from icl_rl.errors import IclRlError
from icl_rl.models.ad import transition_tokens
from icl_rl.rollout import History

TARGETS = ("actions", "optimal_actions")


class WindowDataset(Dataset):
    """Every window of `context` steps of every history; item i = (history, start).

    The window's target at each step (the `actions` of a batch) is `target`: the action the
    source took (Algorithm Distillation) or the oracle's action in that state
    (`optimal_actions`, the label of the Decision-Pretrained Transformer). The inputs are the
    source's transitions either way.
    """

    def __init__(self, history: History, context: int, num_actions: int,
                 obs_levels: list[int] | None = None, target: str = "actions",
                 source: str = "the dataset") -> None:
        if context < 1:
            raise IclRlError(f"context must be >= 1, got {context}")
        if target not in TARGETS:
            raise IclRlError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if target == "optimal_actions" and history.optimal_actions is None:
            raise IclRlError(f"{source} has no optimal_actions column (the oracle's action at "
                             "every step) to train on; regenerate it with icl-rl generate, "
                             "which records it for every env, or train on --target actions")
        self.targets = history.actions if target == "actions" else history.optimal_actions
        self.h = history
        self.context = context
        self.num_actions = num_actions
        self.obs_levels = obs_levels
        n, t = history.actions.shape
        self.length = min(context, t)  # steps of real data per window
        self.starts = t - self.length + 1  # windows per history
        self.n = n
        self.steps = torch.arange(self.length)

    def __len__(self) -> int:
        """Number of distinct windows."""
        return self.n * self.starts

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One window (a batch of one, squeezed)."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        """A batch of windows: tokens [B, K, token_dim], actions [B, K], attention_mask [B, K]."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        rows = (idx // self.starts)[:, None]  # [B, 1]
        cols = (idx % self.starts)[:, None] + self.steps  # [B, L]
        h = self.h
        prev = (cols - 1).clamp(min=0)
        first = cols == 0  # the history's first step: nothing came before it
        prev_a = h.actions[rows, prev].masked_fill(first, -1)
        prev_r = h.rewards[rows, prev].masked_fill(first, 0.0)
        start = h.dones[rows, prev] | first
        tokens = transition_tokens(h.observations[rows, cols], prev_a, prev_r, start,
                                   self.num_actions, self.obs_levels)
        actions = self.targets[rows, cols]
        mask = torch.ones_like(actions)
        pad = self.context - self.length
        if pad:  # histories shorter than the context: pad on the right, mask the padding
            tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
            actions = torch.nn.functional.pad(actions, (0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad))
        return {"tokens": tokens, "actions": actions, "attention_mask": mask}


def collate_batch(batch):
    """Identity: `WindowDataset.__getitems__` already returns a collated batch."""
    if isinstance(batch, list):  # a sampler that fetched single items
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    return batch


class StreamingWindows(torch.utils.data.IterableDataset):
    """Batches of random windows from a split read chunk by chunk: memory does not grow with
    the dataset. Each process reads its own shards (`iter_histories`), so nothing downstream
    may split the stream again: iterate it directly, do not `accelerator.prepare` it."""

    def __init__(self, source, split: str, context: int, num_actions: int,
                 obs_levels: list[int] | None, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, chunk_rows: int = 256, windows_per_history: int = 4,
                 target: str = "actions") -> None:
        self.args = (source, split, chunk_rows, rank, world)
        self.window = (context, num_actions, obs_levels, target, str(source))
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
