"""`icl-rl eval`: roll a trained model out in context on held-out tasks, next to baselines.

Every agent (the model, its source learner, uniform random, the oracle and, for bandits, UCB1
and Thompson sampling) runs through the one rollout loop on the same tasks with the same
environment seed. Reported per agent: mean return per episode with 95% confidence intervals
over tasks, in-context improvement (last k vs first k episodes), the fraction of the oracle's
return, and for bandits cumulative regret. Output: curves.png, report.md, results.json.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from icl_rl.config import parse_config, parse_kwargs, require_positive, save_config
from icl_rl.dataset import atomic_write_text, read_card
from icl_rl.envs import Env, make_env
from icl_rl.envs.bandits import Bandit
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.policy import ModelAgent
from icl_rl.rng import TaskGenerators
from icl_rl.rollout import History, rollout
from training.train import load_model

log = logging.getLogger(__name__)


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
    baselines: str = "source,random,oracle,ucb,thompson"
    """Agents next to the model (ucb, thompson only for bandits; others: any learner name)."""
    improvement_k: int | None = None
    """Episodes averaged at each end for the in-context improvement (default: episodes // 10)."""
    seed: int = 12345
    """Seed of the evaluation tasks and environment noise."""
    progress: bool = True
    """Show a progress bar."""
    report_to: str = "none"
    """none or wandb: log the curves (line plots and the PNG) and the table to a tracker."""
    project: str = "icl-rl"
    """Tracker project name."""


class OracleAgent:
    """Acts with the env's oracle (the true task is known): the ceiling of every curve."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs):
        """The optimal action in the current state."""
        return self.env.optimal_action()

    def observe(self, *args) -> None:
        """Nothing to learn."""


def mean_ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and the half-width of its 95% normal confidence interval."""
    n = x.shape[0]
    sd = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1:])
    return x.mean(axis=0), 1.96 * sd / math.sqrt(n)


SPLITS = {"test": "held-out", "train": "training"}  # --split: which tasks, in words


def eval_tasks(env: Env, meta: dict | None, n: int, seed: int,
               split: str = "test") -> tuple[torch.Tensor, str]:
    """Held-out tasks (`split` test) or the training ones (`train`) of a finite task set, or
    fresh samples of an infinite one."""
    if env.spec.num_tasks is not None:
        name = SPLITS[split]
        if meta and "task_split" in meta:
            ids = torch.tensor(meta["task_split"][split], dtype=torch.long)
            where = f"the dataset's {name} task split"
        else:
            ids = env.split(seed, 0.1)[0 if split == "train" else 1]
            where = f"a {name} split of the task set (no dataset card)"
        if len(ids) == 0:
            raise IclRlError(f"the {name} task split is empty; regenerate with "
                             "--heldout-fraction in (0, 1)")
        return env.task_set()[ids[torch.arange(n) % len(ids)]], where
    if split == "train":
        raise IclRlError(f"--split train: {env.spec.name} has no finite task set to hold tasks "
                         "out of (every evaluation task is a fresh sample); use --split test")
    g = torch.Generator().manual_seed(seed)
    return env.sample_tasks(n, g), f"{n} freshly sampled tasks (seed {seed})"


def episodes_to(curve: np.ndarray, level: float) -> int | None:
    """The first episode (1-based) whose mean return reaches `level`; None if none does or
    there is no positive level to reach."""
    if not level > 0:
        return None
    hits = np.nonzero(curve >= level)[0]
    return int(hits[0]) + 1 if len(hits) else None


def search_and_exploit(h: History, returns: np.ndarray, oracle: np.ndarray) -> dict:
    """How fast an agent finds reward and how well it uses it once found (sparse-reward envs).

    `rewarded_by_episode[e]`: fraction of tasks with a non-zero reward in episodes 1..e+1.
    `fraction_of_oracle_after_first_reward`: return over the episodes after each task's first
    rewarded one, as a fraction of that task's oracle return `oracle` [N] (tasks found early
    tend to be easy ones, so one average oracle would flatter them); None if no task was
    rewarded before its last episode. An agent can trail another for either reason; these
    tell which.
    """
    rewarded = h.per_episode((h.rewards != 0).float()) > 0  # [N, E]
    seen = rewarded.cummax(dim=1).values.numpy()  # reward seen by episode e
    episodes = seen.shape[1]
    first = np.where(seen.any(axis=1), seen.argmax(axis=1), episodes)  # [N]
    after = np.arange(episodes)[None] > first[:, None]
    exploit = None
    if after.any() and (oracle > 0).all():
        exploit = float((returns / oracle[:, None])[after].mean())
    return {"rewarded_by_episode": seen.mean(axis=0).tolist(),
            "fraction_of_oracle_after_first_reward": exploit}


def summarize(h: History, env: Env, k: int, task_oracle: np.ndarray) -> dict:
    """Per-episode curve, improvement, fraction of oracle, regret for one agent, and for envs
    other than bandits the search / exploitation split. `task_oracle` [N]: the oracle's
    episode return on each task."""
    oracle_return = float(task_oracle.mean())
    returns = h.episode_returns().numpy()  # [N, E]
    mean, ci = mean_ci(returns)
    first, last = returns[:, :k].mean(axis=1), returns[:, -k:].mean(axis=1)
    imp_mean, imp_ci = mean_ci((last - first)[:, None])
    res = {
        "episode_return_mean": mean.tolist(),
        "episode_return_ci95": ci.tolist(),
        "first_k_return": float(first.mean()),
        "last_k_return": float(last.mean()),
        "improvement": float(imp_mean[0]),
        "improvement_ci95": float(imp_ci[0]),
        "fraction_of_oracle_last_k": float(last.mean() / oracle_return) if oracle_return else None,
        "episodes_to_80pct_oracle": episodes_to(mean, 0.8 * oracle_return),
    }
    if not isinstance(env, Bandit):
        res.update(search_and_exploit(h, returns, task_oracle))
    if isinstance(env, Bandit) and h.expected_rewards is not None:
        best = h.tasks.max(dim=1).values[:, None]  # [N, 1]
        regret = (best - h.expected_rewards).cumsum(dim=1).numpy()  # [N, T]
        r_mean, r_ci = mean_ci(regret)
        res["cumulative_regret_mean"] = r_mean.tolist()
        res["cumulative_regret_ci95"] = r_ci.tolist()
        res["final_regret"] = float(r_mean[-1])
        res["final_regret_ci95"] = float(r_ci[-1])
    return res


def plot(results: dict, path: Path, title: str) -> None:
    """curves.png: return per episode (and cumulative regret for bandits) with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents = results["agents"]
    bandit = all("cumulative_regret_mean" in a for a in agents.values())
    fig, axes = plt.subplots(1, 2 if bandit else 1, figsize=(12 if bandit else 7, 4.5),
                             squeeze=False)
    ax = axes[0, 0]
    window = max(1, results["episodes"] // 20) if bandit else 1  # smooth per-pull noise
    source = (results.get("source_learner") or {}).get("name")
    label = {"source": f"source ({source})"} if source else {}
    for name, a in agents.items():
        m, c = np.array(a["episode_return_mean"]), np.array(a["episode_return_ci95"])
        if window > 1:
            kernel = np.ones(window) / window
            m, c = np.convolve(m, kernel, "valid"), np.convolve(c, kernel, "valid")
        x = np.arange(len(m)) + (window - 1) / 2 + 1
        ax.plot(x, m, label=label.get(name, name), lw=2.2 if name == "model" else 1.4)
        ax.fill_between(x, m - c, m + c, alpha=0.2)
    ax.set_xlabel("episode (pull)" if bandit else "episode")
    ax.set_ylabel("mean return" + (f" ({window}-pull moving avg)" if window > 1 else ""))
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if bandit:
        ax = axes[0, 1]
        for name, a in agents.items():
            m, c = np.array(a["cumulative_regret_mean"]), np.array(a["cumulative_regret_ci95"])
            x = np.arange(1, len(m) + 1)
            ax.plot(x, m, label=label.get(name, name), lw=2.2 if name == "model" else 1.4)
            ax.fill_between(x, m - c, m + c, alpha=0.2)
        ax.set_xlabel("pull")
        ax.set_ylabel("cumulative regret")
        ax.set_title("regret (lower is better)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


SEARCH_NOTE = """
The last two columns split the learning into search (the share of tasks where some reward has
been found) and exploitation (the return in the episodes after that, as a fraction of each
task's oracle return)."""


def report(results: dict) -> str:
    """report.md: what was run and the table."""
    k = results["improvement_k"]
    bandit = all("final_regret" in a for a in results["agents"].values())
    head = (f"| agent | return, first {k} ep. | return, last {k} ep. | in-context improvement "
            f"(95% CI) | last {k} / oracle |" + (" cumulative regret at horizon (95% CI) |"
                                                   if bandit else
                                                   f" episodes to 80% of oracle | tasks rewarded "
                                                   f"in first {k} ep. | return after first "
                                                   f"reward / oracle |"))
    sep = "|---" * (6 if bandit else 8) + "|"
    rows = []
    for name, a in results["agents"].items():
        frac = a["fraction_of_oracle_last_k"]
        row = (f"| {name} | {a['first_k_return']:.3f} | {a['last_k_return']:.3f} | "
               f"{a['improvement']:+.3f} ± {a['improvement_ci95']:.3f} | "
               f"{'' if frac is None else f'{frac:.1%}'} |")
        if bandit:
            row += f" {a['final_regret']:.2f} ± {a['final_regret_ci95']:.2f} |"
        else:
            reached = a.get("episodes_to_80pct_oracle")
            row += f" {'not reached' if reached is None else reached} |"
            seen, exploit = a.get("rewarded_by_episode"), a.get(
                "fraction_of_oracle_after_first_reward")
            row += f" {'' if not seen else f'{seen[k - 1]:.0%}'} |"
            row += f" {'' if exploit is None else f'{exploit:.0%}'} |"
        rows.append(row)
    ratios = ""
    if bandit and "source" in results["agents"]:
        m = results["agents"]["model"]["final_regret"]
        lines = [f"- model / {b}: {m / results['agents'][b]['final_regret']:.2f}x"
                 for b in results["agents"] if b != "model" and b != "oracle"
                 and results["agents"][b]["final_regret"] > 0]
        ratios = "\nRegret of the model relative to each baseline:\n\n" + "\n".join(lines) + "\n"
    table = "\n".join(rows)
    return f"""# In-context evaluation

- model: `{results['model']}` (trained for `{results['env']['name']}` {results['env']['params']})
- source learner: `{results['source_learner']}`
- tasks: {results['num_tasks']} — {results['tasks_from']}
- episodes per task: {results['episodes']} (episode length {results['episode_len']});
  model context window {results['window']} tokens, actions {results['action_selection']}

{head}
{sep}
{table}
{ratios}
![curves](curves.png)

In-context improvement is the mean return over the last {k} episodes minus the first {k},
per task, with its 95% confidence interval over tasks. No weights change during evaluation:
whatever improvement the model shows, it learns in context.{"" if bandit else SEARCH_NOTE}
"""


def validate(config: EvalConfig) -> None:
    """Check the options that need no model or dataset, before anything heavy runs."""
    if config.report_to not in ("none", "wandb"):
        raise IclRlError(f"--report-to must be none or wandb, got {config.report_to!r}")
    require_positive(config, "batch_size", "window", "improvement_k", optional=True)
    require_positive(config, "num_tasks", "episodes")
    if not config.temperature > 0:
        raise IclRlError(f"--temperature must be > 0, got {config.temperature}")
    if config.split not in SPLITS:
        raise IclRlError(f"--split must be test (held-out tasks) or train, got {config.split!r}")


def main(config: EvalConfig) -> dict:
    """Run the evaluation; returns the results dict (also written to results.json)."""
    validate(config)
    model = load_model(config.model)
    mc = model.config
    if config.env is not None and config.env != mc.env_name:
        raise IclRlError(f"--env {config.env}: the model {config.model} was trained for "
                         f"{mc.env_name}; evaluate it there or train a model for {config.env}")
    env = make_env(mc.env_name, **{**mc.env_params, **parse_kwargs(config.env_kwargs,
                                                                  "--env-kwargs")})
    if (env.spec.obs_dim, env.spec.num_actions) != (mc.obs_dim, mc.num_actions):
        raise IclRlError(f"--env-kwargs change the spaces (obs_dim {env.spec.obs_dim}, "
                         f"{env.spec.num_actions} actions) from the model's ({mc.obs_dim}, "
                         f"{mc.num_actions})")
    training = getattr(mc, "training", None) or {}
    dataset = config.dataset or training.get("dataset")
    meta = None
    if dataset is not None and (Path(dataset).exists() or config.dataset):
        meta = read_card(dataset)
        if meta and meta["env"]["name"] != mc.env_name:
            raise IclRlError(f"{dataset} is {meta['env']['name']} data but the model was trained "
                             f"for {mc.env_name}")
    learner = (meta or {}).get("learner") or training.get("learner")
    tasks, tasks_from = eval_tasks(env, meta, config.num_tasks, config.seed,
                                   config.split)
    steps = config.episodes * env.spec.episode_len
    k = config.improvement_k or max(1, config.episodes // 10)
    if not 1 <= k <= config.episodes:
        raise IclRlError(f"--improvement-k must be in [1, {config.episodes}]")

    agents = {"model": ModelAgent(model, greedy=config.greedy, window=config.window,
                                  temperature=config.temperature)}
    for b in [b.strip() for b in config.baselines.split(",") if b.strip()]:
        if b == "oracle":
            agents["oracle"] = OracleAgent(env)
        elif b == "source":
            if learner is None:
                log.warning("no source learner recorded; skipping the `source` baseline")
                continue
            agents["source"] = make_learner(learner["name"], env, **learner["params"])
        elif b in ("ucb", "thompson") and not isinstance(env, Bandit):
            continue
        elif learner is not None and b == learner["name"] and "source" in agents:
            continue  # the source learner already runs, with its own hyperparameters
        else:
            agents[b] = make_learner(b, env)

    results = {"model": str(config.model), "env": {"name": mc.env_name, "params": env.params()},
               "source_learner": learner, "num_tasks": config.num_tasks,
               "split": config.split, "tasks_from": tasks_from, "episodes": config.episodes,
               "episode_len": env.spec.episode_len, "window": agents["model"].window,
               "action_selection": "greedy" if config.greedy else "sampled",
               "temperature": None if config.greedy else config.temperature,
               "improvement_k": k, "seed": config.seed, "agents": {}}
    histories = {}
    batch = config.batch_size or config.num_tasks
    chunks = [range(s, min(s + batch, config.num_tasks)) for s in range(0, config.num_tasks,
                                                                        batch)]
    bar = tqdm(total=len(agents) * steps * len(chunks), desc="eval",
               disable=not config.progress, unit="step")
    for name, agent in agents.items():
        parts = []
        for idx in chunks:
            # One random stream per task (env noise; agent sampling), seeded by the task's
            # index: the numbers do not depend on --batch-size. Every agent sees the same env
            # stream for a task (common random numbers).
            parts.append(rollout(env, agent, tasks[idx.start:idx.stop], steps,
                                 env_generator=TaskGenerators.for_tasks(config.seed, 1, idx),
                                 agent_generator=TaskGenerators.for_tasks(config.seed, 2, idx),
                                 on_step=lambda _t: bar.update(1)))
        histories[name] = History.cat(parts)
    bar.close()
    env.reset(tasks)  # the oracle's return on exactly these tasks
    task_oracle = env.optimal_episode_return().double().numpy()  # [N]
    oracle_return = float(task_oracle.mean())
    for name, h in histories.items():
        results["agents"][name] = summarize(h, env, k, task_oracle)
    results["oracle_episode_return"] = oracle_return

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    plot(results, out / "curves.png", f"in context on {mc.env_name}, {SPLITS[config.split]} tasks")
    atomic_write_text(out / "report.md", report(results))
    save_config(config, out / "eval_config.json")
    add_to_model_card(config.model, results)
    if config.report_to == "wandb":
        log_to_wandb(config, results, out)
    return results


def add_to_model_card(model: str, results: dict) -> None:
    """Put the evaluation table into a local model folder's README.md (replacing an older one),
    so that a later `--push-to-hub` of the folder publishes it."""
    path = Path(model)
    card = path / "model" / "README.md" if (path / "model").is_dir() else path / "README.md"
    if not card.exists():
        return
    text = card.read_text().split("\n## In-context evaluation")[0].rstrip()
    table = report(results).split("\n\n", 3)[2]  # the markdown table and the regret lines
    atomic_write_text(card, f"""{text}

## In-context evaluation

{results['num_tasks']} tasks ({results['tasks_from']}), {results['episodes']} episodes each:

{table.strip()}
""")


def log_to_wandb(config: EvalConfig, results: dict, out: Path) -> None:
    """The in-context curves as wandb line plots, the PNG, and the summary numbers, through
    accelerate's tracker."""
    import wandb
    from accelerate import Accelerator

    accelerator = Accelerator(log_with="wandb", project_dir=str(out))
    accelerator.init_trackers(config.project, config={"eval": vars(config), **{
        k: results[k] for k in ("env", "source_learner", "num_tasks", "episodes")}},
        init_kwargs={"wandb": {"dir": str(out), "job_type": "eval"}})
    run = accelerator.get_tracker("wandb", unwrap=True)
    agents = results["agents"]
    episodes = list(range(1, results["episodes"] + 1))
    row = {"eval/curves_png": wandb.Image(str(out / "curves.png")),
           "eval/episode_return": wandb.plot.line_series(
               xs=episodes, ys=[a["episode_return_mean"] for a in agents.values()],
               keys=list(agents), title="mean return per episode", xname="episode")}
    if all("cumulative_regret_mean" in a for a in agents.values()):
        row["eval/cumulative_regret"] = wandb.plot.line_series(
            xs=list(range(1, len(agents["model"]["cumulative_regret_mean"]) + 1)),
            ys=[a["cumulative_regret_mean"] for a in agents.values()], keys=list(agents),
            title="cumulative regret", xname="step")
    for name, a in agents.items():
        row[f"eval/{name}/last_k_return"] = a["last_k_return"]
        row[f"eval/{name}/improvement"] = a["improvement"]
    run.log(row)
    accelerator.end_training()


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(EvalConfig, argv, prog="icl-rl eval"))

