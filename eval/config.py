"""Options of `icl-rl eval`, `icl-rl probe` and `icl-rl compare`.

Kept apart from the commands' code, with light imports only, so `--help` and a bad flag are
answered before torch, transformers and matplotlib load (see `icl_rl.cli`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icl_rl.config import normalize_lists, parse_kwargs
from icl_rl.errors import IclRlError


@dataclass(frozen=True)
class EvalConfig:
    """Evaluate a trained model in context on held-out tasks."""

    model: str = "runs/model/model"
    """Trained model folder (or the run folder that holds model/)."""
    dataset: str | None = None
    """Dataset it was trained on: gives the held-out tasks and the source learner (default:
    the one recorded in the model's config)."""
    out: str = "runs/eval"
    """Folder for curves.png, report.md, results.json."""
    env: str | None = None
    """Env family to evaluate in (default and only allowed: the model's own)."""
    env_kwargs: str | None = None
    """Env parameter overrides as JSON (must keep the model's observation and action spaces)."""
    num_tasks: int = 256
    """Tasks evaluated (a finite split is cycled through)."""
    split: str = "test"
    """Which goals of a finite task set: `test` (the held-out ones) or `train` (the ones the
    model was trained on: the gap between the two measures memorization)."""
    batch_size: int | None = None
    """Tasks rolled out at once (default: all). Only memory and speed change with it: every
    task has its own random streams, so the numbers are the same for any batch size."""
    episodes: int = 40
    """Episodes per task (for bandits one episode is one pull)."""
    greedy: bool = False
    """Take the model's most likely action instead of sampling from it."""
    temperature: float = 1.0
    """Sample from softmax(logits / temperature): below 1 sharpens the model's policy (e.g.
    sheds the uniform noise a noise-distilled model imitates) while keeping it stochastic."""
    window: int | None = None
    """Tokens of context the model sees (default: its training context); older ones slide out."""
    lookahead: list[str] = field(default_factory=lambda: ["0"])
    """Lookahead depths D (a model trained with --world-model-weight): the model acts from its
    policy tilted toward the actions whose D imagined steps, rolled out with its own next-
    observation and reward predictions, promise more reward; 0 is plain acting. Several, e.g.
    0,1,2,4: the first is `model`, each other one the agent `lookahead_D`, and report.md gets
    the thinking-time table (return against D, gains paired by task)."""
    beam: int = 5
    """Lookahead: imagined paths kept per task at each depth."""
    lookahead_beta: float = 1.0
    """Lookahead: how far predicted return tilts the policy (actions drawn from
    pi(a) exp(beta Q(a)), Q the best predicted return after a over D steps)."""
    lookahead_bootstrap: bool = True
    """Lookahead: add the return-to-go the heads predict where each imagined path ends
    (false: the predicted rewards of its D steps only)."""
    baselines: list[str] = field(
        default_factory=lambda: ["source", "random", "oracle", "ucb", "thompson"])
    """Agents next to the model, space- or comma-separated (ucb, thompson only for bandits;
    posterior_sampling: thompson on bandits, the hidden-cell posterior sampler on Dark Room,
    Key-to-Door and mazes;
    bayes_optimal: Bernoulli bandits, the exact Bayes-optimal policy for the evaluation's
    horizon where its dynamic program fits, else the Gittins-index approximation, shown as
    `gittins`; others: any learner name; LABEL=LEARNER runs a learner under another name,
    e.g. to show it twice with different --baseline-kwargs: ucb,wide=ucb)."""
    baseline_kwargs: str | None = None
    """Hyperparameters of baselines, a JSON object keyed by their names (labels) in
    --baselines, e.g. '{"ucb": {"c": 1.0}}' or '{"ps5": {"per_step": true,
    "context_episodes": 5}}' (Dark Room: DPT's deployment rule with the exact posterior).
    Default: each learner's own defaults; the source keeps the dataset's recorded ones."""
    improvement_k: int | None = None
    """Episodes averaged at each end for the in-context improvement (default: episodes // 10)."""
    seed: int = 12345
    """Seed of the evaluation tasks and environment noise."""
    offline_context: list[str] = field(default_factory=list)
    """Offline deployment (dpt models): context sizes n, e.g. 10,50,200. The model acts
    greedily from a fixed context, the first n transitions of the dataset's held-out
    histories, on their tasks (results.json "offline", a table in report.md)."""
    offline_episodes: int = 1
    """Episodes per task of each offline deployment."""
    progress: bool = True
    """Show a progress bar."""
    report_to: list[str] = field(default_factory=lambda: ["none"])
    """none or wandb: log the curves (line plots and the PNG) and the table to a tracker."""
    project: str = "icl-rl"
    """Tracker project name."""

    def __post_init__(self) -> None:
        normalize_lists(self, "baselines", "report_to", "offline_context", "lookahead")
        self.baseline_specs()  # a bad label or kwargs object is refused before any work

    def baseline_specs(self) -> dict[str, tuple[str, dict]]:
        """label -> (learner name, its hyperparameters), from --baselines and
        --baseline-kwargs; refuses duplicate or reserved labels and kwargs for no baseline."""
        kwargs = parse_kwargs(self.baseline_kwargs, "--baseline-kwargs")
        specs: dict[str, tuple[str, dict]] = {}
        for b in self.baselines:
            label, _, name = b.partition("=") if "=" in b else (b, "", b)
            if not label or not name:
                raise IclRlError(f"--baselines: {b!r} is not NAME or LABEL=LEARNER")
            if label in specs or label == "model" or label.startswith("lookahead_"):
                raise IclRlError(f"--baselines: the label {label!r} is "
                                 + ("given twice" if label in specs else "the model's own")
                                 + "; name the baseline LABEL=LEARNER with a new LABEL")
            if name != label and name in ("oracle", "source"):
                raise IclRlError(f"--baselines: {b!r}: {name} cannot be relabelled; "
                                 f"write {name}")
            specs[label] = (name, {})
        for label, params in kwargs.items():
            if label not in specs:
                raise IclRlError(f"--baseline-kwargs: {label!r} is not among --baselines "
                                 f"({', '.join(specs) or 'none'}); add it there, e.g. "
                                 f"--baselines ...,{label}")
            if not isinstance(params, dict):
                raise IclRlError(f"--baseline-kwargs: the value for {label!r} must be a JSON "
                                 f"object of hyperparameters, got {params!r}")
            if specs[label][0] in ("oracle", "source") and params:
                raise IclRlError(f"--baseline-kwargs: {label} takes no hyperparameters (the "
                                 "source runs with the ones its dataset recorded)")
            specs[label] = (specs[label][0], dict(params))
        return specs


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probes for the task posterior in a trained model's hidden states."""

    model: str = "runs/model/model"
    """Trained model folder (or the run folder that holds model/)."""
    dataset: str | None = None
    """Dataset it was trained on: gives held-out tasks for finite task sets (default: the one
    recorded in the model's config)."""
    out: str = "runs/probe"
    """Folder for probe.json, probe.md and probe.png."""
    num_tasks: int = 256
    """Tasks the model acts on (a finite split is cycled through)."""
    episodes: int | None = None
    """Episodes per task (default: the model's context for bandits, 20 for gridworlds)."""
    steps_per_task: int = 64
    """Steps per task whose hidden states are kept (evenly spaced): bounds the memory."""
    batch_size: int = 256
    """Tasks replayed at once (a step costs about the same for 64 tasks as for 256 on a CPU:
    fewer, wider batches are faster; memory grows with it by the acting state)."""
    buckets: int = 4
    """Step buckets the R^2 is also reported for (early to late in the history)."""
    folds: int = 5
    """Cross-validation folds over tasks."""
    seed: int = 12345
    """Seed of the tasks, the env noise, the untrained control and the shuffles."""
    progress: bool = True
    """Show a progress bar."""


@dataclass(frozen=True)
class CompareConfig:
    """Put the models of several evaluations side by side."""

    results: list[str] = field(default_factory=list)
    """Evaluation folders or results.json files, each optionally NAME=PATH (default name:
    the folder's name); space- or comma-separated."""
    out: str = "runs/compare"
    """Folder for compare.md and compare.png."""
    baselines: list[str] = field(default_factory=list)
    """Baselines of the first run to show (default: all of them)."""
    title: str | None = None
    """Title of the plot."""

    def __post_init__(self) -> None:
        normalize_lists(self, "results", "baselines")
