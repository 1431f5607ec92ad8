"""Offline deployment (the Decision-Pretrained Transformer's second setting): a fixed context.

The model is given the first n transitions of a roll-in history of a held-out task as its whole
context (`init_state(frozen_context=...)`: its own steps never enter it) and acts greedily on
that task for `episodes` episodes. Reported for several n: the mean return per episode, its
fraction of the oracle's and, where the env knows expected rewards (bandits), the
suboptimality per step, E[r* - r(a)], each with a 95% CI over tasks. A model that infers the
task from its context does better as n grows.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from eval.metrics import mean_ci
from icl_rl.envs import Env
from icl_rl.errors import IclRlError
from icl_rl.rollout import rollout

if TYPE_CHECKING:  # the model stack loads only when offline() runs (`compare` needs none)
    from icl_rl.models.base import FamilyModel


def offline(model: FamilyModel, env: Env, dataset: str, sizes: list[int], num_tasks: int,
            episodes: int, seed: int, split: str = "test") -> dict:
    """Greedy returns from fixed contexts of each size in `sizes` (roll-in transitions of
    `dataset`'s `split`, on the tasks of those histories)."""
    from icl_rl.dataset import load_histories
    from icl_rl.policy import ModelAgent
    from icl_rl.rng import TaskGenerators

    if "frozen_context" not in inspect.signature(model.init_state).parameters:
        raise IclRlError(f"--offline-context: this model ({model.config.model_type}) has no "
                         "fixed-context mode; offline deployment is the dpt family's (train one "
                         "with `icl-rl train --model dpt`) or drop --offline-context")
    data = load_histories(dataset, split)
    h = data.history
    n = min(num_tasks, h.num_histories)
    if max(sizes) > h.num_steps:
        raise IclRlError(f"--offline-context {max(sizes)}: the histories of {dataset} ({split}) "
                         f"hold {h.num_steps} steps; use sizes up to {h.num_steps}")
    tasks = h.tasks[:n]
    idx = range(n)
    env.reset(tasks)
    oracle = env.optimal_episode_return().double().numpy()  # [n]
    rows = []
    for m in sizes:
        context = (h.observations[:n, :m], h.actions[:n, :m], h.rewards[:n, :m],
                   h.dones[:n, :m])
        agent = ModelAgent(model, greedy=True, window=max(m + 1, model.config.max_context),
                           frozen_context=context)
        run = rollout(env, agent, tasks, episodes * env.spec.episode_len,
                      env_generator=TaskGenerators.for_tasks(seed, 1, idx),
                      agent_generator=TaskGenerators.for_tasks(seed, 2, idx))
        returns = run.episode_returns().double().numpy().mean(axis=1)  # [n]
        row = {"context": m}
        for key, x in (("return", returns), ("fraction_of_oracle", returns / oracle)):
            mean, ci = mean_ci(x)
            row[key], row[f"{key}_ci"] = float(mean), float(ci)
        if run.expected_rewards is not None:
            gap = oracle - run.per_episode(run.expected_rewards).double().numpy().mean(axis=1)
            mean, ci = mean_ci(gap)
            row["suboptimality"], row["suboptimality_ci"] = float(mean), float(ci)
        rows.append(row)
    return {"dataset": str(dataset), "split": split, "num_tasks": n, "episodes": episodes,
            "action_selection": "greedy", "rows": rows}


def offline_table(result: dict) -> str:
    """The markdown table of `offline`'s rows."""
    has_gap = "suboptimality" in result["rows"][0]
    head = "| context (transitions) | return per episode | fraction of oracle |"
    head += " suboptimality per step |" if has_gap else ""
    lines = [head, "|---" * (4 if has_gap else 3) + "|"]
    for r in result["rows"]:
        cells = [str(r["context"]), f"{r['return']:.3f} ± {r['return_ci']:.3f}",
                 f"{100 * r['fraction_of_oracle']:.1f}% ± "
                 f"{100 * r['fraction_of_oracle_ci']:.1f}"]
        if has_gap:
            cells.append(f"{r['suboptimality']:.3f} ± {r['suboptimality_ci']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_sizes(sizes: list[int]) -> list[int]:
    """Context sizes as positive integers, or a one-line error naming the flag."""
    try:
        out = [int(s) for s in sizes]
    except ValueError:
        raise IclRlError(f"--offline-context: sizes must be integers, got {sizes}") from None
    if any(s < 1 for s in out):
        raise IclRlError(f"--offline-context: sizes must be >= 1, got {out}")
    return out
