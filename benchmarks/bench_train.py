"""Training throughput: tokens/s and achieved GFLOP/s against this machine's fp32 matmul rate.

`python -m benchmarks.bench_train [--quick]` prints JSON. A training step here is what the
training loop does per batch: forward, loss, backward, clip, AdamW step.
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import emit, machine, matmul_gflops, median_time, peak_rss_mb
from icl_rl.models import FAMILIES
from icl_rl.transitions import sequences

SHAPES = {"ad": ("hidden_size", "num_layers", "num_heads"),
          "dpt": ("hidden_size", "num_layers", "num_heads"),
          "gru": ("hidden_size", "num_layers")}


def bench_model(hidden: int, layers: int, context: int, batch: int, repeats: int,
                num_actions: int = 5, obs_dim: int = 2, device: str = "cpu",
                family: str = "ad") -> dict:
    """Median training-step time for one model size of one family."""
    torch.manual_seed(0)
    config_class, model_class = FAMILIES[family]
    shape = dict(zip(SHAPES[family], (hidden, layers, 4), strict=False))
    cfg = config_class(obs_dim=obs_dim, num_actions=num_actions, max_context=context, **shape)
    model = model_class(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # a batch as the training windows deliver it: aligned raw transitions and the targets
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, num_actions, (batch, context + 1), generator=g)
    windows = sequences(torch.randint(0, 9, (batch, context, obs_dim), generator=g).float(),
                        actions[:, :-1], torch.rand(batch, context, generator=g),
                        torch.rand(batch, context, generator=g) < 0.05).to(device)
    targets = actions[:, 1:].to(device)
    extra = {}
    if model_class.needs_queries:  # DPT: a query state per window, its label at every prefix
        extra["query_observations"] = windows.observations[:, 0]
        targets = targets[:, :1].expand(-1, context)

    def step():
        loss = model(**windows.as_dict(), targets=targets, **extra).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()

    t = median_time(step, repeats, warmup=2)
    tok_s = batch * context / t
    gflops = model.flops_per_token(context) * tok_s / 1e9
    return {"family": family, "hidden_size": hidden, "num_layers": layers,
            "num_heads": getattr(cfg, "num_heads", None),
            "context": context, "batch": batch, "params": sum(p.numel() for p in
                                                              model.parameters()),
            "step_s": t, "tokens_per_s": tok_s, "gflops": gflops}


def run(quick: bool = False) -> dict:
    """AD at both default sizes, DPT and the GRU at width 128, next to the matmul ceiling
    measured in the same run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 3 if quick else 7
    before = matmul_gflops(device=device)
    rows = [bench_model(hidden, 4, 256, 16, repeats, device=device) for hidden in (128, 256)]
    rows.append(bench_model(128, 4, 256, 16, repeats, device=device, family="dpt"))
    rows.append(bench_model(128, 1, 256, 16, repeats, device=device, family="gru"))
    # the ceiling is measured around the training figures, the best of both kept: a shared
    # CPU's speed drifts within a run
    peak = max(before, matmul_gflops(device=device))
    for r in rows:
        r["fraction_of_matmul"] = r["gflops"] / peak
    return {"benchmark": "train", "machine": machine(), "matmul_gflops_fp32": peak,
            "models": rows, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
