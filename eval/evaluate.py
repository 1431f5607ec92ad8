"""`icl-rl eval`: roll a trained model out in context on held-out tasks, next to baselines.

Every agent (the model, its source learner, uniform random, the oracle and, for bandits, UCB1
and Thompson sampling) runs through the one rollout loop on the same tasks with the same
environment seed. Reported per agent: every registered metric that applies to the env
(`eval.metrics`: mean return per episode with 95% confidence intervals over tasks, in-context
improvement (last k vs first k episodes), the fraction of the oracle's return, search and
exploitation for episodic envs, cumulative regret where expected rewards are known).
Output: curves.png, report.md, results.json (`eval.report`), and the model card's section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eval.config import EvalConfig
from eval.metrics import Context, compute_metrics, extras_for, metrics_for
from eval.offline import check_sizes, offline
from eval.report import add_to_model_card, log_to_wandb, plot, report
from icl_rl.agents import OracleAgent
from icl_rl.config import (
    follows_progress,
    parse_config,
    parse_kwargs,
    require_positive,
    save_config,
)
from icl_rl.envs import Env, make_env
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text
from icl_rl.learners import make_learner
from icl_rl.models import load_model
from icl_rl.policy import ModelAgent
from icl_rl.rng import TaskGenerators
from icl_rl.rollout import History, rollout
from icl_rl.software import software
from icl_rl.tasks import SPLITS, eval_tasks, model_task_meta

log = logging.getLogger(__name__)
# Baselines that only bandits have; elsewhere they are left out of the default list.
BANDIT_BASELINES = ("ucb", "thompson", "greedy", "epsilon_greedy", "dirichlet_mix")
# (bayes_optimal: Bernoulli bandits, exact where the dynamic program fits, else "gittins")


def summarize(h: History, env: Env, k: int, task_oracle: np.ndarray) -> dict:
    """One agent's numbers: every registered metric that applies to `env` (eval.metrics).
    `task_oracle` [N]: the oracle's episode return on each task."""
    ctx = Context(env, task_oracle, k, episodes=int(h.dones[0].sum()))
    return compute_metrics(h, ctx, metrics_for(env))


def validate(config: EvalConfig) -> None:
    """Check the options that need no model or dataset, before anything heavy runs."""
    bad = sorted(set(config.report_to) - {"none", "wandb"})
    if bad:
        raise IclRlError(f"--report-to must be none or wandb, got {', '.join(bad)}")
    require_positive(config, "batch_size", "window", "improvement_k", optional=True)
    require_positive(config, "num_tasks", "episodes", "offline_episodes")
    check_sizes(config.offline_context)
    lookahead_depths(config)
    require_positive(config, "beam")
    if not config.lookahead_beta >= 0:
        raise IclRlError(f"--lookahead-beta must be >= 0, got {config.lookahead_beta}")
    if not config.temperature > 0:
        raise IclRlError(f"--temperature must be > 0, got {config.temperature}")
    if config.split not in SPLITS:
        raise IclRlError(f"--split must be test (held-out tasks) or train, got {config.split!r}")


def lookahead_depths(config: EvalConfig) -> list[int]:
    """--lookahead as distinct integers >= 0, or a one-line error naming the flag."""
    try:
        depths = [int(d) for d in config.lookahead]
    except ValueError:
        raise IclRlError(f"--lookahead: depths must be integers, got {config.lookahead}") from None
    if not depths or any(d < 0 for d in depths) or len(set(depths)) < len(depths):
        raise IclRlError(f"--lookahead: give distinct depths >= 0, e.g. 0,1,2,4; got "
                         f"{config.lookahead}")
    return depths


@follows_progress
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
    provenance = mc.provenance
    dataset = config.dataset or provenance.get("dataset")
    meta = model_task_meta(mc, config.dataset)
    learner = (meta or {}).get("learner") or provenance.get("learner")
    tasks, tasks_from = eval_tasks(env, meta, config.num_tasks, config.seed,
                                   config.split)
    steps = config.episodes * env.spec.episode_len
    k = config.improvement_k or max(1, config.episodes // 10)
    if not 1 <= k <= config.episodes:
        raise IclRlError(f"--improvement-k must be in [1, {config.episodes}]")

    depths = lookahead_depths(config)
    if any(depths) and model.heads is None:
        raise IclRlError(f"--lookahead {','.join(config.lookahead)}: {config.model} has no "
                         "world-model heads (config.json: world_model_weight is 0); train one "
                         "with `icl-rl train --world-model-weight 1`, or leave --lookahead 0")
    depth_of = {"model": depths[0], **{f"lookahead_{d}": d for d in depths[1:]}}
    agents = {name: ModelAgent(model, greedy=config.greedy, window=config.window,
                               temperature=config.temperature, lookahead=d, beam=config.beam,
                               beta=config.lookahead_beta, bootstrap=config.lookahead_bootstrap,
                               episode_len=env.spec.episode_len,
                               reward_values=env.reward_values)
              for name, d in depth_of.items()}
    baselines = {}  # label -> (learner name, hyperparameters) of the baselines that run
    for label, (name, params) in config.baseline_specs().items():
        if name == "oracle":
            agents["oracle"] = OracleAgent(env)
        elif name == "source":
            if learner is None:
                log.warning("no source learner recorded; skipping the `source` baseline")
                continue
            agents["source"] = make_learner(learner["name"], env, **learner["params"])
        elif name in BANDIT_BASELINES and not env.has_expected_rewards:  # bandit learners
            continue
        elif (learner is not None and (name, params) == (learner["name"], {})
              and label == name and "source" in agents):
            continue  # the source learner already runs, with its own hyperparameters
        elif name == "posterior_sampling" and env.has_expected_rewards:
            agents[label] = make_learner("thompson", env, **params)  # a bandit's
            baselines[label] = ("thompson", params)
        elif name == "bayes_optimal":
            if not env.has_expected_rewards:
                continue
            params = {"horizon": steps, **params}
            agent = make_learner(name, env, **params)
            # exact, or the approximation (shown as gittins unless the user named it)
            label = label if agent.exact or label != name else "gittins"
            agents[label] = agent
            baselines[label] = (name, params)
        else:
            agents[label] = make_learner(name, env, **params)
            baselines[label] = (name, params)

    results = {"model": str(config.model), "env": {"name": mc.env_name, "params": env.params()},
               "source_learner": learner, "num_tasks": config.num_tasks,
               "split": config.split, "tasks_from": tasks_from, "episodes": config.episodes,
               "episode_len": env.spec.episode_len, "window": agents["model"].window,
               "action_selection": "greedy" if config.greedy else "sampled",
               "temperature": None if config.greedy else config.temperature,
               "improvement_k": k, "seed": config.seed,
               "baselines": {label: {"learner": name, "params": params}
                             for label, (name, params) in baselines.items()},
               "agents": {}}
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
                                 on_step=lambda _t: bar.update(1),
                                 extras=extras_for(agent, metrics_for(env)),
                                 record_final_obs=True))  # for replaying the source
        histories[name] = History.cat(parts)
    bar.close()
    env.reset(tasks)  # the oracle's return on exactly these tasks
    task_oracle = env.optimal_episode_return().double().numpy()  # [N]
    oracle_return = float(task_oracle.mean())
    metrics = metrics_for(env)
    source = None
    if learner is not None and learner["name"] not in ("random", "dirichlet_mix"):  # learns
        source = make_learner(learner["name"], env, **learner["params"])
        source = source if callable(getattr(source, "action_probs", None)) else None
    ctx = Context(env, task_oracle, k, config.episodes, source=source)
    # a metric that reads an extra no agent recorded (world-model predictions of a model
    # without heads) has no numbers, columns or panel here
    metrics = [m for m in metrics if any(m.needs <= h.extras.keys() for h in histories.values())]
    for name, h in histories.items():
        results["agents"][name] = compute_metrics(h, ctx, metrics)
    results["oracle_episode_return"] = oracle_return
    results["metrics"] = [m.name for m in metrics]
    results["software"] = software()
    if any(depths):
        results["lookahead"] = lookahead_results(histories, depth_of, oracle_return, config)
    if config.offline_context:
        if dataset is None:
            raise IclRlError("--offline-context needs the roll-in dataset: pass --dataset")
        results["offline"] = offline(model, env, dataset, check_sizes(config.offline_context),
                                     config.num_tasks, config.offline_episodes, config.seed)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    plot(results, out / "curves.png", f"in context on {mc.env_name}, {SPLITS[config.split]} tasks")
    atomic_write_text(out / "report.md", report(results))
    save_config(config, out / "eval_config.json")
    add_to_model_card(config.model, results)
    if "wandb" in config.report_to:
        log_to_wandb(config, results, out)
    return results


def lookahead_results(histories: dict[str, History], depth_of: dict[str, int],
                      oracle_return: float, config: EvalConfig) -> dict:
    """The thinking-time curve: each lookahead depth's return and rewarded-episode share,
    with gains over the shallowest depth paired by task (eval.world_model)."""
    from eval.world_model import thinking_time

    returns, success, agent_of = {}, {}, {}
    for name, d in depth_of.items():
        ep = histories[name].episode_returns().double().numpy()  # [N, E]
        returns[d], success[d], agent_of[d] = ep.mean(axis=1), (ep > 0).mean(axis=1), name
    rows = thinking_time(returns, success, oracle_return)
    for r in rows:
        r["agent"] = agent_of[r["depth"]]
    return {"beam": config.beam, "beta": config.lookahead_beta,
            "bootstrap": config.lookahead_bootstrap, "rows": rows}


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(EvalConfig, argv, prog="icl-rl eval"))

