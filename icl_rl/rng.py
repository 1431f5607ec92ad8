"""Random draws for N tasks: from one generator, or from one generator per task.

Every random draw of the envs and learners goes through these functions. With a
`torch.Generator` they are the plain batched torch ops (one stream for the whole batch; what
`generate` uses, seeded per shard). With `TaskGenerators` (one stream per task), row i of every
draw comes from task i's own stream, so a task's rollout does not depend on which other tasks
share its batch: `icl-rl eval` uses this to give the same numbers whatever its batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


class TaskGenerators:
    """One torch.Generator per task; rows of every draw come from their task's generator."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    @classmethod
    def for_tasks(cls, seed: int, stream: int, task_indices: Sequence[int]) -> TaskGenerators:
        """Generators for the given global task indices; `stream` separates env from agent."""
        return cls([np.random.SeedSequence([seed, stream, int(i)]).generate_state(
            1, dtype=np.uint64)[0] for i in task_indices])

    def __len__(self) -> int:
        return len(self.gens)


Gen = torch.Generator | TaskGenerators | None


def _check(g: TaskGenerators, n: int) -> None:
    if len(g) != n:
        raise ValueError(f"{len(g)} task generators for a draw over {n} tasks")


def _draw(g: Gen, shape: Sequence[int], device, fn, *args) -> Tensor:
    """fn(*args, shape) for the whole batch, or row by row from each task's generator."""
    if isinstance(g, TaskGenerators):
        _check(g, shape[0])
        return torch.stack([fn(*args, tuple(shape[1:]), generator=gi) for gi in g.gens]) \
            .to(device)
    return fn(*args, tuple(shape), generator=g, device=device)


def rand(g: Gen, shape: Sequence[int], device=None) -> Tensor:
    """Uniform [0, 1) of `shape` (first dim = tasks)."""
    return _draw(g, shape, device, torch.rand)


def randn(g: Gen, shape: Sequence[int], device=None) -> Tensor:
    """Standard normal of `shape` (first dim = tasks)."""
    return _draw(g, shape, device, torch.randn)


def randint(g: Gen, high: int, shape: Sequence[int], device=None) -> Tensor:
    """Integers in [0, high) of `shape` (first dim = tasks)."""
    return _draw(g, shape, device, torch.randint, 0, high)


def standard_gamma(g: Gen, alpha: Tensor) -> Tensor:
    """Gamma(alpha, 1) draws, alpha [N, ...]."""
    if isinstance(g, TaskGenerators):
        _check(g, alpha.shape[0])
        return torch.stack([torch._standard_gamma(a, generator=gi)
                            for a, gi in zip(alpha, g.gens, strict=True)])
    return torch._standard_gamma(alpha, generator=g)


def categorical(g: Gen, probs: Tensor) -> Tensor:
    """One index per row of probs [N, A] (CPU)."""
    if isinstance(g, TaskGenerators):
        _check(g, probs.shape[0])
        return torch.cat([torch.multinomial(p, 1, generator=gi)
                          for p, gi in zip(probs, g.gens, strict=True)])
    return torch.multinomial(probs, 1, generator=g)[:, 0]
