"""What an evaluation shows, from the metric registry: the agents table, report.md, curves.png,
the model card section and the wandb run. Nothing here names a metric: each shows the
metrics an evaluation computed (`eval.metrics.metrics_of`)."""

from __future__ import annotations

from pathlib import Path

from eval.metrics import Metric, metrics_of, shown_columns
from eval.offline import bayes_floor_text, offline_table
from eval.world_model import thinking_time_table
from icl_rl.model_card import add_evaluation


def agents_table(results: dict, metrics: list[Metric] | None = None) -> str:
    """The markdown table, one row per agent and the metrics' columns, and what the metrics
    show right after it (e.g. regret ratios)."""
    metrics = metrics_of(results) if metrics is None else metrics
    k = results["improvement_k"]
    columns = shown_columns([c for m in metrics for c in m.columns],
                            results["agents"].values())
    lines = ["| agent | " + " | ".join(c.title(k) for c in columns) + " |",
             "|---" * (1 + len(columns)) + "|"]
    for name, a in results["agents"].items():
        lines.append("| " + " | ".join([name, *(c.render(a, k) for c in columns)]) + " |")
    after = "".join(m.after_table(results) for m in metrics if m.after_table is not None)
    return "\n".join(lines) + "\n" + after


def report(results: dict) -> str:
    """report.md: what was run, the agents table, the curves and what the columns mean."""

    def memory(r: dict) -> str:
        if r.get("window") is None:  # a recurrent family: the state is the memory
            return "model memory: a constant-size state over the whole history"
        return f"model context window {r['window']} tokens"

    metrics = metrics_of(results)
    k = results["improvement_k"]
    notes = "\n".join(m.note.format(k=k) for m in metrics if m.note)
    sections = ""  # what only some evaluations have, after the notes
    if results.get("offline"):
        o = results["offline"]
        sections += (f"\n## Offline deployment\n\nGreedy actions from a fixed context: the first "
                     f"n transitions of {o['num_tasks']} `{o['split']}` histories of "
                     f"`{o['dataset']}`, {o['episodes']} episode(s) on each history's task; 95% "
                     f"CIs over tasks.\n\n{offline_table(o)}")
        if o.get("bayes_floor"):
            sections += "\n" + bayes_floor_text(o["bayes_floor"])
    if results.get("lookahead"):
        la = results["lookahead"]
        then = " and the return-to-go predicted after them" if la.get("bootstrap") else ""
        sections += (f"\n## Thinking time: acting with lookahead\n\nThe same model acting from "
                     f"its policy tilted by the return its world-model heads predict over D "
                     f"imagined steps{then} (beam {la['beam']}, beta {la['beta']}; D = 0 is "
                     f"plain acting). Means over the tasks of each task's mean over its "
                     f"{results['episodes']} episodes; 95% CIs over tasks, the gains paired by "
                     f"task.\n\n{thinking_time_table(la)}")
    return f"""# In-context evaluation

- model: `{results['model']}` (trained for `{results['env']['name']}` {results['env']['params']})
- source learner: `{results['source_learner']}`{baseline_settings(results)}
- tasks: {results['num_tasks']} — {results['tasks_from']}
- episodes per task: {results['episodes']} (episode length {results['episode_len']});
  {memory(results)}, actions {results['action_selection']}

{agents_table(results, metrics)}
![curves](curves.png)

{notes}
{sections}"""


def baseline_settings(results: dict) -> str:
    """A line naming the baselines run under another name or with their own hyperparameters
    (older results.json files have no such record: nothing)."""
    shown = [f"{label} = `{b['learner']}` {b['params']}" if b["params"] else
             f"{label} = `{b['learner']}`"
             for label, b in results.get("baselines", {}).items()
             if b["params"] or b["learner"] != label]
    return "\n- baselines: " + "; ".join(shown) if shown else ""


def plot(results: dict, path: Path, title: str | None = None) -> None:
    """curves.png: one panel per metric that draws one (return per episode, cumulative regret
    where the env knows expected rewards), each agent with its 95% CI; `title` on the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m.plot for m in metrics_of(results) if m.plot is not None]
    if not panels:
        return
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(7 if n == 1 else 6 * n, 4.5), squeeze=False)
    for ax, draw in zip(axes[0], panels, strict=True):
        draw(ax, results)
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def add_to_model_card(model: str, results: dict) -> None:
    """Put the evaluation table into a local model folder's README.md (replacing an older one),
    so that a later `--push-to-hub` of the folder publishes it."""
    add_evaluation(model, results, agents_table(results))


def scalars(results: dict) -> dict[str, float]:
    """Every agent's numeric summary values, as `eval/<agent>/<key>`."""
    out = {}
    for m in metrics_of(results):
        for key in m.summary:
            for name, a in results["agents"].items():
                v = a.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"eval/{name}/{key}"] = v
    return out


def log_to_wandb(config, results: dict, out: Path) -> None:
    """The metrics' curves as wandb line plots, the PNG, and their summary numbers, through
    accelerate's tracker. `config`: the EvalConfig (logged, and its `project`)."""
    import wandb
    from accelerate import Accelerator

    accelerator = Accelerator(log_with="wandb", project_dir=str(out))
    accelerator.init_trackers(config.project, config={"eval": vars(config), **{
        k: results[k] for k in ("env", "source_learner", "num_tasks", "episodes")}},
        init_kwargs={"wandb": {"dir": str(out), "job_type": "eval"}})
    run = accelerator.get_tracker("wandb", unwrap=True)
    agents = results["agents"]
    row = {"eval/curves_png": wandb.Image(str(out / "curves.png"))}
    for m in metrics_of(results):
        for s in m.series:
            if agents and all(s.key in a for a in agents.values()):
                n = len(next(iter(agents.values()))[s.key])
                row[f"eval/{s.key.removesuffix('_mean')}"] = wandb.plot.line_series(
                    xs=list(range(1, n + 1)), ys=[a[s.key] for a in agents.values()],
                    keys=list(agents), title=s.title, xname=s.xname)
    row.update(scalars(results))
    run.log(row)
    accelerator.end_training()
