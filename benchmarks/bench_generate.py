"""Generation speed: rollout transitions/s and end-to-end `generate` (parquet written) per s,
and reading the dataset back (`load_histories`: parquet to validated tensors, as training and
eval read it) per s.

`python -m benchmarks.bench_generate [--quick]` prints JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, median_time, peak_rss_mb
from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from icl_rl.dataset import load_histories
from icl_rl.envs import make_env
from icl_rl.learners import make_learner
from icl_rl.rollout import rollout


def bench_rollout(env_name: str, learner: str, tasks: int, steps: int, repeats: int,
                  **env_kw) -> dict:
    """Transitions per second of the rollout alone (oracle labels recorded, as in generate)."""
    env = make_env(env_name, **env_kw)
    agent = make_learner(learner, env)
    task = env.sample_tasks(tasks, torch.Generator().manual_seed(0))

    def go():
        rollout(env, agent, task, steps, torch.Generator().manual_seed(1),
                torch.Generator().manual_seed(2))

    t = median_time(go, repeats)
    return {"env": env_name, "learner": learner, "tasks": tasks, "steps": steps,
            "seconds": t, "transitions_per_s": tasks * steps / t}


def bench_generate(env_name: str, learner: str, tasks: int, steps: int, repeats: int,
                   **env_kw) -> dict:
    """Transitions per second of `generate` end to end: rollout + parquet shards + card."""
    times, reads = [], []
    for r in range(repeats + 1):
        out = Path(tempfile.mkdtemp()) / "ds"
        cfg = GenerateConfig(out=str(out), env=env_name, learner=learner, num_histories=tasks,
                             steps=steps, heldout_fraction=0.0, shard_size=tasks, seed=r,
                             env_kwargs=json.dumps(env_kw))
        t0 = time.perf_counter()
        generate(cfg)
        if r:  # the first run warms up imports and caches
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            load_histories(out, "train")
            reads.append(time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
        shutil.rmtree(out.parent)
    t = sorted(times)[len(times) // 2]
    read = sorted(reads)[len(reads) // 2]
    return {"env": env_name, "learner": learner, "tasks": tasks, "steps": steps, "seconds": t,
            "transitions_per_s": tasks * steps / t, "parquet_mb": size / 2**20,
            "read_seconds": read, "read_transitions_per_s": tasks * steps / read}


def run(quick: bool = False) -> dict:
    """All generation figures."""
    tasks, steps, repeats = 4096, (200 if quick else 500), (2 if quick else 5)
    res = {"benchmark": "generate", "machine": machine(), "rollout": [], "generate": []}
    pairs = [("bernoulli_bandit", "ucb", {"num_arms": 5}),
             ("bernoulli_bandit", "thompson", {"num_arms": 5}),
             ("dark_room", "q_learning", {}), ("dark_room", "noise_distill", {})]
    for env_name, learner, kw in pairs:
        r = bench_rollout(env_name, learner, tasks, steps, repeats, **kw)
        g = bench_generate(env_name, learner, tasks, steps, repeats, **kw)
        g["vs_rollout_time"] = g["seconds"] / r["seconds"]
        res["rollout"].append(r)
        res["generate"].append(g)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
