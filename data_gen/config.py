"""Options of `icl-rl generate` and `icl-rl verify`.

Kept apart from the commands' code, with light imports only, so `--help` and a bad flag are
answered before torch and the datasets stack load (see `icl_rl.cli`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from icl_rl.config import parse_kwargs


@dataclass(frozen=True)
class GenerateConfig:
    """Generate a dataset of RL learning histories (one row per history) in the Hub layout."""

    out: str = "runs/dataset"
    """Output folder (created; must be empty or hold an unfinished run of the same config)."""
    env: str = "bernoulli_bandit"
    """Environment family: bernoulli_bandit, gaussian_bandit, dark_room, dark_room_hard,
    dark_key_to_door, dark_maze."""
    learner: str = "ucb"
    """Source learner whose learning is recorded: random, epsilon_greedy, ucb, thompson
    (bandits); q_learning, ppo, noise_distill, posterior_sampling (gridworlds)."""
    num_histories: int = 10000
    """Histories in all, train and held-out together."""
    steps: int = 500
    """Steps per history (a bandit step is one episode)."""
    episode_stride: int = 1
    """Keep every k-th episode of each learning history (Algorithm Distillation's subsampled
    histories): the learner runs k x --steps steps and the dataset stores --steps of them, so a
    context of a few episodes spans k times more of the learner's progress."""
    heldout_fraction: float = 0.1
    """Fraction of histories (and, for finite task sets, of tasks) in the held-out `test` split."""
    train_tasks: int | None = None
    """Train histories cycle through only this many distinct tasks (default: every history
    its own task, or the whole training split of a finite task set). The task-diversity
    ablation: trained on one task, a model can recall it instead of learning in context.
    Held-out histories are not affected."""
    seed: int = 0
    """Base seed: the same seed and config give byte-identical data."""
    shard_size: int = 4096
    """Histories per parquet shard; also the batch rolled out at once. Part of the data's
    identity: changing it changes the random streams."""
    num_proc: int = 1
    """Worker processes; shards are divided among them. Does not change the bytes."""
    num_arms: int | None = None
    """Bandits: number of arms (env default if unset)."""
    noise_std: float | None = None
    """Gaussian bandit: reward noise std (env default if unset)."""
    size: int | None = None
    """Gridworlds: side of the grid (env default if unset)."""
    episode_len: int | None = None
    """Gridworlds: steps per episode (env default if unset)."""
    env_kwargs: str | None = None
    """Other env parameters as a JSON object, e.g. '{"num_arms": 10}'."""
    learner_kwargs: str | None = None
    """Learner hyperparameters as a JSON object, e.g. '{"c": 2.0}'."""
    license: str = "mit"
    """License written into the dataset card."""
    push_to_hub: str | None = None
    """After writing, upload the folder to this Hub dataset repo (user/name)."""
    private: bool = False
    """Create the Hub repo as private."""
    progress: bool = True
    """Show a progress bar (main process only)."""

    def env_params(self) -> dict:
        """Env constructor arguments from the flat flags and --env-kwargs."""
        params = parse_kwargs(self.env_kwargs, "--env-kwargs")
        for name in ("num_arms", "noise_std", "size", "episode_len"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        return params

    def learner_params(self) -> dict:
        """Learner hyperparameters from --learner-kwargs."""
        return parse_kwargs(self.learner_kwargs, "--learner-kwargs")

    def identity(self) -> dict:
        """The fields that determine the bytes of the dataset."""
        d = dataclasses.asdict(self)
        for k in ("out", "num_proc", "push_to_hub", "private", "progress"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class VerifyConfig:
    """Verify a dataset folder: file hashes against the card, then schema checks per split."""

    dataset: str = "runs/dataset"
    """Dataset folder written by `icl-rl generate`."""

    @staticmethod
    def prepare_argv(argv: list[str]) -> list[str]:
        """`icl-rl verify DIR` means `--dataset DIR`."""
        if argv and not argv[0].startswith("-"):
            return ["--dataset", *argv]
        return argv
