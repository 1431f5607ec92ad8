"""Options of `icl-rl sweep` and `icl-rl demo`.

Kept apart from the pipelines, with light imports only, so `--help` and a bad flag are
answered before the stages' heavy imports (see `icl_rl.cli`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from icl_rl.config import normalize_lists


@dataclass(frozen=True)
class SweepConfig:
    """Run every variant of an ablation sweep (resumable) and tabulate what is left of
    in-context learning in each."""

    sweep: str = "configs/sweeps/bandit_ingredients.yaml"
    """Sweep file (YAML): out, base generate/train/eval settings, variants of overrides."""
    out: str | None = None
    """Sweep folder (default: the sweep file's `out`)."""
    only: list[str] = dataclasses.field(default_factory=list)
    """Variants to run now, space- or comma-separated (default: all); the summary covers every
    finished one."""
    progress: bool = True
    """Show the stages' progress bars (--no-progress: none, whatever the sweep file says; not
    part of a variant's settings, so it never makes a finished variant count as changed)."""

    def __post_init__(self) -> None:
        normalize_lists(self, "only")


@dataclass(frozen=True)
class DemoConfig:
    """Generate -> train -> evaluate in context, on a small bandit default."""

    out: str = "runs/demo"
    """Folder for dataset/, model run/, eval/ and the demo's report.md."""
    num_arms: int = 5
    """Arms of the Bernoulli bandits."""
    learner: str = "ucb"
    """Source learner whose learning is distilled."""
    num_histories: int = 5000
    """Learning histories generated (10% held out)."""
    steps: int = 200
    """Pulls per history; also the model's context and the evaluation horizon."""
    train_steps: int = 800
    """Optimizer steps."""
    batch_size: int = 32
    """Windows per batch."""
    hidden_size: int = 64
    """Transformer width."""
    num_layers: int = 3
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int | None = None
    """Key/value heads the attention heads share (grouped-query attention; default one per
    head)."""
    intermediate_size: int = 128
    """Width of the decoder's SwiGLU MLP (2x the width: trains ~1.3x faster than the family's
    4x default at no measured cost in regret; docs/benchmarks.md)."""
    lr: float = 1e-3
    """Peak learning rate."""
    num_tasks: int = 512
    """Held-out tasks in the evaluation."""
    seed: int = 0
    """Seed of everything."""
    progress: bool = True
    """Show the stages' progress bars."""
