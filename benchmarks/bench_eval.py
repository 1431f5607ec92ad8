"""In-context evaluation speed: actions/s with the KV cache vs full recompute of the window.

`python -m benchmarks.bench_eval [--quick]` prints JSON. The cache is filled to the full window
first (chunked prefill), so every timed step attends over `context` tokens, as in a long
rollout; recompute runs the whole window through the model for every action, as the
reference codebases do.
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import best_time, emit, machine, median_time, peak_rss_mb
from icl_rl.models import ADConfig, ADModel
from icl_rl.policy import ModelAgent


def memory_bandwidth_gbs(mb: int = 512, repeats: int = 7) -> float:
    """Copy bandwidth (bytes read + written per second) in GB/s, the best of the repeats."""
    src = torch.empty(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    t = best_time(lambda: dst.copy_(src), repeats, warmup=1)
    return 2 * src.numel() * 4 / t / 1e9


def filled_agent(model: ADModel, tasks: int, context: int, use_cache: bool,
                 decode_attention: str | None = "eager") -> ModelAgent:
    """An agent whose context already holds `context` tokens of every task."""
    agent = ModelAgent(model, greedy=True, window=context, use_cache=use_cache,
                       decode_attention=decode_attention)
    agent.reset(tasks)
    tokens = torch.randn(tasks, context, model.config.token_dim)
    if use_cache:
        chunk = 64
        with torch.no_grad():
            for s in range(0, context, chunk):
                pos = torch.arange(s, min(s + chunk, context)).expand(tasks, -1)
                model(tokens[:, s:s + chunk], cache=agent.cache, use_cache=True,
                      position_ids=pos)
    else:
        agent.tokens = list(tokens.split(1, dim=1))
    agent.t = context
    return agent


def bench(model: ADModel, tasks: int, context: int, use_cache: bool, repeats: int,
          decode_attention: str | None = "eager") -> dict:
    """Median time of one action for all tasks at a full window."""
    agent = filled_agent(model, tasks, context, use_cache, decode_attention)
    obs = torch.zeros(tasks, model.config.obs_dim)
    r, d = torch.zeros(tasks), torch.zeros(tasks, dtype=torch.bool)

    def step():
        agent.observe(obs, agent.act(obs), r, obs, d)

    t = median_time(step, repeats, warmup=1)
    mode = "recompute" if not use_cache else ("kv_cache" if decode_attention == "eager"
                                              else "kv_cache_sdpa")
    res = {"context": context, "tasks": tasks, "mode": mode,
           "step_s": t, "actions_per_s": tasks / t}
    if use_cache:
        res["cache_bytes"] = agent.cache_bytes()
        res["cache_bytes_read_per_action"] = agent.cache_bytes() / tasks
    return res


def run(quick: bool = False) -> dict:
    """Cache vs recompute at contexts 256 and 1024, 256 tasks, d_model 128, 4 layers."""
    torch.manual_seed(0)
    model = ADModel(ADConfig(obs_dim=2, num_actions=5, hidden_size=128, num_layers=4,
                             num_heads=4, max_context=1024)).eval()
    bw = memory_bandwidth_gbs()
    rows = []
    for context in (256, 1024):
        cached = bench(model, 256, context, True, 5 if quick else 15)
        full = bench(model, 256, context, False, 1 if quick else 3)
        # Memory-bound ceiling: every action must read its task's whole cache once.
        cached["bandwidth_ceiling_actions_per_s"] = bw * 1e9 / cached["cache_bytes_read_per_action"]
        cached["fraction_of_bandwidth_ceiling"] = (cached["actions_per_s"]
                                                   / cached["bandwidth_ceiling_actions_per_s"])
        # the model's own SDPA attention for the same cached step (the CPU fast path's baseline)
        sdpa = bench(model, 256, context, True, 5 if quick else 15, decode_attention=None)
        rows += [cached, sdpa, full]
        rows.append({"context": context, "cache_speedup": cached["actions_per_s"]
                     / full["actions_per_s"]})
    return {"benchmark": "eval", "machine": machine(), "memory_bandwidth_gbs": bw,
            "model": {"hidden_size": 128, "num_layers": 4}, "results": rows,
            "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
