"""Options of `icl-rl train` and `icl-rl rl2`.

Kept apart from the trainers, with light imports only, so `--help` and a bad flag are answered
before torch and transformers load (see `icl_rl.cli`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icl_rl.config import RunOptions, normalize_lists, parse_kwargs
from icl_rl.errors import IclRlError


@dataclass(frozen=True)
class TrainConfig(RunOptions):
    """Train an in-context model (Algorithm Distillation by default) on learning histories."""

    dataset: str = "runs/dataset"
    """Dataset folder, parquet file or Hub repo id (made by `icl-rl generate`); several,
    comma-separated, of one env and history length, are pooled (e.g. roll-ins and a learner's
    histories for dpt); the first one's card stands for the pool (held-out tasks, source)."""
    out: str = "runs/model"
    """Run folder: checkpoints/, metrics.jsonl, and the final model in model/."""
    model: str = "ad"
    """Model family (registered in icl_rl.models): ad, the transformer of Algorithm
    Distillation; gru, a recurrent network (GRU, or LSTM with cell: lstm) over the same
    inputs, acting with a constant-size state."""
    model_kwargs: str | None = None
    """The family's own options as a JSON object (or a mapping in a YAML config), e.g.
    '{"hidden_size": 64, "num_layers": 4, "num_heads": 4}' for ad; unknown names are refused
    with the list of the family's options."""
    context: int = 256
    """Window length K in steps (= tokens); the model's context."""
    target: str | None = None
    """What the model learns to predict at every step: `actions`, the source learner's own
    (Algorithm Distillation), or `optimal_actions`, the oracle's action in that state given
    the true task (the model has to infer the task from the context). Default: the family's
    (actions for ad and gru; dpt learns only optimal_actions, at its query states)."""
    history_start_fraction: float = 0.0
    """Share of training windows that start at a history's first step. At evaluation the
    model's first `context` steps (its search of a new task) see the history from there, but
    only 1 in T - K + 1 random windows does; 0 samples windows uniformly."""
    hide_inputs: list[str] = field(default_factory=list)
    """Parts of every step's input the model never sees: action, reward, episode_start,
    observation (ablations of the ingredients of in-context RL); space- or comma-separated."""
    world_model_weight: float = 0.0
    """> 0: give the model world-model heads (ad, gru) that predict each step's reward and
    next observation from its hidden state and the action taken, trained with this weight on
    their loss next to the action loss; `icl-rl eval --lookahead D` plans with them."""
    init_model: str | None = None
    """Start from this trained model folder instead of a fresh one (same env family)."""
    batch_size: int = 32
    """Windows per batch per process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_steps: int = 2000
    """Optimizer steps."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    schedule: str = "cosine"
    """LR schedule after warmup: cosine, linear or constant."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    eval_every: int = 200
    """Validate on the held-out split every this many steps (0: only at the end)."""
    eval_batches: int = 8
    """Batches of held-out windows per validation."""
    num_workers: int = 0
    """DataLoader worker processes."""
    compile: bool = False
    """torch.compile the model (inductor, through accelerate's dynamo plugin): 10-30 s of
    compilation at the first step and again at the first validation, then faster steps
    (about 1.4x at d=128 on a 2-core CPU; docs/benchmarks.md). Pays off past a minute or so
    of training."""
    streaming: bool = False
    """Read the dataset chunk by chunk instead of loading it (for data larger than memory);
    each process reads its own shards."""
    push_to_hub: str | None = None
    """After training, upload the final model (with its model card) to this Hub repo."""
    private: bool = False
    """Create the Hub repo as private."""

    def __post_init__(self) -> None:
        super().__post_init__()
        normalize_lists(self, "hide_inputs")

    def model_options(self) -> dict:
        """--model-kwargs as a dict."""
        return parse_kwargs(self.model_kwargs, "--model-kwargs")

    @staticmethod
    def unknown_option_hint(names: list[str]) -> str:
        """Where options that are not TrainConfig's belong (a family's go in model_kwargs)."""
        from icl_rl.models import FAMILIES, family_options

        owners = {n: f for f in FAMILIES for n in family_options(f)}
        found = [n for n in names if n in owners]
        if not found:
            return ""
        return (f"; {', '.join(found)} belong(s) to the model family: put them under "
                f"model_kwargs, e.g. model_kwargs: {{{found[0]}: ...}}")


@dataclass(frozen=True)
class RL2Config(RunOptions):
    """Train an in-context learner by plain RL across tasks (RL²: PPO with a memory policy)."""

    env: str = "bernoulli_bandit"
    """Env family (icl_rl.envs) whose tasks the policy meets, one task per trial."""
    env_kwargs: str | None = None
    """Env parameters as a JSON object (or a mapping in a YAML config), e.g. '{"num_arms": 5}'."""
    out: str = "runs/rl2"
    """Run folder: checkpoints/, metrics.jsonl, and the final model in model/."""
    model: str = "gru"
    """Model family with a value head: gru (a GRU, or an LSTM with cell: lstm), or ad (a
    transformer whose context is the whole trial; --memory history only)."""
    model_kwargs: str | None = None
    """The family's own options as a JSON object, e.g. '{"hidden_size": 64}'."""
    memory: str = "history"
    """What the policy remembers: history (the whole trial, RL²), episode (reset at every
    episode start: within-episode memory only) or none (a feedforward policy)."""
    hide_inputs: list[str] = field(default_factory=list)
    """Parts of every step's input the policy never sees: reward, action, episode_start,
    observation (ablations); space- or comma-separated."""
    train_tasks: int | None = None
    """Train on this many tasks only (the task-diversity ablation): the first K training goals
    of a finite family, K fixed samples of a continuous one. Default: the whole training
    distribution."""
    heldout_fraction: float = 0.1
    """Finite families: share of the task set held out (never trained on; `eval` reads the
    split from the model)."""
    trial_episodes: int = 10
    """Episodes per trial (one task; memory kept across them). Bandits: pulls per trial."""
    num_envs: int = 256
    """Trials (tasks) rolled out at once per process per iteration."""
    iterations: int = 300
    """PPO iterations (each: one batch of trials, then the updates)."""
    lr: float = 1e-3
    """Adam learning rate (annealed linearly to 0 with --anneal-lr)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over the iterations."""
    gamma: float = 0.99
    """Discount within a trial (episode ends are not cut)."""
    gae_lambda: float = 0.3
    """GAE lambda (Duan et al. 2016 use 0.3 on bandits)."""
    clip: float = 0.2
    """PPO ratio clipping range."""
    epochs: int = 4
    """Passes over each batch of trials."""
    minibatches: int = 2
    """Minibatches per pass (split by trial: each holds whole trials)."""
    entropy_coef: float = 0.01
    """Weight of the policy entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm (0 disables)."""
    normalize_advantages: bool = True
    """Standardise each minibatch's advantages."""
    save_every: int = 50
    """Checkpoint every this many iterations (0: only at the end)."""
    log_every: int = 10
    """Log training metrics every this many iterations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        normalize_lists(self, "hide_inputs")

    def model_options(self) -> dict:
        """--model-kwargs with the RL² settings the family must have (value head, memory)."""
        from icl_rl.models import FAMILIES

        options = parse_kwargs(self.model_kwargs, "--model-kwargs")
        for name in ("memory", "value_head"):
            if name in options:
                raise IclRlError(f"--model-kwargs: {name} is set by rl2 (use --memory)")
        if self.model in FAMILIES and "memory" not in FAMILIES[self.model][0].options():
            if self.memory != "history":  # a transformer's memory is its context
                raise IclRlError(f"--memory {self.memory}: the {self.model} family keeps the "
                                 "whole trial in its context; use --model gru for this "
                                 "ablation")
            return {**options, "value_head": True}
        return {**options, "memory": self.memory, "value_head": True}
