"""`icl-rl sweep`: an ablation sweep over variants of one generate -> train -> eval pipeline.

A sweep file (YAML) holds the base settings of the three stages and the variants, each a set of
overrides of the base:

    out: runs/sweeps/bandit_context
    generate: {env: bernoulli_bandit, learner: ucb, num_histories: 2000, steps: 100}
    train: {context: 100, max_steps: 600}        # or a path to a train YAML file
    eval: {num_tasks: 256, episodes: 100}
    variants:
      full: {}
      one_step_memory: {train: {context: 1}}

Each variant runs in `out/<variant>/` (run/, eval/); variants whose generate settings agree share
one dataset under `out/datasets/`. The sweep is resumable: a variant whose evaluation finished
is not run again, an interrupted training resumes from its last checkpoint and an interrupted
generate from its finished shards. The variant's resolved settings are stamped into its folder:
editing a finished variant's settings is refused rather than mixing old and new results.
Output: `summary.json`, `summary.md` (one row per variant and a column per registered metric's
column, for the model and for its source learner) and `curves.png`.

A `seeds: [0, 1, 2]` list trains every variant once per seed (the `seed` of train and rl2), in
`out/<variant>/seed<k>/`, on the same dataset and the same evaluation tasks, so that the seeds
differ by training alone; the tables then give each variant's mean over its seeds with a 95%
t-interval over seeds (a CI over held-out tasks says nothing of how another training run
would land), and `summary.json` keeps every seed's numbers. Seeds added to the list later run
alone; the finished ones are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from data_gen.generate import validate as validate_generate
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from eval.evaluate import validate as validate_eval
from eval.metrics import metrics_of, registered_metrics, shown_columns
from icl_rl.config import as_list, parse_config
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text
from icl_rl.software import software
from pipeline.config import SweepConfig
from training.rl2 import RL2Config
from training.rl2 import main as rl2
from training.rl2 import validate as validate_rl2
from training.train import TrainConfig
from training.train import main as train
from training.train import validate as validate_train

log = logging.getLogger(__name__)
STAGES = {"generate": GenerateConfig, "train": TrainConfig, "eval": EvalConfig,
          "rl2": RL2Config}
# set by the sweep for every variant; a sweep file may not set them
WIRED = {"generate": ("out",), "train": ("dataset", "out", "resume_from_checkpoint"),
         "eval": ("model", "dataset", "out"), "rl2": ("out", "resume_from_checkpoint")}
# options that change how a stage shows its work, not its results: never compared
DISPLAY = ("progress",)
# the two ways to an in-context learner a variant may run, and the stages of each
PIPELINES = {"ad": ("generate", "train", "eval"), "rl2": ("rl2", "eval")}


@dataclass
class Variant:
    """One variant's resolved stage configs: imitation (generate -> train -> eval) and / or
    plain RL (rl2 -> rl2_eval), whichever the sweep file sets up."""

    name: str
    generate: GenerateConfig | None = None
    train: TrainConfig | None = None
    eval: EvalConfig | None = None
    rl2: RL2Config | None = None
    rl2_eval: EvalConfig | None = None
    group: str = ""
    """The variant of the sweep file this is one training seed of (seeded sweeps; else "")."""
    seed: int | None = None

    @property
    def label(self) -> str:
        """The sweep file's variant name (`--only` and the tables use it)."""
        return self.group or self.name


def _load_yaml(path: Path, what: str) -> dict:
    import yaml

    if not path.is_file():
        raise IclRlError(f"{what}: no such file {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise IclRlError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise IclRlError(f"{path}: expected a mapping")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def _stage_dict(value, sweep_file: Path, stage: str, where: str) -> dict:
    """A stage's settings: a mapping, or a path (relative to the cwd) to a stage YAML file,
    whose own paths (out, dataset, ...) give way to the sweep's."""
    if value is None:
        return {}
    if isinstance(value, str):
        values = _load_yaml(Path(value), f"{sweep_file}: {where}")
        return {k: v for k, v in values.items() if k not in WIRED[stage]}
    if not isinstance(value, dict):
        raise IclRlError(f"{sweep_file}: {where} must be a mapping of options or a YAML path")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _build(stage: str, values: dict, wired: dict, sweep_file: Path, where: str):
    cls = STAGES[stage]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        hint = getattr(cls, "unknown_option_hint", lambda _names: "")(unknown)
        raise IclRlError(f"{sweep_file}: {where}: unknown {stage} option(s) "
                         f"{', '.join(unknown)}; see `icl-rl {stage} --help`{hint}")
    fixed = sorted(set(values) & set(WIRED[stage]))
    if fixed:
        raise IclRlError(f"{sweep_file}: {where}: {', '.join(fixed)} is set by the sweep for "
                         "every variant; remove it")
    try:
        return cls(**{**values, **wired})
    except TypeError as e:
        raise IclRlError(f"{sweep_file}: {where}: {e}") from None


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _seeds(value, path: Path) -> list[int] | None:
    """The sweep file's `seeds`: None (one run per variant, in its own folder) or distinct
    non-negative integers."""
    if value is None:
        return None
    # a bare number is refused, not read as one seed: `seeds: 3` may as well mean three seeds
    if not isinstance(value, list) or not value or len(set(value)) != len(value) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
        raise IclRlError(f"{path}: `seeds` must be a list of distinct non-negative integers "
                         f"(training seeds, e.g. [0, 1, 2]), got {value!r}")
    return value


def plan(config: SweepConfig) -> tuple[Path, list[Variant]]:
    """Read and check the sweep file; every variant's configs, before anything runs."""
    path = Path(config.sweep)
    spec = _load_yaml(path, "--sweep")
    unknown = sorted(set(spec) - {"out", "variants", "seeds", *STAGES})
    if unknown:
        raise IclRlError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep file has out, "
                         "generate, train, eval, rl2, variants and seeds")
    seeds = _seeds(spec.get("seeds"), path)
    ad, by_rl = "generate" in spec or "train" in spec, "rl2" in spec
    if not (ad or by_rl):
        raise IclRlError(f"{path}: set `generate` and `train` (algorithm distillation), `rl2` "
                         "(plain RL) or both")
    out = Path(config.out or spec.get("out") or "")
    if not str(out) or str(out) == ".":
        raise IclRlError(f"{path}: no `out` folder; set it in the file or pass --out")
    variants = spec.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise IclRlError(f"{path}: `variants` must map variant names to overrides, e.g. "
                         "{full: {}, short: {train: {context: 8}}}")
    base = {s: _stage_dict(spec.get(s), path, s, s) for s in STAGES}
    quiet = {} if config.progress else {"progress": False}  # --no-progress over the file
    result = []
    for name, over in variants.items():
        name = str(name)
        if not name.replace("_", "").replace("-", "").isalnum():
            raise IclRlError(f"{path}: variant name {name!r}: use letters, digits, - and _")
        over = over or {}
        if not isinstance(over, dict) or set(over) - set(STAGES):
            raise IclRlError(f"{path}: variant {name}: overrides must be a mapping with keys "
                             "among generate, train, eval, rl2")
        merged = {s: {**base[s], **_stage_dict(over.get(s), path, s, f"variant {name}: {s}"),
                      **quiet} for s in STAGES}
        if seeds is None:
            result.append(_variant(Variant(name), merged, out, path, ad, by_rl))
            continue
        for stage in ("train", "rl2"):
            if "seed" in merged[stage]:
                raise IclRlError(f"{path}: variant {name}: {stage} sets `seed`, but `seeds` "
                                 "sets the training seed of every variant; remove one")
        for seed in seeds:
            seeded = {**merged, "train": {**merged["train"], "seed": seed},
                      "rl2": {**merged["rl2"], "seed": seed}}
            result.append(_variant(Variant(f"{name}/seed{seed}", group=name, seed=seed),
                                   seeded, out, path, ad, by_rl))
    if config.only:
        missing = sorted(set(config.only) - {v.label for v in result})
        if missing:
            raise IclRlError(f"--only: no variant(s) {', '.join(missing)} in {path} (it has "
                             f"{', '.join(dict.fromkeys(v.label for v in result))})")
    return out, result


def _variant(variant: Variant, merged: dict, out: Path, path: Path, ad: bool,
             by_rl: bool) -> Variant:
    """Build and check the stage configs of one variant (one seed of it, in a seeded sweep)."""
    name, where = variant.name, f"variant {variant.label}"
    if by_rl:
        run = out / name / "rl2"
        variant.rl2 = _build("rl2", merged["rl2"], {"out": str(run),
                                                    "resume_from_checkpoint": "auto"},
                             path, where)
        variant.rl2_eval = _build("eval", merged["eval"], {
            "model": str(run / "model"), "dataset": None,
            "out": str(out / name / "rl2_eval")}, path, where)
        validate_rl2(variant.rl2)
        validate_eval(variant.rl2_eval)
    if not ad:
        return variant
    gen = _build("generate", merged["generate"], {"out": ""}, path, where)
    # None-valued options left out: an option added later (default None) keeps the name
    data = out / "datasets" / _digest({k: v for k, v in gen.identity().items()
                                       if v is not None})
    gen = dataclasses.replace(gen, out=str(data))
    run = out / name / "run"
    tr = _build("train", merged["train"], {"dataset": str(data), "out": str(run),
                                           "resume_from_checkpoint": "auto"}, path, where)
    ev = _build("eval", merged["eval"], {"model": str(run / "model"), "dataset": str(data),
                                         "out": str(out / name / "eval")}, path, where)
    validate_generate(gen)
    validate_train(tr)
    validate_eval(ev)
    variant.generate, variant.train, variant.eval = gen, tr, ev
    return variant


def stamp(v: Variant, pipeline: str = "ad") -> dict:
    """What identifies the results of a variant's pipeline (its stages' settings)."""
    return {s: dataclasses.asdict(getattr(v, "rl2_eval" if (pipeline, s) == ("rl2", "eval")
                                          else s)) for s in PIPELINES[pipeline]}


def same_settings(old: dict, new: dict) -> bool:
    """Stamps agree on every option the sweep file controls: the wired paths (which follow
    from the rest) are not compared, an option missing from an older stamp (added in a later
    version) counts as its default, which is what that version ran with, and a list option
    stamped as one comma-separated string (as older versions did) counts as its list."""
    for stage, cls in STAGES.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        a, b = old.get(stage, {}), new.get(stage, {})
        for k in (set(a) | set(b)) - set(WIRED[stage]) - set(DISPLAY):
            f = fields.get(k)
            default = (None if f is None else f.default_factory()
                       if f.default is dataclasses.MISSING else f.default)
            x, y = a.get(k, default), b.get(k, default)
            if isinstance(default, list):  # a list option: compare as lists of names
                x, y = as_list(x), as_list(y)
            if x != y:
                return False
    return True


def _kept(v: Variant, out: Path, pipeline: str, evaluation: EvalConfig) -> dict | None:
    """The results of a pipeline of `v` finished before with the same settings (else None,
    after stamping its settings); other settings are refused."""
    folder = out / v.name
    stamp_file = folder / ("variant.json" if pipeline == "ad" else "rl2_variant.json")
    results_file = Path(evaluation.out) / "results.json"
    if stamp_file.exists():
        if not same_settings(json.loads(stamp_file.read_text()), stamp(v, pipeline)):
            raise IclRlError(f"{folder} holds variant {v.name} run with other settings "
                             f"({stamp_file}); rename the variant or delete that folder")
        if results_file.exists():
            log.info("variant %s (%s): done before, kept (%s)", v.name, pipeline, results_file)
            return json.loads(results_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp_file, json.dumps(stamp(v, pipeline), indent=1))
    return None


def run_variant(v: Variant, out: Path) -> dict:
    """Each pipeline of the variant: generate (or reuse), train (or resume), evaluate; rl2 (or
    resume), evaluate. Returns {pipeline: eval results}."""
    results = {}
    if v.train is not None:
        results["ad"] = _kept(v, out, "ad", v.eval)
        if results["ad"] is None:
            if not (Path(v.generate.out) / "README.md").exists():
                generate(v.generate)  # resumes its own unfinished shards
            if not (Path(v.train.out) / "model" / "config.json").exists():
                train(v.train)  # resume_from_checkpoint=auto
            results["ad"] = evaluate(v.eval)
    if v.rl2 is not None:
        results["rl2"] = _kept(v, out, "rl2", v.rl2_eval)
        if results["rl2"] is None:
            if not (Path(v.rl2.out) / "model" / "config.json").exists():
                rl2(v.rl2)  # resume_from_checkpoint=auto
            results["rl2"] = evaluate(v.rl2_eval)
    return results


# the agents a sweep summary follows, and the title of each one's table
SUMMARY_AGENTS = {"model": "Model on held-out tasks", "rl2": "RL² policy on held-out tasks",
                  "source": "Source learner on the same tasks"}


def summarize(out: Path, variants: list[Variant]) -> dict:
    """One row per finished variant: the held-out loss and, for the AD model, the RL² policy
    and the AD model's source learner, the summary numbers of every metric its evaluation
    computed (`eval.metrics`)."""
    rows = {}
    for v in variants:
        found = {}  # agent in the summary -> (its pipeline's results, its name there)
        for pipeline, evaluation, agents in (("ad", v.eval, ("model", "source")),
                                             ("rl2", v.rl2_eval, ("model",))):
            results_file = None if evaluation is None else Path(evaluation.out) / "results.json"
            if results_file is None or not results_file.exists():
                continue
            res = json.loads(results_file.read_text())
            for agent in agents:
                found["rl2" if pipeline == "rl2" else agent] = (res, agent)
        if not found:
            continue
        res = next(iter(found.values()))[0]
        metrics = sorted({m.name: m for r, _ in found.values() for m in metrics_of(r)}.values(),
                         key=lambda m: m.name)
        train_log = Path(v.train.out, "metrics.jsonl") if v.train is not None else None
        losses = [json.loads(x)["eval/loss"] for x in train_log.read_text().splitlines()
                  if "eval/loss" in x] if train_log is not None and train_log.exists() else []
        row = {"final_eval_loss": losses[-1] if losses else None,
               "oracle_episode_return": res["oracle_episode_return"],
               "improvement_k": res["improvement_k"], "metrics": [m.name for m in metrics],
               "agents": {}}
        for agent, (r, name) in found.items():
            a = r["agents"].get(name)
            if a is not None:
                row["agents"][agent] = {key: a[key] for m in metrics for key in m.summary
                                        if key in a}
        rows[v.name] = row
    # each evaluation's results.json records what it ran with; this is the summarising process's
    summary = {"out": str(out), "variants": rows, "software": software()}
    groups: dict[str, dict[int, dict]] = {}
    for v in variants:
        if v.group and v.name in rows:
            groups.setdefault(v.group, {})[v.seed] = rows[v.name]
    if groups:
        summary["seeds"] = {group: across_seeds(runs) for group, runs in groups.items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "summary.md", summary_table(summary))
    if rows:
        plot(summary, out / "curves.png")
    return summary


def _scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def across_seeds(runs: dict[int, dict]) -> dict:
    """One variant's rows of several training seeds as one row: every number the mean over the
    seeds, every `*_ci95` a 95% t-interval over the seeds (None from one seed) in place of the
    CI over tasks, curves averaged point by point; a number some seed lacks (an episode never
    reached) is None. `per_seed` keeps each seed's numbers."""
    from scipy import stats

    rows = list(runs.values())
    n = len(rows)
    half = (lambda x: float(stats.t.ppf(0.975, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
            if n > 1 else None)
    agents, per_seed = {}, {}
    for agent in dict.fromkeys(a for r in rows for a in r["agents"]):
        dicts = [r["agents"].get(agent, {}) for r in rows]
        merged, values = {}, {}
        for key in dict.fromkeys(k for d in dicts for k in d):
            if key.endswith("_ci95"):
                continue
            xs = [d.get(key) for d in dicts]
            if all(_scalar(x) for x in xs):
                merged[key], values[key] = float(np.mean(xs)), xs
                if any(f"{key}_ci95" in d for d in dicts):
                    merged[f"{key}_ci95"] = half(xs)
            elif all(isinstance(x, list) and x and all(_scalar(y) for y in x) for x in xs) \
                    and len({len(x) for x in xs}) == 1:
                merged[key] = np.mean(np.asarray(xs, dtype=float), axis=0).tolist()
            elif all(x is None or _scalar(x) for x in xs):
                merged[key], values[key] = None, xs
        agents[agent], per_seed[agent] = merged, values
    losses = [r["final_eval_loss"] for r in rows]
    return {"seeds": list(runs), "agents": agents, "per_seed": per_seed,
            "final_eval_loss": float(np.mean(losses)) if all(_scalar(x) for x in losses)
            else None,
            "oracle_episode_return": float(np.mean([r["oracle_episode_return"] for r in rows])),
            "improvement_k": rows[0]["improvement_k"],
            "metrics": sorted({m for r in rows for m in r["metrics"]})}


def summary_table(summary: dict) -> str:
    """Markdown: for the model (with the held-out loss) and for its source learner, one row per
    variant and the columns of every metric the variants' evaluations computed; in a seeded
    sweep first the tables over seeds (mean, 95% t-interval over seeds), then every seed's."""
    parts = ["# Ablation sweep\n"]
    if summary.get("seeds"):
        parts += _agent_tables(summary["seeds"], "mean over training seeds, ± a 95% "
                               "t-interval over seeds; k: the episodes averaged at each end",
                               seeds=True)
        parts.append("## Every seed\n")
    parts += _agent_tables(summary["variants"], "k: the episodes averaged at each end")
    return "\n".join(parts)


def _agent_tables(variants: dict, note: str, seeds: bool = False) -> list[str]:
    names = {n for row in variants.values() for n in row.get("metrics", [])}
    columns = [c for m in registered_metrics() if m.name in names for c in m.columns]
    parts = []
    for agent, title in SUMMARY_AGENTS.items():
        rows = {n: r for n, r in variants.items() if agent in r["agents"]}
        if not rows:
            continue
        loss = ["held-out loss"] if agent == "model" else []
        shown = shown_columns(columns, (r["agents"][agent] for r in rows.values()))
        head = ["variant", *(["seeds"] if seeds else []), *loss, *(c.title("k") for c in shown)]
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for name, row in rows.items():
            a = row["agents"].get(agent, {})
            loss = [_fmt(row["final_eval_loss"])] if agent == "model" else []
            cells = [name, *([str(len(row["seeds"]))] if seeds else []), *loss,
                     *(c.render(a, row["improvement_k"]) for c in shown)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append(f"{title} ({note}):\n\n" + "\n".join(lines) + "\n")
    return parts


def _fmt(x, fmt=".3f") -> str:
    return "-" if x is None else format(x, fmt)


def plot(summary: dict, path: Path) -> None:
    """The model's in-context curve in every variant, as a fraction of the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in (summary.get("seeds") or summary["variants"]).items():
        for agent, style in (("model", "-"), ("rl2", "--")):
            curve = row["agents"].get(agent, {}).get("episode_return_mean")
            if curve:
                oracle = row["oracle_episode_return"] or 1.0
                label = f"{name} (RL²)" if agent == "rl2" else name
                ax.plot(range(1, len(curve) + 1), [c / oracle for c in curve], style,
                        label=label)
    ax.set_xlabel("episode in context")
    ax.set_ylabel("return / oracle (AD solid, RL² dashed)")
    ax.set_title("ablation sweep: held-out tasks" + (" (mean over training seeds)"
                                                      if summary.get("seeds") else ""))
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(config: SweepConfig) -> dict:
    """Run the variants not yet done; returns the summary."""
    out, variants = plan(config)
    wanted = set(config.only or [v.label for v in variants])
    for v in variants:
        if v.label in wanted:
            log.info("variant %s", v.name)
            run_variant(v, out)
    return summarize(out, variants)


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(SweepConfig, argv, prog="icl-rl sweep"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("sweep")
