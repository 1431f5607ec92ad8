"""A trained model's README.md, through huggingface_hub's card classes.

`write_model_card` writes the card `train` leaves in a model folder: YAML header
(`ModelCardData`: library, tags, datasets), what the model is, how to load it, its training
configuration. `add_evaluation` puts (or replaces) the "In-context evaluation" section that
`eval` renders, so a later `--push-to-hub` of the folder publishes it.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from icl_rl.io import atomic_write_text

SECTION = "## In-context evaluation"
HEADER_ORDER = ["library_name", "tags", "datasets"]  # the YAML keys, in this order
HIDDEN_OPTIONS = ("push_to_hub", "private", "progress")  # not worth a row of the card
# training target -> (what the model is called, its Hub tag, what it predicts)
KINDS = {
    "actions": ("Algorithm Distillation", "algorithm-distillation", "the learner's next action"),
    "optimal_actions": ("Oracle-action distillation", "oracle-action-distillation",
                        "the oracle's action in every state"),
}
# families whose method has its own name whatever the target
FAMILY_KINDS = {
    "icl_rl_dpt": ("Decision-Pretrained Transformer", "decision-pretrained-transformer",
                   "the oracle's action at a query state from an in-context set of the task's "
                   "transitions"),
}


def card_text(model_config, train_config: dict, metrics: list[dict], step: int) -> str:
    """The card as markdown with its YAML header (see `write_model_card`)."""
    from icl_rl import __version__
    from icl_rl.dataset import split_sources

    origin = model_config.provenance  # FamilyConfig reads an older model's `training` as it
    env_name, env_params = model_config.env_name, model_config.env_params
    dataset = train_config.get("dataset") or origin.get("dataset") or "?"
    target = train_config.get("target") or origin.get("target") or "actions"
    kind, tag, what = FAMILY_KINDS.get(model_config.model_type) or KINDS.get(target,
                                                                           KINDS["actions"])
    learner = origin.get("learner") or {}
    context = model_config.max_context
    if origin.get("trainer") == "rl2":  # trained by RL on the env itself, from no dataset
        kind, tag, dataset = "RL² (meta-RL by PPO)", "rl2", "?"
        source = (f"by PPO across tasks of `{env_name}`, never shown a learning algorithm: "
                  f"{step} iterations, {origin.get('env_steps', '?')} env steps, trials of "
                  f"{origin.get('trial_episodes', '?')} episodes with the memory kept across "
                  "them, to maximise each trial's total reward")
    else:
        source = (f"to predict {what} from the learning histories of\n"
                  f"`{learner.get('name', '?')}` in `{dataset}` ({step} steps, context "
                  f"{context}\ntransitions)")
    data = ModelCardData(library_name="icl-rl", tags=["reinforcement-learning",
                                                     "in-context-learning", tag, env_name],
                         datasets=None if dataset == "?" else  # Hub ids, not local folders
                         [d for d in split_sources(dataset) if not Path(d).exists()] or None)
    evals = [m for m in metrics if "eval/loss" in m]
    quality = (f"Held-out action loss {evals[-1]['eval/loss']:.4f}, accuracy "
               f"{evals[-1]['eval/accuracy']:.1%} (step {evals[-1]['step']})." if evals else "")
    rows = "\n".join(f"| {k} | {v} |" for k, v in train_config.items()
                     if k not in HIDDEN_OPTIONS)
    return f"""---
{data.to_yaml(original_order=HEADER_ORDER)}
---

# {kind} model for `{env_name}`

A {model_config.describe()} trained
with icl-rl {__version__} {source}.
Env: `{env_name}` {env_params}. {quality}

## Use

```python
import icl_rl.models  # registers the model classes with transformers' Auto classes
from transformers import AutoModel
model = AutoModel.from_pretrained("REPO_OR_PATH")
```

In context on held-out tasks: `icl-rl eval --model REPO_OR_PATH --episodes 40`.

## Training configuration

| option | value |
|---|---|
{rows}
"""


def write_model_card(folder: str | Path, model_config, train_config: dict,
                     metrics: list[dict], step: int) -> ModelCard:
    """Write `folder`/README.md for a trained model and return the card.

    `model_config`: the model's FamilyConfig (env, shape via `describe()`, `provenance`);
    `train_config`: the training options (dataclasses.asdict of the TrainConfig); `metrics`:
    the logged records (the last one with `eval/loss` is quoted); `step`: steps trained.
    """
    card = ModelCard(card_text(model_config, train_config, metrics, step))
    atomic_write_text(Path(folder) / "README.md", str(card))
    return card


def card_path(model: str | Path) -> Path:
    """The README.md of a model folder, or of the model/ folder in a run folder."""
    path = Path(model)
    return path / "model" / "README.md" if (path / "model").is_dir() else path / "README.md"


def add_evaluation(model_folder: str | Path, results: dict, table: str) -> Path | None:
    """Put the evaluation `table` (markdown, the agents table `eval` renders from its metric
    registry) into a local model folder's card under "In-context evaluation", replacing an
    older one; `results` (eval's results.json) says on what. Returns the card's path, or None
    where there is no local card (a model loaded from the Hub)."""
    path = card_path(model_folder)
    if not path.is_file():
        return None
    card = ModelCard(path.read_text())
    body = card.text.split(f"\n{SECTION}")[0].rstrip()
    card.text = f"""{body}

{SECTION}

{results['num_tasks']} tasks ({results['tasks_from']}), {results['episodes']} episodes each:

{table.strip()}
"""
    # a card without a YAML header stays without one (str(card) would add an empty one)
    has_header = path.read_text().lstrip().startswith("---")
    atomic_write_text(path, str(card) if has_header else card.text.lstrip())
    return path
