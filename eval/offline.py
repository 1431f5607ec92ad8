"""Offline deployment (the Decision-Pretrained Transformer's second setting): a fixed context.

The model is given the first n transitions of a roll-in history of a held-out task as its whole
context (`init_state(frozen_context=...)`: its own steps never enter it) and acts greedily on
that task for `episodes` episodes. Reported for several n: the mean return per episode, its
fraction of the oracle's and, where the env knows expected rewards (bandits), the
suboptimality per step, E[r* - r(a)], each with a 95% CI over tasks. A model that infers the
task from its context does better as n grows.

On bandits, where the posterior over the best arm is exact (`icl_rl.bayes.best_arm_posterior`),
the same histories also give the model's loss next to the Bayes floor (`bayes_floor`): its
cross-entropy against the oracle's action at every prefix, averaged as its training loss is,
and that of the exact posterior given the same pulls, which no model can beat on average.
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
    from icl_rl.rollout import History


def offline(model: FamilyModel, env: Env, dataset: str, sizes: list[int], num_tasks: int,
            episodes: int, seed: int, split: str = "test") -> dict:
    """Greedy returns from fixed contexts of each size in `sizes` (roll-in transitions of
    `dataset`'s `split`, on the tasks of those histories)."""
    from icl_rl.dataset import load_histories
    from icl_rl.envs import make_env
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
    result = {"dataset": str(dataset), "split": split, "num_tasks": n, "episodes": episodes,
              "action_selection": "greedy", "rows": rows}
    # the floor is the posterior under the prior the histories' tasks were drawn from
    made = data.meta.get("env")
    floor = bayes_floor(model, make_env(made["name"], **made["params"]) if made else env, h, n,
                        sizes)
    if floor is not None:
        result["bayes_floor"] = floor
    return result


def bayes_floor(model: FamilyModel, env: Env, h: History, n: int, sizes: list[int],
                batch_size: int = 32) -> dict | None:
    """The model's held-out loss next to the Bayes floor on the first `n` histories of `h`:
    its cross-entropy against the oracle's action at each history's query state after every
    prefix of the first `max_context` steps (position j: the first j transitions, as in
    training), and the cross-entropy of the exact posterior over the best arm given the same
    pulls. Per history, the mean over prefixes (the training loss); mean and 95% CI over
    histories of both and of their paired gap, and both at j = each of `sizes` (capped at the
    last prefix). None unless the model predicts the oracle's action at a query (dpt) and the
    env is a bandit with an exact posterior."""
    import torch

    from icl_rl.bayes import best_arm_posterior
    from icl_rl.data import WindowDataset

    if not getattr(model, "needs_queries", False) or h.optimal_actions is None:
        return None
    t = min(h.num_steps, model.config.max_context)
    h = h.head(n, t)
    posterior = best_arm_posterior(env, h.actions, h.rewards)
    if posterior is None:
        return None
    windows = WindowDataset(h, t, target="optimal_actions", queries=True)
    losses, floors = [], []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            # one window per history (context = t): all of its first t steps
            batch = windows.__getitems__(list(range(s, min(s + batch_size, n))))
            labels = batch["targets"][..., None]  # [B, t, 1]: the query's label at every prefix
            logits = model(**{k: v for k, v in batch.items() if k != "targets"}).logits
            losses.append(-torch.log_softmax(logits.float(), -1).gather(-1, labels)[..., 0])
            p = posterior[s:s + len(labels)].gather(-1, labels)[..., 0]
            floors.append(-torch.log(p.double().clamp_min(1e-300)))
    loss = torch.cat(losses).double().numpy()  # [n, t]
    floor = torch.cat(floors).numpy()
    out = {"histories": n, "steps": t}
    for key, x in (("loss", loss), ("bayes", floor), ("gap", loss - floor)):
        mean, ci = mean_ci(x.mean(axis=1))
        out[key], out[f"{key}_ci"] = float(mean), float(ci)
    out["by_prefix"] = [{"pulls": j, "loss": float(loss[:, j].mean()),
                         "bayes": float(floor[:, j].mean())}
                        for j in sorted({0, *(min(m, t - 1) for m in sizes)})]
    return out


def bayes_floor_text(floor: dict) -> str:
    """What `bayes_floor` measured, in words and a table by prefix."""
    lines = [f"Loss against the Bayes floor on the same {floor['histories']} histories (the "
             f"first {floor['steps']} steps; cross-entropy against the oracle's action, "
             f"averaged over every prefix as in training): model {floor['loss']:.3f} ± "
             f"{floor['loss_ci']:.3f}, exact posterior over the best arm {floor['bayes']:.3f} "
             f"± {floor['bayes_ci']:.3f}, gap {floor['gap']:.3f} ± {floor['gap_ci']:.3f} nats "
             "per prediction (paired by history).", "",
             "| pulls of context | model loss | Bayes floor |", "|---|---|---|"]
    lines += [f"| {r['pulls']} | {r['loss']:.3f} | {r['bayes']:.3f} |"
              for r in floor["by_prefix"]]
    return "\n".join(lines) + "\n"


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
