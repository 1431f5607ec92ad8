"""Evaluation metrics behind one registry.

A metric is a small object: the envs it applies to (by capability, never by class), the
per-step rollout extras it needs, one function from an agent's History to numbers, and how
those numbers show: table columns, an optional panel of curves.png, per-agent curves for the
tracker, and the scalars a sweep summary and wandb pick up. report.md, results.json,
curves.png, the model card, wandb and the sweep summary iterate over the registry, so adding a
metric is one function and one `register_metric`:

    def first_action_share(h, ctx):
        return {"first_action_share": float((h.actions == 0).float().mean())}

    register_metric(Metric("first_action_share", first_action_share,
                           columns=(Column("first action", ("first_action_share",),
                                           lambda a, k: f"{a['first_action_share']:.0%}"),),
                           summary=("first_action_share",)))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.two_step import STAY_KEYS
from icl_rl.envs import Env, make_env
from icl_rl.errors import IclRlError
from icl_rl.rollout import History


@dataclass(frozen=True)
class Context:
    """What a metric may read besides the agent's History (the same for every agent)."""

    env: Env
    task_oracle: np.ndarray  # [N] the oracle's episode return on each task
    k: int  # episodes averaged at each end of the curve (--improvement-k)
    episodes: int  # episodes per task
    # a fresh instance of the source learner, when it reports its action distribution: the
    # policy a distilled model is compared with along the model's own trajectory
    source: Any = None

    @property
    def oracle_return(self) -> float:
        """The oracle's mean episode return over the tasks."""
        return float(self.task_oracle.mean())


@dataclass(frozen=True)
class Column:
    """One column of the agents table (report.md, model card, sweep summary)."""

    header: str
    """Header text; `{k}` stands for the number of episodes averaged at each end."""
    keys: tuple[str, ...]
    """Keys of an agent's results the cell reads: the cell is empty when one is missing."""
    cell: Callable[[dict, int], str]
    """(agent's results, k) -> the cell's text."""
    optional: bool = False
    """Left out of a table where no agent has its numbers (e.g. the TV to the Bayes-optimal
    policy, computed only where that policy is exact). Notes must not count on its place."""

    def title(self, k: int | str) -> str:
        """The header with k filled in."""
        return self.header.format(k=k)

    def render(self, agent: dict, k: int) -> str:
        """The cell for one agent; "" when the agent has no numbers for it."""
        return self.cell(agent, k) if all(key in agent for key in self.keys) else ""


def shown_columns(columns, agents) -> list[Column]:
    """The columns a table shows for these agents' results (dicts): all, less the optional ones
    no agent has numbers for."""
    agents = list(agents)
    return [c for c in columns
            if not c.optional or any(all(key in a for key in c.keys) for a in agents)]


@dataclass(frozen=True)
class Series:
    """A per-episode (or per-step) curve stored under `key` for every agent: a tracker line plot."""

    key: str
    title: str
    xname: str


def everywhere(env: Env) -> bool:
    """Applies to every env."""
    return True


@dataclass(frozen=True)
class Metric:
    """A metric: where it applies, what it needs, how it computes and how it shows."""

    name: str
    """Unique name (results.json lists the metrics computed by name)."""
    compute: Callable[[History, Context], dict]
    """(one agent's History, context) -> numbers merged into results["agents"][agent]."""
    applies: Callable[[Env], bool] = everywhere
    """Whether the metric means something in an env, from its capabilities
    (`has_expected_rewards`, `is_episodic`, `has_finite_tasks`)."""
    needs: frozenset[str] = frozenset()
    """Rollout extras it reads from `History.extras` (e.g. "action_probs"); an agent whose
    History lacks one gets no numbers for this metric (empty cells)."""
    columns: tuple[Column, ...] = ()
    """Its columns in the agents table, in order."""
    summary: tuple[str, ...] = ()
    """Result keys a sweep summary keeps per agent; the numeric ones are also wandb scalars."""
    series: tuple[Series, ...] = ()
    """Per-agent curves logged as tracker line plots."""
    plot: Callable[[Any, dict], None] | None = None
    """(matplotlib Axes, results) -> draws one panel of curves.png."""
    after_table: Callable[[dict], str] | None = None
    """(results) -> markdown shown right after the agents table ("" for nothing)."""
    note: str = ""
    """A sentence or two for the end of report.md explaining the columns; `{k}` as above."""


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add `metric` after the ones already registered (its columns come after theirs)."""
    if not isinstance(metric, Metric):
        raise IclRlError(f"register_metric: expected an eval.metrics.Metric, got "
                         f"{type(metric).__name__}")
    if metric.name in _REGISTRY:
        raise IclRlError(f"a metric named {metric.name!r} is already registered; pick another "
                         "name or unregister_metric it first")
    _REGISTRY[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove the metric `name` (tests that register their own clean up with this)."""
    if name not in _REGISTRY:
        raise IclRlError(f"no metric named {name!r} is registered; registered: "
                         f"{', '.join(_REGISTRY)}")
    return _REGISTRY.pop(name)


def registered_metrics() -> list[Metric]:
    """Every registered metric, in registration order."""
    return list(_REGISTRY.values())


def metrics_for(env: Env) -> list[Metric]:
    """The registered metrics that apply to `env`."""
    return [m for m in _REGISTRY.values() if m.applies(env)]


def metrics_of(results: dict) -> list[Metric]:
    """The registered metrics an evaluation computed (by the names in results["metrics"]; for
    results written before that key existed, those that apply to its env)."""
    if "metrics" in results:
        names = set(results["metrics"])
        return [m for m in _REGISTRY.values() if m.name in names]
    env = results["env"]
    return metrics_for(make_env(env["name"], **env.get("params", {})))


def needed_extras(metrics: Iterable[Metric]) -> set[str]:
    """The rollout extras (`rollout(..., extras=...)`) that `metrics` read."""
    return set().union(*(m.needs for m in metrics))


def extras_for(agent, metrics: Iterable[Metric]) -> list[str]:
    """The extras `metrics` read that `agent` can record (others leave their metrics out)."""
    return sorted(e for e in needed_extras(metrics) if callable(getattr(agent, e, None)))


def compute_metrics(h: History, ctx: Context, metrics: Iterable[Metric]) -> dict:
    """One agent's results: every metric's numbers, merged in order. A metric whose extras
    this History lacks is left out."""
    res = {}
    for m in metrics:
        if m.needs <= h.extras.keys():
            res.update(m.compute(h, ctx))
    return res


def mean_ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and the half-width of its 95% normal confidence interval."""
    n = x.shape[0]
    sd = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1:])
    return x.mean(axis=0), 1.96 * sd / math.sqrt(n)


def task_mean_ci(values) -> tuple[float | None, float | None]:
    """Mean of per-task values and the half-width of its 95% normal CI; None for the mean
    without values and for the CI from fewer than two."""
    x = np.asarray(values, dtype=float)
    if not len(x):
        return None, None
    ci = float(1.96 * x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None
    return float(x.mean()), ci


def episodes_to(curve: np.ndarray, level: float) -> int | None:
    """The first episode (1-based) whose mean return reaches `level`; None if none does or
    there is no positive level to reach."""
    if not level > 0:
        return None
    hits = np.nonzero(curve >= level)[0]
    return int(hits[0]) + 1 if len(hits) else None


def _ends(h: History, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per task, the mean return over the first k and over the last k episodes: [N], [N]."""
    returns = h.episode_returns().numpy()  # [N, E]
    return returns[:, :k].mean(axis=1), returns[:, -k:].mean(axis=1)


# --- curves.png panels -------------------------------------------------------------------------

def agent_label(results: dict, name: str) -> str:
    """An agent's name in a legend (the source learner with what it is)."""
    source = (results.get("source_learner") or {}).get("name")
    return f"source ({source})" if name == "source" and source else name


def draw_curves(ax, results: dict, key: str, ci_key: str, window: int = 1) -> None:
    """Every agent's curve `key` with its 95% CI band `ci_key`, smoothed over `window` points."""
    for name, a in results["agents"].items():
        if key not in a:
            continue
        m, c = np.array(a[key]), np.array(a[ci_key])
        if window > 1:
            kernel = np.ones(window) / window
            m, c = np.convolve(m, kernel, "valid"), np.convolve(c, kernel, "valid")
        x = np.arange(len(m)) + (window - 1) / 2 + 1
        ax.plot(x, m, label=agent_label(results, name), lw=2.2 if name == "model" else 1.4)
        ax.fill_between(x, m - c, m + c, alpha=0.2)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


# --- the metrics -------------------------------------------------------------------------------

def episode_return(h: History, ctx: Context) -> dict:
    """Mean return per episode index over tasks, with its 95% CI: the in-context curve."""
    mean, ci = mean_ci(h.episode_returns().numpy())
    return {"episode_return_mean": mean.tolist(), "episode_return_ci95": ci.tolist()}


def plot_episode_return(ax, results: dict) -> None:
    """Return per episode; one-step episodes (bandit pulls) as a moving average."""
    pulls = results.get("episode_len") == 1
    window = max(1, results["episodes"] // 20) if pulls else 1  # smooth per-pull noise
    draw_curves(ax, results, "episode_return_mean", "episode_return_ci95", window)
    ax.set_xlabel("episode (pull)" if pulls else "episode")
    ax.set_ylabel("mean return" + (f" ({window}-pull moving avg)" if window > 1 else ""))


def first_last_k_return(h: History, ctx: Context) -> dict:
    """Mean return over the first k and over the last k episodes."""
    first, last = _ends(h, ctx.k)
    return {"first_k_return": float(first.mean()), "last_k_return": float(last.mean())}


def improvement(h: History, ctx: Context) -> dict:
    """In-context improvement: last-k minus first-k return per task, mean and 95% CI."""
    first, last = _ends(h, ctx.k)
    imp_mean, imp_ci = mean_ci((last - first)[:, None])
    return {"improvement": float(imp_mean[0]), "improvement_ci95": float(imp_ci[0])}


def fraction_of_oracle(h: History, ctx: Context) -> dict:
    """Last-k return as a fraction of the oracle's mean return (None with a zero oracle)."""
    _, last = _ends(h, ctx.k)
    oracle = ctx.oracle_return
    return {"fraction_of_oracle_last_k": float(last.mean() / oracle) if oracle else None}


def _episodes(n: float | None) -> str:
    """An episode count: a task set's integer as is, a mean over training seeds to 0.1."""
    if n is None:
        return "not reached"
    return str(n) if float(n).is_integer() else f"{n:.1f}"


def episodes_to_80pct_oracle(h: History, ctx: Context) -> dict:
    """The first episode whose mean return reaches 80% of the oracle's (None if none does)."""
    mean = h.episode_returns().numpy().mean(axis=0)  # [E]
    return {"episodes_to_80pct_oracle": episodes_to(mean, 0.8 * ctx.oracle_return)}


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


def search_exploit(h: History, ctx: Context) -> dict:
    """`search_and_exploit` as a metric."""
    return search_and_exploit(h, h.episode_returns().numpy(), ctx.task_oracle)


SEARCH_NOTE = """
The last two columns split the learning into search (the share of tasks where some reward has
been found) and exploitation (the return in the episodes after that, as a fraction of each
task's oracle return)."""


def cumulative_regret(h: History, ctx: Context) -> dict:
    """Cumulative expected regret per step against the best arm, mean and 95% CI; the final
    value. Empty when the History has no expected rewards."""
    if h.expected_rewards is None:
        return {}
    best = h.tasks.max(dim=1).values[:, None]  # [N, 1]
    regret = (best - h.expected_rewards).cumsum(dim=1).numpy()  # [N, T]
    r_mean, r_ci = mean_ci(regret)
    return {"cumulative_regret_mean": r_mean.tolist(), "cumulative_regret_ci95": r_ci.tolist(),
            "final_regret": float(r_mean[-1]), "final_regret_ci95": float(r_ci[-1])}


def plot_cumulative_regret(ax, results: dict) -> None:
    """Cumulative regret per pull."""
    draw_curves(ax, results, "cumulative_regret_mean", "cumulative_regret_ci95")
    ax.set_xlabel("pull")
    ax.set_ylabel("cumulative regret")
    ax.set_title("regret (lower is better)")


def regret_ratios(results: dict) -> str:
    """The model's final regret relative to each baseline's (when the source learner ran)."""
    agents = results["agents"]
    if "source" not in agents or "final_regret" not in agents.get("model", {}):
        return ""
    m = agents["model"]["final_regret"]
    lines = [f"- model / {b}: {m / agents[b]['final_regret']:.2f}x"
             for b in agents if b != "model" and b != "oracle"
             and agents[b].get("final_regret", 0) > 0]
    return "\nRegret of the model relative to each baseline:\n\n" + "\n".join(lines) + "\n"


def reference_probs(h: History, env: Env):
    """Posterior sampling's action distribution [N, T, A] along the History's own trajectory
    (the exact one: icl_rl.bayes), or None where the env has no tractable posterior."""
    from icl_rl import bayes
    from icl_rl.envs import BernoulliBandit, DarkKeyToDoor, DarkMaze, DarkRoom, GaussianBandit

    k = env.spec.num_actions
    if isinstance(env, BernoulliBandit):
        return bayes.bandit_reference_probs(h.actions, h.rewards, k, "bernoulli")
    if isinstance(env, GaussianBandit):
        mean, std = env.prior
        return bayes.bandit_reference_probs(h.actions, h.rewards, k, "gaussian", prior_mean=mean,
                                            prior_std=std, noise_std=env.noise_std)
    if isinstance(env, DarkRoom):
        return bayes.darkroom_reference_probs(h.observations, h.actions, h.rewards, h.dones,
                                              env.size)
    if isinstance(env, DarkKeyToDoor):
        return bayes.key_to_door_reference_probs(h.observations, h.actions, h.rewards, h.dones,
                                                 env.size)
    if isinstance(env, DarkMaze):
        return bayes.maze_reference_probs(h.observations, h.actions, h.rewards, h.dones,
                                          env.size)
    return None


def policy_divergence(h: History, ctx: Context) -> dict:
    """Per step, KL(agent || posterior sampling) and the total variation between them, along
    the agent's own trajectory: the mean over steps per task (mean and 95% CI over tasks) and
    the per-step curve. For Bernoulli bandits whose horizon the exact dynamic program fits,
    the total variation to the Bayes-optimal policy too."""
    from icl_rl import bayes

    ref = reference_probs(h, ctx.env)
    if ref is None:
        return {}
    p = h.extras["action_probs"].float()
    out = {}
    for key, d in (("kl_to_ps", bayes.kl_divergence(p, ref)),
                   ("tv_to_ps", bayes.total_variation(p, ref))):
        d = d.double().numpy()  # [N, T]
        m, c = mean_ci(d.mean(axis=1)[:, None])
        curve, curve_ci = mean_ci(d)
        out.update({key: float(m[0]), f"{key}_ci95": float(c[0]), f"{key}_curve": curve.tolist(),
                    f"{key}_curve_ci95": curve_ci.tolist()})
    if ctx.source is not None:
        try:
            src = replay_probs(ctx.source, h)
        except IclRlError:  # e.g. a Bayes-optimal source planned for fewer steps
            src = None
        if src is not None:
            tv = bayes.total_variation(p, src).double().numpy().mean(axis=1)
            m, c = mean_ci(tv[:, None])
            out.update({"tv_to_source": float(m[0]), "tv_to_source_ci95": float(c[0])})
    optimal = bayes_optimal_policy(ctx.env, h.num_steps)
    if optimal is not None:
        bo = bayes.bayes_optimal_reference_probs(h.actions, h.rewards, optimal)
        m, c = mean_ci(bayes.total_variation(p, bo).double().numpy().mean(axis=1)[:, None])
        out.update({"tv_to_bayes_optimal": float(m[0]), "tv_to_bayes_optimal_ci95": float(c[0])})
    return out


def replay_probs(learner, h: History):
    """The action distribution [N, T, A] a learner would act with at every step of someone
    else's history: it is fed the recorded transitions (teacher forcing), never acts. Each
    step's next observation is `h.final_observations` where recorded; without them, an
    episode's last step is fed the next episode's start (a gridworld learner then misplaces
    where that step ended)."""
    import torch

    n, t = h.actions.shape
    learner.reset(n, torch.Generator().manual_seed(0))
    out = []
    for i in range(t):
        obs = h.observations[:, i]
        out.append(learner.action_probs(obs))
        nxt = (h.observations[:, min(i + 1, t - 1)] if h.final_observations is None
               else h.final_observations[:, i])
        learner.observe(obs, h.actions[:, i], h.rewards[:, i], nxt, h.dones[:, i])
    return torch.stack(out, dim=1).float()


def bayes_optimal_policy(env: Env, horizon: int):
    """The exact Bayes-optimal policy for a Bernoulli bandit of this horizon, or None where the
    dynamic program does not fit (`icl_rl.learners.bayes`)."""
    from icl_rl.envs import BernoulliBandit
    from icl_rl.learners.bayes import _policy

    if not isinstance(env, BernoulliBandit):
        return None
    try:
        policy, exact = _policy(env.spec.num_actions, horizon, "exact", 50_000_000)
    except IclRlError:
        return None
    return policy if exact else None


def plot_divergence(ax, results: dict) -> None:
    """KL to posterior sampling per step."""
    draw_curves(ax, results, "kl_to_ps_curve", "kl_to_ps_curve_ci95",
                window=max(1, len(next(iter(results["agents"].values())).get(
                    "kl_to_ps_curve", [0])) // 50))
    ax.set_xlabel("step")
    ax.set_ylabel("KL(agent || posterior sampling), nats")
    ax.set_title("distance from posterior sampling")


DIVERGENCE_NOTE = """
KL and TV compare, at every step of an agent's own trajectory, the distribution it drew its
action from with posterior sampling's given the same history (Bandits: P(arm is best | history),
exactly; dark gridworlds: the share of still-possible goals, keys or doors each action heads
for, a fresh draw at every step; in mazes through the walls seen so far, unseen walls open).
TV to the source is to the distribution the source learner would act with, fed the agent's own
history (a posterior sampler, which never acts there, draws afresh at every step: its TV is the
TV to posterior sampling). Agents that do not report their action distribution have no entry."""


def searches(env: Env) -> bool:
    """Episodes of several steps in which a reward is searched for (gridworlds): not bandit
    pulls, and not the two-step task, where every trial ends in a payoff draw."""
    return env.is_episodic and not getattr(env, "is_two_step", False)


def _pct(key: str, fmt: str) -> Callable[[dict, int], str]:
    """A cell showing `key` with `fmt`, empty where it is None."""
    return lambda a, k: "" if a[key] is None else format(a[key], fmt)


for _metric in (
    Metric("episode_return", episode_return, plot=plot_episode_return,
           series=(Series("episode_return_mean", "mean return per episode", "episode"),),
           summary=("episode_return_mean",)),
    Metric("first_last_k_return", first_last_k_return,
           columns=(Column("return, first {k} ep.", ("first_k_return",),
                           lambda a, k: f"{a['first_k_return']:.3f}"),
                    Column("return, last {k} ep.", ("last_k_return",),
                           lambda a, k: f"{a['last_k_return']:.3f}")),
           summary=("first_k_return", "last_k_return")),
    Metric("improvement", improvement,
           columns=(Column("in-context improvement (95% CI)", ("improvement", "improvement_ci95"),
                           lambda a, k: f"{a['improvement']:+.3f} ± {a['improvement_ci95']:.3f}"),),
           summary=("improvement", "improvement_ci95"),
           note="In-context improvement is the mean return over the last {k} episodes minus the "
                "first {k},\nper task, with its 95% confidence interval over tasks. No weights "
                "change during evaluation:\nwhatever improvement the model shows, it learns in "
                "context."),
    Metric("fraction_of_oracle", fraction_of_oracle,
           columns=(Column("last {k} / oracle", ("fraction_of_oracle_last_k",),
                           _pct("fraction_of_oracle_last_k", ".1%")),),
           summary=("fraction_of_oracle_last_k",)),
    Metric("episodes_to_80pct_oracle", episodes_to_80pct_oracle, applies=searches,
           columns=(Column("episodes to 80% of oracle", ("episodes_to_80pct_oracle",),
                           lambda a, k: _episodes(a["episodes_to_80pct_oracle"])),),
           summary=("episodes_to_80pct_oracle",)),
    Metric("search_exploit", search_exploit, applies=searches,
           columns=(Column("tasks rewarded in first {k} ep.", ("rewarded_by_episode",),
                           lambda a, k: (f"{a['rewarded_by_episode'][k - 1]:.0%}"
                                         if a["rewarded_by_episode"] else "")),
                    Column("return after first reward / oracle",
                           ("fraction_of_oracle_after_first_reward",),
                           _pct("fraction_of_oracle_after_first_reward", ".0%"))),
           summary=("rewarded_by_episode", "fraction_of_oracle_after_first_reward"),
           note=SEARCH_NOTE.lstrip("\n")),
    Metric("cumulative_regret", cumulative_regret, applies=lambda env: env.has_expected_rewards,
           columns=(Column("cumulative regret at horizon (95% CI)",
                           ("final_regret", "final_regret_ci95"),
                           lambda a, k: f"{a['final_regret']:.2f} ± "
                                        f"{a['final_regret_ci95']:.2f}"),),
           summary=("final_regret", "final_regret_ci95"),
           series=(Series("cumulative_regret_mean", "cumulative regret", "step"),),
           plot=plot_cumulative_regret, after_table=regret_ratios),
    Metric("policy_divergence", policy_divergence, needs=frozenset({"action_probs"}),
           applies=lambda env: getattr(env, "has_tractable_posterior", False),
           columns=(Column("KL to posterior sampling, nats (95% CI)", ("kl_to_ps", "kl_to_ps_ci95"),
                           lambda a, k: f"{a['kl_to_ps']:.3f} ± {a['kl_to_ps_ci95']:.3f}"),
                    Column("TV to posterior sampling", ("tv_to_ps",),
                           lambda a, k: f"{a['tv_to_ps']:.3f}"),
                    Column("TV to Bayes-optimal", ("tv_to_bayes_optimal",),
                           lambda a, k: f"{a['tv_to_bayes_optimal']:.3f}", optional=True),
                    Column("TV to the source's policy (95% CI)",
                           ("tv_to_source", "tv_to_source_ci95"),
                           lambda a, k: f"{a['tv_to_source']:.3f} ± {a['tv_to_source_ci95']:.3f}",
                           optional=True)),
           summary=("kl_to_ps", "kl_to_ps_ci95", "tv_to_ps", "tv_to_bayes_optimal",
                    "tv_to_source"),
           series=(Series("kl_to_ps_curve", "KL to posterior sampling", "step"),),
           plot=plot_divergence, note=DIVERGENCE_NOTE.lstrip("\n")),
):
    register_metric(_metric)


# --- the two-step task: planning's behavioural signature ------------------------------------

def two_step(h: History, ctx: Context) -> dict:
    """Stay probabilities and the model-based / model-free indices (eval.two_step)."""
    from eval.two_step import two_step_analysis

    return two_step_analysis(h.actions.numpy(), h.observations[..., 0].long().numpy(),
                             h.rewards.numpy())


def _estimate(key: str, fmt: str = ".2f", missing: str = "") -> Callable[[dict, int], str]:
    """A cell showing `key` with its 95% CI (`key`_ci95) where there is one, `missing` where
    the value is None."""
    def cell(a: dict, k: int) -> str:
        if a[key] is None:
            return missing
        ci = a.get(key + "_ci95")
        return format(a[key], fmt) + ("" if ci is None else f" ± {ci:.2f}")
    return cell


TWO_STEP_NOTE = """
Two-step columns: P(stay) is the probability of repeating the first-stage choice after a
rewarded (R) or unrewarded (U) trial whose transition was common (C) or rare (r), mean over
tasks. The indices are coefficients of a logistic regression of staying on reward, transition
and their product (coded +1/-1; 95% CIs with standard errors clustered by task): the reward
effect is the model-free index, the reward x transition interaction the model-based index."""

register_metric(Metric(
    "two_step", two_step, applies=lambda env: getattr(env, "is_two_step", False),
    columns=(Column("P(stay) RC / Rr / UC / Ur", STAY_KEYS,
                    lambda a, k: " / ".join("-" if a[key] is None else f"{a[key]:.2f}"
                                            for key in STAY_KEYS)),
             Column("model-free index (reward, 95% CI)", ("model_free_index",),
                    _estimate("model_free_index", "+.2f", "fit failed")),
             Column("model-based index (reward x transition, 95% CI)", ("model_based_index",),
                    _estimate("model_based_index", "+.2f", "fit failed"))),
    summary=("model_free_index", "model_free_index_ci95", "model_based_index",
             "model_based_index_ci95", *STAY_KEYS),
    note=TWO_STEP_NOTE.lstrip("\n")))


# --- mazes from new starts --------------------------------------------------------------------

def maze_paths(h: History, ctx: Context) -> dict:
    """Path optimality after the goal's discovery, from seen and never-seen starts
    (eval.mazes)."""
    from eval.mazes import path_optimality

    env = make_env(ctx.env.spec.name, **ctx.env.params())  # a fresh one: this one stays as is
    dist = env.goal_distances(h.tasks).numpy()
    cells = env.obs_to_state(h.observations.flatten(0, 1)).view(h.observations.shape[:2])
    return path_optimality(cells.numpy(), h.rewards.numpy(), dist, ctx.env.spec.episode_len)


MAZE_NOTE = """
Maze columns: after the episode in which the goal was first reached, each episode's path
optimality is the maze distance from its start to the goal over the steps taken to reach it (0
if it did not), split by whether the start cell had been visited earlier in the history (seen)
or never (unseen); mean over tasks with 95% CIs. Replaying a remembered route helps only from
seen cells."""

register_metric(Metric(
    "maze_paths", maze_paths, applies=lambda env: getattr(env, "has_random_starts", False),
    columns=(Column("path optimality, seen starts (95% CI)", ("path_optimality_seen",),
                    _estimate("path_optimality_seen")),
             Column("path optimality, never-seen starts (95% CI)", ("path_optimality_unseen",),
                    _estimate("path_optimality_unseen"))),
    summary=("path_optimality_seen", "path_optimality_seen_ci95", "path_optimality_unseen",
             "path_optimality_unseen_ci95", "tasks_goal_found"),
    note=MAZE_NOTE.lstrip("\n")))


# --- world-model heads: how fast the model learns the task's dynamics in context -------------

def world_model(h: History, ctx: Context) -> dict:
    """Next-observation accuracy and reward error of the heads' predictions, by episode
    (eval.world_model)."""
    from eval.world_model import world_model_accuracy

    return world_model_accuracy(h, ctx.env.spec.obs_levels, ctx.k)


def plot_world_model(ax, results: dict) -> None:
    """Next-observation accuracy (or reward error where no dimension has levels) by episode."""
    key = "wm_next_obs_accuracy"
    if not any(f"{key}_mean" in a for a in results["agents"].values()):
        key = "wm_reward_error"
    draw_curves(ax, results, f"{key}_mean", f"{key}_ci95")
    ax.set_xlabel("episode")
    ax.set_ylabel("world model: " + ("next-observation accuracy" if key.endswith("accuracy")
                                     else "|predicted - actual reward|"))


WORLD_MODEL_NOTE = """
World-model columns: along its own rollout, the share of steps at which the model's heads
predicted the next observation exactly (every levelled dimension; an episode's last step is
not scored) and the mean |predicted - actual reward| of the action it took, over the first and
the last {k} episodes: how fast it learns the task's dynamics in context."""


def _first_last(key: str, fmt: str) -> Callable[[dict, int], str]:
    """A cell "first k -> last k" of `key`_first_k and `key`_last_k."""
    return lambda a, k: (f"{format(a[key + '_first_k'], fmt)} → "
                         f"{format(a[key + '_last_k'], fmt)}")


register_metric(Metric(
    "world_model", world_model, needs=frozenset({"world_model"}),
    columns=(Column("world model: next obs exact, first → last {k} ep.",
                    ("wm_next_obs_accuracy_first_k",), _first_last("wm_next_obs_accuracy",
                                                                   ".1%")),
             Column("world model: reward error, first → last {k} ep.",
                    ("wm_reward_error_first_k",), _first_last("wm_reward_error", ".3f"))),
    summary=("wm_next_obs_accuracy_first_k", "wm_next_obs_accuracy_last_k",
             "wm_reward_error_first_k", "wm_reward_error_last_k"),
    series=(Series("wm_next_obs_accuracy_mean", "world model: next-observation accuracy",
                   "episode"),),
    plot=plot_world_model, note=WORLD_MODEL_NOTE.lstrip("\n")))
