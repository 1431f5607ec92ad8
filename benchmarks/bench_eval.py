"""In-context evaluation speed: actions/s with the KV cache vs full recompute of the window.

`python -m benchmarks.bench_eval [--quick]` prints JSON. The cache is filled to the full window
first (chunked prefill), so every timed step attends over `context` tokens, as in a long
rollout; recompute runs the whole window through the model for every action, as the
reference codebases do.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks.common import best_time, emit, machine, median_time, peak_rss_mb
from icl_rl.models import ADConfig, ADModel, RecurrentConfig, RecurrentModel
from icl_rl.policy import ModelAgent


def copy_probe(mb: int = 256):
    """(one copy of `mb` MiB, the bytes it reads and writes)."""
    src = torch.empty(mb * 2**20 // 4).uniform_()
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * 4


def memory_bandwidth_gbs(mb: int = 512, repeats: int = 7) -> float:
    """Copy bandwidth (bytes read + written per second) in GB/s, the best of the repeats."""
    probe, nbytes = copy_probe(mb)
    return nbytes / best_time(probe, repeats, warmup=1) / 1e9


def filled_agent(model: ADModel, tasks: int, context: int, use_cache: bool,
                 decode_attention: str | None = "eager", window: int | None = None,
                 **options) -> ModelAgent:
    """An agent whose context (a window of `window` tokens, default `context`) already holds
    `context` tokens of every task (`options`: the agent's, e.g. lookahead)."""
    agent = ModelAgent(model, greedy=True, window=window or context, use_cache=use_cache,
                       decode_attention=decode_attention, **options)
    agent.reset(tasks)
    tokens = torch.randn(tasks, context, model.config.token_dim)
    if use_cache:
        chunk = 64
        with torch.no_grad():
            for s in range(0, context, chunk):
                pos = torch.arange(s, min(s + chunk, context)).expand(tasks, -1)
                model._decode(tokens[:, s:s + chunk], cache=agent.state.cache, use_cache=True,
                              position_ids=pos)
    else:
        agent.state.tokens = list(tokens.split(1, dim=1))
    agent.state.t = context
    return agent


def stepper(model: ADModel, tasks: int, context: int, use_cache: bool,
            decode_attention: str | None = "eager", window: int | None = None, **options):
    """(one action for every task with `context` tokens in its window, the agent)."""
    agent = filled_agent(model, tasks, context, use_cache, decode_attention, window, **options)
    obs = torch.zeros(tasks, model.config.obs_dim)
    r, d = torch.zeros(tasks), torch.zeros(tasks, dtype=torch.bool)

    def step():
        agent.observe(obs, agent.act(obs), r, obs, d)

    return step, agent


def interleaved_times(steps: list, repeats: int) -> list[list[float]]:
    """Times of each step over `repeats` rounds, timed in turn (a, b, a, b, ...) so that a
    drift of the machine's speed hits all alike."""
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, ts in zip(steps, times, strict=True):
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
    return times


def row(context: int, tasks: int, mode: str, t: float, agent: ModelAgent | None = None) -> dict:
    """One result row."""
    res = {"context": context, "tasks": tasks, "mode": mode, "step_s": t,
           "actions_per_s": tasks / t}
    if agent is not None:
        res["cache_bytes"] = agent.cache_bytes()
        res["cache_bytes_read_per_action"] = agent.cache_bytes() / tasks
    return res


def family_rows(ad: ADModel, tasks: int, history: int, repeats: int) -> list[dict]:
    """Acting with `history` steps behind it: the cached transformer (a full ring cache of
    `history` tokens) and a GRU of the same width (a constant-size state after `history` real
    steps), timed in turn."""
    torch.manual_seed(0)
    d = ad.config.hidden_size
    gru = RecurrentModel(RecurrentConfig(obs_dim=2, num_actions=5, hidden_size=d,
                                         num_layers=1)).eval()
    agent = ModelAgent(gru, greedy=True)
    agent.reset(tasks)
    obs = torch.zeros(tasks, 2)
    r, done = torch.zeros(tasks), torch.zeros(tasks, dtype=torch.bool)

    def gru_step():
        agent.observe(obs, agent.act(obs), r, obs, done)

    for _ in range(history):  # the history really passes through the state
        gru_step()
    cached, cached_agent = stepper(ad, tasks, history, True)
    t_ad, t_gru = (statistics.median(t) for t in interleaved_times([cached, gru_step], repeats))
    return [row(history, tasks, "ad_kv_cache", t_ad, cached_agent),
            {**row(history, tasks, "gru_state", t_gru), "state_bytes": sum(
                x.numel() * x.element_size() for x in (agent.state.h,)),
             "hidden_size": d, "num_layers": 1},
            {"context": history, "gru_over_cached_ad": t_ad / t_gru}]


def lookahead_rows(tasks: int, repeats: int, depths=(0, 1, 2, 4)) -> list[dict]:
    """Acting with lookahead D (`eval --lookahead`) with configs/darkroom_lookahead's model (2
    layers, d=64, world-model heads, beam 5) on Dark Room-shaped inputs, at a half-full and a
    full window of 200 tokens: actions/s per depth, timed in turn, and the cost over D = 0."""
    torch.manual_seed(0)
    model = ADModel(ADConfig(obs_dim=2, num_actions=5, obs_levels=[9, 9], hidden_size=64,
                             num_layers=2, num_heads=4, intermediate_size=128, max_context=200,
                             world_model_weight=1.0)).eval()
    rows = []
    for filled in (100, 200):
        steps = []
        for d in depths:
            step, _ = stepper(model, tasks, filled, True, window=200, lookahead=d, beam=5,
                              reward_values=(0.0, 1.0))
            steps.append(step)
        times = [statistics.median(t) for t in interleaved_times(steps, repeats)]
        for d, t in zip(depths, times, strict=True):
            rows.append({**row(filled, tasks, f"lookahead_{d}", t), "window": 200,
                         "lookahead": d, "cost_over_d0": t / times[0]})
    return rows


def run(quick: bool = False) -> dict:
    """Cache vs recompute at contexts 256 and 1024, 256 tasks, d_model 128, 4 layers, and the
    GRU against the cached transformer at 1024 steps of history (--quick, the test suite's
    smoke run: 64 tasks and fewer rounds)."""
    tasks = 64 if quick else 256
    torch.manual_seed(0)
    model = ADModel(ADConfig(obs_dim=2, num_actions=5, hidden_size=128, num_layers=4,
                             num_heads=4, max_context=1024)).eval()
    bw = memory_bandwidth_gbs()
    rows = []
    for context in (256, 1024):
        # the CPU fast path (plain matmul attention) and the model's own SDPA attention for
        # the same cached step, timed in turn
        fast, fast_agent = stepper(model, tasks, context, True)
        sdpa, sdpa_agent = stepper(model, tasks, context, True, decode_attention=None)
        # and a memory copy in the same rounds: the bandwidth ceiling of each round, because
        # this machine's bandwidth drifts (31 to 54 GB/s within one hour)
        probe, probe_bytes = copy_probe()
        ts_fast, ts_sdpa, ts_copy = interleaved_times([fast, sdpa, probe], 6 if quick else 20)
        t_fast, t_sdpa = statistics.median(ts_fast), statistics.median(ts_sdpa)
        cached = row(context, tasks, "kv_cache", t_fast, fast_agent)
        per_action = cached["cache_bytes_read_per_action"]
        # Memory-bound ceiling: every action must read its task's whole cache once.
        fractions = [(tasks / tf) / (probe_bytes / tc / per_action)
                     for tf, tc in zip(ts_fast, ts_copy, strict=True)]
        cached["bandwidth_gbs_in_turn"] = statistics.median(probe_bytes / t / 1e9
                                                            for t in ts_copy)
        cached["bandwidth_ceiling_actions_per_s"] = (cached["bandwidth_gbs_in_turn"] * 1e9
                                                     / per_action)
        cached["fraction_of_bandwidth_ceiling"] = statistics.median(fractions)
        cached["fraction_range"] = [min(fractions), max(fractions)]
        # against the best copy rate of the run's start (the stricter, drift-blind ceiling)
        cached["fraction_of_best_bandwidth"] = cached["actions_per_s"] / (bw * 1e9 / per_action)
        del probe
        del fast_agent, sdpa_agent, fast, sdpa
        recompute, _ = stepper(model, tasks, context, False)
        full = row(context, tasks, "recompute", median_time(recompute, 1 if quick else 3))
        rows += [cached, row(context, tasks, "kv_cache_sdpa", t_sdpa), full]
        rows.append({"context": context, "cache_speedup": cached["actions_per_s"]
                     / full["actions_per_s"], "fast_path_speedup": t_sdpa / t_fast})
    rows += family_rows(model, tasks, 1024, 6 if quick else 20)
    rows += lookahead_rows(tasks, 3 if quick else 10, (0, 2) if quick else (0, 1, 2, 4))
    return {"benchmark": "eval", "machine": machine(), "memory_bandwidth_gbs": bw,
            "model": {"hidden_size": 128, "num_layers": 4}, "results": rows,
            "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
