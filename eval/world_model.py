"""World models in context, and what planning with them buys.

- `world_model_accuracy`: how well a model's world-model heads predict, along its own rollout
  on held-out tasks, the next observation (every levelled dimension exact) and the reward of
  the action it took, by episode: how fast it learns the task's dynamics in context. The next
  observation is not scored at an episode's last step (the history holds the next episode's
  start there, not where the step led).
- `thinking_time`: the same model acting with lookahead depths D (`eval --lookahead`), side by
  side: return, share of episodes that reach a reward, and the gain over the shallowest depth
  with 95% CIs paired by task (every agent meets the same tasks and env noise).
"""

from __future__ import annotations

import numpy as np
import torch

from eval.metrics import mean_ci
from icl_rl.rollout import History


def world_model_accuracy(h: History, obs_levels, k: int) -> dict:
    """Per-episode next-observation accuracy and reward error of `h.extras["world_model"]`
    [N, T, obs_dim + 1] (predicted o_{t+1}, then r_t), over the first and last k episodes."""
    pred = h.extras["world_model"].double()
    obs, rewards = h.observations.double(), h.rewards.double()
    obs_dim = obs.shape[-1]
    steps = h.per_episode(torch.ones_like(rewards))  # [N, E]
    reward_error = (h.per_episode((pred[..., obs_dim] - rewards).abs()) / steps).numpy()
    out = {}
    r_mean, r_ci = mean_ci(reward_error)
    out["wm_reward_error_mean"], out["wm_reward_error_ci95"] = r_mean.tolist(), r_ci.tolist()
    out["wm_reward_error_first_k"] = float(reward_error[:, :k].mean())
    out["wm_reward_error_last_k"] = float(reward_error[:, -k:].mean())
    levelled = [i for i, level in enumerate(obs_levels or []) if level]
    if not levelled:
        return out
    # scored: steps whose next observation is recorded (not an episode's last, not the last)
    scored = torch.zeros_like(h.dones)
    scored[:, :-1] = ~h.dones[:, :-1]
    right = torch.zeros_like(scored)
    right[:, :-1] = (pred[:, :-1, levelled].round() == obs[:, 1:, levelled]).all(dim=-1)
    count = h.per_episode(scored.double()).numpy()
    if count.min() > 0:  # episodes of one step score nothing: no curve
        acc = h.per_episode((right & scored).double()).numpy() / count  # [N, E]
        a_mean, a_ci = mean_ci(acc)
        out["wm_next_obs_accuracy_mean"] = a_mean.tolist()
        out["wm_next_obs_accuracy_ci95"] = a_ci.tolist()
        out["wm_next_obs_accuracy_first_k"] = float(acc[:, :k].mean())
        out["wm_next_obs_accuracy_last_k"] = float(acc[:, -k:].mean())
    return out


def thinking_time(task_returns: dict[int, np.ndarray], task_success: dict[int, np.ndarray],
                  oracle_return: float) -> list[dict]:
    """One row per lookahead depth: mean return per episode and its share of the oracle's,
    the share of episodes that reach a reward, and both gains over the shallowest depth
    (paired by task). task_returns[D], task_success[D]: [N] per-task means over episodes."""
    base = min(task_returns)
    rows = []
    for depth in sorted(task_returns):
        ret, succ = task_returns[depth], task_success[depth]
        r_mean, r_ci = mean_ci(ret[:, None])
        s_mean, s_ci = mean_ci(succ[:, None])
        g_mean, g_ci = mean_ci((ret - task_returns[base])[:, None])
        sg_mean, sg_ci = mean_ci((succ - task_success[base])[:, None])
        rows.append({"depth": depth, "return": float(r_mean[0]), "return_ci95": float(r_ci[0]),
                     "fraction_of_oracle": (float(r_mean[0]) / oracle_return
                                            if oracle_return > 0 else None),
                     "success_rate": float(s_mean[0]), "success_rate_ci95": float(s_ci[0]),
                     "gain": float(g_mean[0]), "gain_ci95": float(g_ci[0]),
                     "success_gain": float(sg_mean[0]), "success_gain_ci95": float(sg_ci[0])})
    return rows


def thinking_time_table(lookahead: dict) -> str:
    """The markdown table of `results["lookahead"]`."""
    rows = lookahead["rows"]
    base = rows[0]["depth"]
    lines = ["| lookahead D | agent | return per episode (95% CI) | / oracle | episodes "
             f"rewarded (95% CI) | return gain over D={base} | rewarded-share gain over "
             f"D={base} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        frac = "" if r["fraction_of_oracle"] is None else f"{r['fraction_of_oracle']:.1%}"
        lines.append(f"| {r['depth']} | {r['agent']} | {r['return']:.3f} ± "
                     f"{r['return_ci95']:.3f} | {frac} | {r['success_rate']:.1%} ± "
                     f"{r['success_rate_ci95']:.1%} | {r['gain']:+.3f} ± {r['gain_ci95']:.3f} | "
                     f"{r['success_gain']:+.1%} ± {r['success_gain_ci95']:.1%} |")
    return "\n".join(lines) + "\n"
