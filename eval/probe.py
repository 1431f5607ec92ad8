"""`icl-rl probe`: can the task posterior be read out of a model's hidden states?

The trained model acts in context on `num_tasks` tasks (its own trajectories). Both it and an
untrained model of the same architecture (the first control) then replay exactly those
histories, and each layer's hidden state at a sample of steps is kept: at most
`steps_per_task` steps per task, so what is held is [tasks, steps_per_task, layers, width]
whatever the horizon, and one task batch's [batch, steps, layers, width] at a time while
replaying. Linear probes (scikit-learn ridge regression, its penalty chosen by internal
cross-validation; logistic regression for yes/no targets) map a layer's state to a target
computed from the history:

- bandits (Bernoulli: Beta(1, 1) priors; Gaussian: the env's Normal prior): the posterior mean
  of every arm, the entropy of the posterior over which arm is best, the true arm means;
- the dark gridworlds, for each hidden cell (Dark Room / Hard and mazes: the goal;
  Key-to-Door: the key and the door): its posterior (probability of each cell: uniform over
  the cells the history has not ruled out, `icl_rl.bayes.hidden_cell_posteriors`), whether it
  has been found, and the true cell.

Evaluation is split by task, never by step: 5-fold cross-validation over tasks
(`GroupKFold`), every task's rows predicted by a probe that never saw that task. R^2 (or
accuracy) per layer, overall and per step bucket, with a 95% bootstrap CI over tasks. The
second control fits the same probe to labels shuffled across tasks. A probe that beats both
controls with non-overlapping CIs says the layer carries the target linearly, more than a
random network's features of the same inputs do.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from eval.config import ProbeConfig
from icl_rl.config import follows_progress, parse_config, require_positive, save_config
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text

log = logging.getLogger(__name__)


def targets_for(env, h, keep: np.ndarray, true_probs: np.ndarray | None = None
                ) -> dict[str, tuple[np.ndarray, str]]:
    """Probe targets at the kept steps [S] of histories h: name -> (values [N, S, m], kind)
    with kind "regression" or "classification" (m = 1, integer labels). `true_probs`
    [N, T, 4]: a two-step task's payoff probabilities before each step (they move, so the
    task alone does not give them)."""
    from icl_rl import bayes
    from icl_rl.envs import BernoulliBandit, GaussianBandit

    n, t = h.actions.shape
    keep_t = torch.as_tensor(keep)
    out = {}
    if isinstance(env, (BernoulliBandit, GaussianBandit)):
        k = env.spec.num_actions
        onehot = torch.nn.functional.one_hot(h.actions, k).double()  # [N, T, K]
        # statistics of the steps before t (the model's state at t has seen steps < t)
        counts = (onehot.cumsum(1) - onehot)[:, keep_t]
        sums = ((onehot * h.rewards.double()[..., None]).cumsum(1)
                - onehot * h.rewards.double()[..., None])[:, keep_t]
        if isinstance(env, BernoulliBandit):
            a, b = 1 + sums, 1 + counts - sums
            mean = a / (a + b)
            best = bayes.prob_best_beta(a.reshape(-1, k).numpy(), b.reshape(-1, k).numpy())
        else:
            m0, s0 = env.prior
            precision = 1 / s0**2 + counts / env.noise_std**2
            mean = (m0 / s0**2 + sums / env.noise_std**2) / precision
            best = bayes.prob_best_normal(mean.reshape(-1, k).numpy(),
                                          precision.rsqrt().reshape(-1, k).numpy())
        best = np.clip(best, 1e-12, 1).reshape(n, len(keep), k)
        out["posterior_mean"] = (mean.numpy(), "regression")
        out["best_arm_entropy"] = (-(best * np.log(best)).sum(-1, keepdims=True), "regression")
        out["true_means"] = (h.tasks.double()[:, None].expand(n, len(keep), k).numpy(),
                             "regression")
    elif getattr(env, "is_two_step", False):
        post = bayes.two_step_posteriors(env, h.observations, h.actions, h.rewards)
        out["reward_prob_posterior"] = (post["reward_prob_mean"][:, keep], "regression")
        if "good_state" in post:  # switch dynamics: which second-stage state pays
            out["good_state_posterior"] = (post["good_state"][:, keep, None], "regression")
        if true_probs is not None:
            out["true_reward_probs"] = (np.asarray(true_probs, dtype=np.float64)[:, keep],
                                        "regression")
    elif posteriors := bayes.hidden_cell_posteriors(env, h.tasks, h.observations, h.actions,
                                                     h.rewards, h.dones):
        for name, (posterior, true) in posteriors.items():
            # before step t (the model's state at t has seen the steps before it)
            possible = posterior.possible(keep_t).double()
            out[f"{name}_posterior"] = ((possible / possible.sum(-1, keepdim=True)).numpy(),
                                        "regression")
            out[f"{name}_found"] = (posterior.known(keep_t)[..., None].long().numpy(),
                                    "classification")
            out[f"true_{name}"] = (true.double()[:, None].expand(n, len(keep), 2).numpy(),
                                   "regression")
    else:
        raise IclRlError(f"icl-rl probe: no posterior targets for {env.spec.name}; probes "
                         "exist for bernoulli_bandit, gaussian_bandit, dark_room, "
                         "dark_room_hard, dark_key_to_door, dark_maze, two_step")
    return out


def replay_features(model, h, keep: np.ndarray, batch: int) -> np.ndarray:
    """Every layer's hidden state [N, S, L, d] of `model` at the kept steps of histories h,
    fed the recorded steps one at a time through its acting protocol (`init_state`, `step`)."""
    from icl_rl.transitions import sequences

    n, t = h.actions.shape
    keep_set = {int(s): i for i, s in enumerate(keep)}
    out = None
    with torch.no_grad():
        for s in range(0, n, batch):
            rows = slice(s, min(s + batch, n))
            x = sequences(h.observations[rows], h.actions[rows], h.rewards[rows], h.dones[rows])
            state = model.init_state(x.prev_actions.shape[0])
            for step in range(t):
                inputs = type(x)(*(v[:, step] for v in x.as_dict().values()))
                res = model.step(inputs, state, output_features=step in keep_set)
                state = res.state
                if step in keep_set:
                    f = res.features.float().numpy()
                    if out is None:
                        out = np.empty((n, len(keep), *f.shape[1:]), dtype=np.float32)
                    out[rows, keep_set[step]] = f
    return out


def _score(parts: np.ndarray, weights: np.ndarray, kind: str) -> tuple[float, float]:
    """The score of per-task parts [N, 2] (R^2: residual and total sums of squares; accuracy:
    hits and rows) and the half-width of its 95% bootstrap interval over tasks (`weights`
    [reps, N]: how often each task is drawn in each resample)."""
    def value(p):
        if kind == "regression":
            return 1 - p[..., 0] / np.where(p[..., 1] > 0, p[..., 1], np.nan)
        return p[..., 0] / p[..., 1]

    lo, hi = np.nanpercentile(value(weights @ parts), [2.5, 97.5])
    return float(value(parts.sum(0))), float((hi - lo) / 2)


def probe_scores(x: np.ndarray, y: np.ndarray, kind: str, folds: int, buckets: int,
                 seed: int, reps: int = 500) -> dict:
    """Cross-validated (by task) scores of a linear probe from x [N, S, d] to y [N, S, m]:
    R^2 (regression, pooled over outputs) or accuracy; overall and per step bucket, each with
    a 95% bootstrap CI over tasks."""
    import warnings

    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    n, s, d = x.shape
    groups = np.repeat(np.arange(n), s)
    xf = x.reshape(n * s, d)
    yf = y.reshape(n * s, -1)
    pred = np.zeros_like(yf, dtype=np.float64)
    alpha = None
    for train, test in GroupKFold(n_splits=min(folds, n)).split(xf, yf, groups):
        scaler = StandardScaler().fit(xf[train])
        a, b = scaler.transform(xf[train]), scaler.transform(xf[test])
        if kind == "regression":
            if alpha is None:  # the penalty, by generalised cross-validation on the first
                # fold's training rows (at most 4,096 of them): then one plain fit per fold
                sub = np.random.default_rng(seed).permutation(len(train))[:4096]
                alpha = RidgeCV(alphas=np.logspace(-3, 3, 7)).fit(a[sub], yf[train][sub]).alpha_
            with warnings.catch_warnings():  # near-collinear features (a layer whose units
                # move together) make the solve ill-conditioned; the held-out score says
                # what the fit is worth, so the warning adds only noise to the console
                warnings.simplefilter("ignore", LinAlgWarning)
                fit = Ridge(alpha=alpha).fit(a, yf[train])
            pred[test] = fit.predict(b).reshape(len(test), -1)
        else:
            labels = yf[train, 0]
            if len(np.unique(labels)) < 2:
                pred[test, 0] = labels[0]
            else:
                clf = LogisticRegression(max_iter=500).fit(a, labels)
                pred[test, 0] = clf.predict(b)
    pred, truth = pred.reshape(n, s, -1), y.reshape(n, s, -1).astype(np.float64)
    if kind == "regression":  # per task and step: squared residual, squared deviation
        mean = truth.reshape(-1, truth.shape[-1]).mean(0)
        rows = np.stack([((truth - pred) ** 2).sum(-1), ((truth - mean) ** 2).sum(-1)], -1)
    else:  # hits and rows
        rows = np.stack([(truth == pred).all(-1).astype(float), np.ones((n, s))], -1)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(float)
    score, ci = _score(rows.sum(1), weights, kind)
    per_bucket = [_score(rows[:, chunk].sum(1), weights, kind)
                  for chunk in np.array_split(np.arange(s), buckets)]
    return {"score": score, "ci95": ci, "buckets": [v for v, _ in per_bucket],
            "buckets_ci95": [c for _, c in per_bucket]}


@follows_progress
def main(config: ProbeConfig) -> dict:
    """Run the model, replay it and its untrained twin, fit the probes; write the outputs."""
    from icl_rl.envs import make_env
    from icl_rl.models import load_model
    from icl_rl.policy import ModelAgent
    from icl_rl.rng import TaskGenerators
    from icl_rl.rollout import History, rollout
    from icl_rl.tasks import eval_tasks, model_task_meta

    require_positive(config, "num_tasks", "steps_per_task", "batch_size", "buckets")
    if config.folds < 2:
        raise IclRlError(f"--folds must be >= 2, got {config.folds}")
    model = load_model(config.model).eval()
    mc = model.config
    env = make_env(mc.env_name, **mc.env_params)
    tasks, tasks_from = eval_tasks(env, model_task_meta(mc, config.dataset), config.num_tasks,
                                   config.seed, "test")
    if config.num_tasks < config.folds:
        raise IclRlError(f"--num-tasks {config.num_tasks}: need at least --folds tasks")
    episodes = config.episodes or (mc.max_context if env.spec.episode_len == 1 else 20)
    steps = episodes * env.spec.episode_len
    keep = np.unique(np.linspace(0, steps - 1, min(config.steps_per_task, steps)).astype(int))
    parts, moving = [], []  # moving: a two-step task's probabilities before each step
    two_step = getattr(env, "is_two_step", False)
    for s in range(0, config.num_tasks, config.batch_size):
        idx = range(s, min(s + config.batch_size, config.num_tasks))
        after = []
        parts.append(rollout(env, ModelAgent(model), tasks[idx.start:idx.stop], steps,
                             env_generator=TaskGenerators.for_tasks(config.seed, 1, idx),
                             agent_generator=TaskGenerators.for_tasks(config.seed, 2, idx),
                             on_step=(lambda _t, a=after: a.append(env.p.reshape(-1, 4)
                                                                    .clone()))
                             if two_step else None))
        if two_step:
            moving.append(torch.stack([tasks[idx.start:idx.stop], *after[:-1]], dim=1))
    h = History.cat(parts)
    torch.manual_seed(config.seed)
    untrained = type(model)(mc).eval()
    features = {"trained": replay_features(model, h, keep, config.batch_size),
                "untrained": replay_features(untrained, h, keep, config.batch_size)}
    targets = targets_for(env, h, keep, torch.cat(moving).numpy() if moving else None)
    rng = np.random.default_rng(config.seed)
    shuffle = rng.permutation(config.num_tasks)
    layers = features["trained"].shape[2]
    results = {"model": config.model, "env": {"name": mc.env_name, "params": env.params()},
               "num_tasks": config.num_tasks, "tasks_from": tasks_from, "steps": steps,
               "kept_steps": keep.tolist(), "layers": layers, "folds": config.folds,
               "memory_bytes": int(sum(f.nbytes for f in features.values())),
               "targets": {}}
    for name, (y, kind) in targets.items():
        rows = {"trained": [], "untrained": [], "shuffled": []}
        for layer in range(layers):
            for which in ("trained", "untrained"):
                x = features[which][:, :, layer]
                rows[which].append(probe_scores(x, y, kind, config.folds, config.buckets,
                                                config.seed))
            rows["shuffled"].append(probe_scores(features["trained"][:, :, layer], y[shuffle],
                                                 kind, config.folds, config.buckets,
                                                 config.seed))
        results["targets"][name] = {"kind": kind, **rows}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probe.json", json.dumps(results, indent=1))
    atomic_write_text(out / "probe.md", probe_report(results))
    plot_probes(results, out / "probe.png")
    save_config(config, out / "probe_config.json")
    return results


def best_layer(rows: list[dict]) -> int:
    """Index of the layer with the highest score."""
    scores = [r["score"] if not math.isnan(r["score"]) else -np.inf for r in rows]
    return int(np.argmax(scores))


def probe_report(results: dict) -> str:
    """probe.md: per target, the score per layer for the model and both controls."""
    lines = [f"# Belief probes\n\n- model: `{results['model']}` on `{results['env']['name']}`"
             f"\n- {results['num_tasks']} tasks ({results['tasks_from']}), {results['steps']} "
             f"steps each, {len(results['kept_steps'])} kept per task; {results['folds']}-fold "
             "cross-validation by task; 95% bootstrap CIs over tasks\n"]
    for name, t in results["targets"].items():
        metric = "R^2" if t["kind"] == "regression" else "accuracy"
        lines += [f"## {name} ({metric})\n",
                  "| layer | trained model | untrained model | shuffled labels |",
                  "|---|---|---|---|"]
        for layer in range(results["layers"]):
            cells = [f"{t[w][layer]['score']:.3f} ± {t[w][layer]['ci95']:.3f}"
                     for w in ("trained", "untrained", "shuffled")]
            lines.append(f"| {layer + 1} | " + " | ".join(cells) + " |")
        b = best_layer(t["trained"])
        r = t["trained"][b]
        buckets = ", ".join(f"{v:.3f} ± {c:.3f}" for v, c in zip(r["buckets"], r["buckets_ci95"],
                                                                  strict=True))
        lines.append(f"\nBest layer {b + 1}; by step bucket (early to late): {buckets}\n")
    return "\n".join(lines) + "\n"


def plot_probes(results: dict, path: Path) -> None:
    """probe.png: per target, the score per layer for the model and both controls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["targets"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    layers = np.arange(1, results["layers"] + 1)
    for ax, name in zip(axes[0], names, strict=True):
        t = results["targets"][name]
        for which in ("trained", "untrained", "shuffled"):
            v = np.array([r["score"] for r in t[which]])
            c = np.array([r["ci95"] for r in t[which]])
            ax.errorbar(layers, v, yerr=c, marker="o", capsize=3, label=which)
        ax.set_title(name)
        ax.set_xlabel("layer")
        ax.set_ylabel("R^2" if t["kind"] == "regression" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(ProbeConfig, argv, prog="icl-rl probe"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("probe")
