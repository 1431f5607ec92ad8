"""How Bayesian is the learned learner, and at what cost: divergence and belief probes.

`python -m benchmarks.bench_bayes [--quick]` prints JSON. On 5-arm Bernoulli bandits, 256 tasks
x 500 pulls (--quick: 32 x 100): the exact posterior-sampling distribution along Thompson
sampling's and a model's own trajectories and the KL / TV to it (`policy_divergence`), then
the probes of `icl-rl probe`: a 3-layer, 64-wide AD model and its untrained twin replay the
model's histories (hidden states kept at 64 steps per task), and ridge probes for every
target, layer and control are cross-validated by task. Each phase is timed once (wall
seconds); the held hidden states are reported in bytes.

Then, on each dark gridworld (Dark Room, Dark Room Hard, Key-to-Door, a 7x7 maze; same task
and step counts), the posterior-sampling reference along the trajectories of posterior
sampling itself, the oracle and a uniformly random agent: the time to compute it for one
agent, each agent's KL to it per step and its return per step. The reference is the posterior
predictive of the oracle's move (a fresh goal draw at every step); the posterior-sampling agent
keeps its drawn target, so it is not at 0 from it, but far closer than random.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from benchmarks.common import emit, machine, peak_rss_mb
from eval.metrics import Context, policy_divergence
from eval.probe import probe_scores, replay_features, targets_for
from icl_rl.envs import make_env
from icl_rl.learners import make_learner
from icl_rl.models import build_model
from icl_rl.policy import ModelAgent
from icl_rl.rollout import rollout


def run(quick: bool = False) -> dict:
    """Time divergence and probes at 256 tasks x 500 steps (32 x 100 with --quick)."""
    tasks_n, steps = (32, 100) if quick else (256, 500)
    env = make_env("bernoulli_bandit", num_arms=5)
    tasks = env.sample_tasks(tasks_n, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    meta = {"name": "bernoulli_bandit", "params": {"num_arms": 5},
            "spec": {"obs_dim": 1, "num_actions": 5}}
    model = build_model("ad", meta, {"hidden_size": 64, "num_layers": 3, "num_heads": 4},
                        max_context=steps).eval()
    times = {}
    t0 = time.perf_counter()
    h_ts = rollout(env, make_learner("thompson", env), tasks, steps, extras=("action_probs",),
                   env_generator=torch.Generator().manual_seed(1),
                   agent_generator=torch.Generator().manual_seed(2))
    times["thompson_rollout_with_action_probs_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    h_model = rollout(env, ModelAgent(model), tasks, steps, extras=("action_probs",),
                      env_generator=torch.Generator().manual_seed(1),
                      agent_generator=torch.Generator().manual_seed(2))
    times["model_rollout_with_action_probs_s"] = time.perf_counter() - t0
    ctx = Context(env, np.ones(tasks_n), 10, steps)
    t0 = time.perf_counter()
    div_ts = policy_divergence(h_ts, ctx)
    div_model = policy_divergence(h_model, ctx)
    times["divergence_two_agents_s"] = time.perf_counter() - t0
    keep = np.unique(np.linspace(0, steps - 1, 64).astype(int))
    t0 = time.perf_counter()
    untrained = type(model)(model.config).eval()
    feats = [replay_features(m, h_model, keep, tasks_n) for m in (model, untrained)]
    times["replay_features_two_models_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    targets = targets_for(env, h_model, keep)
    shuffle = np.random.default_rng(0).permutation(tasks_n)
    fits = 0
    for y, kind in targets.values():
        for layer in range(feats[0].shape[2]):
            for x, labels in ((feats[0], y), (feats[1], y), (feats[0], y[shuffle])):
                probe_scores(x[:, :, layer], labels, kind, 5, 4, 0)
                fits += 1
    times["probes_s"] = time.perf_counter() - t0
    total = (times["divergence_two_agents_s"] + times["replay_features_two_models_s"]
             + times["probes_s"])
    return {"benchmark": "bayes", "machine": machine(), "tasks": tasks_n, "steps": steps,
            "times": times, "divergence_and_probes_s": total, "probe_fits": fits,
            "held_features_bytes": int(sum(f.nbytes for f in feats)),
            "thompson_kl_to_ps": div_ts["kl_to_ps"], "model_kl_to_ps": div_model["kl_to_ps"],
            "gridworlds": gridworlds(tasks_n, steps), "peak_rss_mb": peak_rss_mb()}


def gridworlds(tasks_n: int, steps: int) -> dict:
    """Per dark gridworld: the reference's time for one agent and every agent's KL to it."""
    from eval.metrics import reference_probs
    from icl_rl.agents import OracleAgent
    from icl_rl.bayes import kl_divergence

    out = {}
    for name in ("dark_room", "dark_room_hard", "dark_key_to_door", "dark_maze"):
        env = make_env(name)
        tasks = env.sample_tasks(tasks_n, torch.Generator().manual_seed(0))
        row = {}
        for agent_name in ("posterior_sampling", "oracle", "random"):
            agent = OracleAgent(env) if agent_name == "oracle" else make_learner(agent_name, env)
            h = rollout(env, agent, tasks, steps, extras=("action_probs",),
                        env_generator=torch.Generator().manual_seed(1),
                        agent_generator=torch.Generator().manual_seed(2))
            t0 = time.perf_counter()
            ref = reference_probs(h, env)
            if agent_name == "posterior_sampling":
                row["reference_s"] = time.perf_counter() - t0
            kl = kl_divergence(h.extras["action_probs"], ref)
            row[f"{agent_name}_kl_to_ps"] = float(kl.mean())
            row[f"{agent_name}_return_per_step"] = float(h.rewards.mean())
        out[name] = row
    return out


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
