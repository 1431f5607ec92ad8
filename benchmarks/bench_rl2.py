"""RL² throughput: environment steps per second of `icl-rl rl2`, the PPO updates included.

`python -m benchmarks.bench_rl2 [--quick]` prints JSON. A 64-wide GRU on 5-arm Bernoulli
bandits (trials of 100 pulls) and on Dark Room 9x9 (trials of 10 episodes of 20 steps), at the
batch shapes of the shipped recipes (configs/rl2_bandit: 256 trials, 4 epochs x 4 minibatches)
at throughput-leaning ones (1024 trials, 2 x 2; and 1 x 8, the shape of
configs/rl2_bandit/rl2_fast.yaml). One iteration = collect a batch of trials through the acting
interface (with their log-probabilities and values), run the PPO updates; the figure is the
median over iterations after one warm-up, with the collect and update shares.

`two_processes`: `configs/rl2_bandit/rl2_fast.yaml` as shipped, run by `accelerate launch` with 2
CPU processes (1,024 trials each, gradients averaged over gloo): the median of the env steps per
second that `icl-rl rl2` logs itself, windows of 5 iterations after the first.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, peak_rss_mb
from icl_rl.config import parse_config
from icl_rl.models import build_model
from training.rl2 import (
    RL2Config,
    TaskSampler,
    collect,
    env_meta,
    generators,
    minibatches,
    ppo_loss,
    validate,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FAST_CONFIG = CONFIGS / "rl2_bandit" / "rl2_fast.yaml"
TWO_CPU_PROCESSES = CONFIGS / "accelerate" / "cpu_2proc.yaml"
_fast = parse_config(RL2Config, ["--config", str(FAST_CONFIG)])
SHAPES = {"recipe": (256, 4, 4), "throughput": (1024, 2, 2),  # trials, epochs, minibatches
          "fast": (_fast.num_envs, _fast.epochs, _fast.minibatches)}  # rl2_fast.yaml's
ENVS = {"bernoulli_bandit": ('{"num_arms": 5}', 100), "dark_room": (None, 10)}


def iteration_times(env_name: str, shape: str, iterations: int, quick: bool) -> dict:
    """Median seconds of one iteration (and its collect / update parts)."""
    kwargs, episodes = ENVS[env_name]
    n, epochs, mbs = SHAPES[shape]
    if quick:
        n, episodes = n // 16, max(2, episodes // 10)
    config = RL2Config(env=env_name, env_kwargs=kwargs, model_kwargs='{"hidden_size": 64}',
                       trial_episodes=episodes, num_envs=n, epochs=epochs, minibatches=mbs)
    env = validate(config)
    torch.manual_seed(0)
    model = build_model("gru", env_meta(env), config.model_options(),
                        max_context=episodes * env.spec.episode_len)
    sampler = TaskSampler(env, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rows = []
    for i in range(iterations + 1):
        gens = generators(0, 0, i)
        t0 = time.perf_counter()
        batch = collect(model, env, sampler, config, gens, "cpu")
        t1 = time.perf_counter()
        for _ in range(epochs):
            for mb in minibatches(batch, mbs, gens[3]):
                loss, _ = ppo_loss(model, mb, config)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
        t2 = time.perf_counter()
        if i:  # the first is a warm-up
            rows.append((t1 - t0, t2 - t1, batch["steps"]))
    collect_s = statistics.median(r[0] for r in rows)
    update_s = statistics.median(r[1] for r in rows)
    steps = rows[0][2]
    return {"env": env_name, "shape": shape, "trials": n, "steps_per_trial": steps // n,
            "epochs": epochs, "minibatches": mbs, "collect_s": collect_s, "update_s": update_s,
            "env_steps_per_s": steps / (collect_s + update_s),
            "update_share": update_s / (collect_s + update_s)}


def two_processes(quick: bool) -> dict:
    """rl2_fast.yaml under `accelerate launch`, 2 CPU processes: steps/s from its own log."""
    iterations, log_every = (2, 1) if quick else (30, 5)
    small = ["--num_envs", "64", "--trial_episodes", "10"] if quick else []
    accelerate = Path(sys.executable).with_name("accelerate")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(accelerate), "launch", "--config_file", str(TWO_CPU_PROCESSES),
               "-m", "training.rl2", "--config", str(FAST_CONFIG),
               "--out", f"{tmp}/run", "--iterations", str(iterations), "--log_every",
               str(log_every), "--save_every", "0", "--report_to", "none", "--no-progress",
               *small]
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "disabled"}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        log = Path(f"{tmp}/run/metrics.jsonl").read_text()
        rows = [json.loads(line) for line in log.splitlines()]
    rates = [row["train/env_steps_per_s"] for row in rows if "train/env_steps_per_s" in row]
    kept = rates[1:] or rates  # the first window holds the warm-up
    return {"env": _fast.env, "config": str(FAST_CONFIG.relative_to(CONFIGS.parent)),
            "processes": 2, "iterations": iterations, "window_env_steps_per_s": rates,
            "env_steps_per_s": statistics.median(kept), "wall_s": wall}


def run(quick: bool = False) -> dict:
    """Every env x shape, in this process; then the fast recipe on 2 processes."""
    iterations = 2 if quick else 5
    rows = [iteration_times(e, s, iterations, quick) for e in ENVS for s in SHAPES]
    return {"benchmark": "rl2", "machine": machine(), "results": rows,
            "two_processes": two_processes(quick), "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
