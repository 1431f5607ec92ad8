"""Training throughput: tokens/s and achieved GFLOP/s against this machine's fp32 matmul rate,
and AD against a GPT-2 reference of the Decision-Pretrained Transformer's shape.

`python -m benchmarks.bench_train [--quick]` prints JSON. A training step here is what the
training loop does per batch: forward, loss, backward, clip, AdamW step.

The reference is what DPT's own code trains: a transformers `GPT2Model` (one head, GELU MLP of
4x the width, learned positions) under a linear embedding of each transition and a linear
action head, cross-entropy at every position. It and AD (default, with a 2x-wide SwiGLU MLP,
and that compiled, with 4 heads and with the reference's one; and compiled with a 1.5x MLP and
its 4 heads sharing one key/value head) are timed in alternating rounds at the same width,
depth, batch and context; each ratio is the median of the per-round ratios (with their range),
so the ratios come from one run on one machine state.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks.common import emit, machine, matmul_gflops, median_time, peak_rss_mb
from icl_rl.models import FAMILIES
from icl_rl.transitions import sequences

SHAPES = {"ad": ("hidden_size", "num_layers", "num_heads"),
          "dpt": ("hidden_size", "num_layers", "num_heads"),
          "gru": ("hidden_size", "num_layers")}


def synthetic_windows(batch: int, context: int, num_actions: int, obs_dim: int):
    """A batch as the training windows deliver it: aligned raw transitions [B, K] and the
    next actions as targets [B, K] (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, num_actions, (batch, context + 1), generator=g)
    windows = sequences(torch.randint(0, 9, (batch, context, obs_dim), generator=g).float(),
                        actions[:, :-1], torch.rand(batch, context, generator=g),
                        torch.rand(batch, context, generator=g) < 0.05)
    return windows, actions[:, 1:]


def bench_model(hidden: int, layers: int, context: int, batch: int, repeats: int,
                num_actions: int = 5, obs_dim: int = 2, device: str = "cpu",
                family: str = "ad", compile: bool = False) -> dict:
    """Median training-step time for one model size of one family (`compile`: through
    torch.compile, its compilation in the warm-up)."""
    torch.manual_seed(0)
    config_class, model_class = FAMILIES[family]
    shape = dict(zip(SHAPES[family], (hidden, layers, 4), strict=False))
    cfg = config_class(obs_dim=obs_dim, num_actions=num_actions, max_context=context, **shape)
    model = model_class(cfg).to(device).train()
    windows, targets = synthetic_windows(batch, context, num_actions, obs_dim)
    windows, targets = windows.to(device), targets.to(device)
    extra = {}
    if model_class.needs_queries:  # DPT: a query state per window, its label at every prefix
        extra["query_observations"] = windows.observations[:, 0]
        targets = targets[:, :1].expand(-1, context)
    forward = torch.compile(model) if compile else model
    step = train_step(model, lambda: forward(**windows.as_dict(), targets=targets,
                                             **extra).loss,
                      sync=torch.cuda.synchronize if device != "cpu" else None)
    t = median_time(step, repeats, warmup=2)
    tok_s = batch * context / t
    gflops = model.flops_per_token(context) * tok_s / 1e9
    return {"family": family + (" compiled" if compile else ""), "hidden_size": hidden,
            "num_layers": layers,
            "num_heads": getattr(cfg, "num_heads", None),
            "context": context, "batch": batch, "params": sum(p.numel() for p in
                                                              model.parameters()),
            "step_s": t, "tokens_per_s": tok_s, "gflops": gflops}


class GPT2Reference(torch.nn.Module):
    """DPT's training model: Linear(transition) -> GPT2Model -> Linear(actions)."""

    def __init__(self, token_dim: int, hidden: int, layers: int, heads: int, context: int,
                 num_actions: int) -> None:
        from transformers import GPT2Config, GPT2Model

        super().__init__()
        self.embed = torch.nn.Linear(token_dim, hidden)
        self.gpt = GPT2Model(GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads,
                                        n_positions=context, vocab_size=1, resid_pdrop=0.0,
                                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                        eos_token_id=None))
        self.head = torch.nn.Linear(hidden, num_actions)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.gpt(inputs_embeds=self.embed(tokens)).last_hidden_state  # [B, K, d]
        logits = self.head(h)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def versus_gpt2(quick: bool, hidden: int = 128, layers: int = 4, context: int = 100,
                batch: int = 64, num_actions: int = 5, obs_dim: int = 2) -> dict:
    """Transitions/s of the GPT-2 reference and of AD variants, timed in turn (medians of
    rounds), with AD's ratio to the reference."""
    torch.manual_seed(0)
    windows, targets = synthetic_windows(batch, context, num_actions, obs_dim)
    config_class, model_class = FAMILIES["ad"]
    mlp2x = {"intermediate_size": 2 * hidden}
    variants = {"ad": {}, "ad_mlp2x": mlp2x}
    if not quick:  # and with the reference's own head count (one), and 4 heads sharing one k/v
        variants |= {"ad_mlp2x_compiled": mlp2x, "ad_mlp2x_1head_compiled": mlp2x | {
            "num_heads": 1}, "ad_mlp1.5x_kv1_compiled": {"intermediate_size": 3 * hidden // 2,
                                                          "num_kv_heads": 1}}
    # every compiled variant is a new model with its own guards on the same code: room for all
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    steps, compile_s = {}, None
    for name, extra in variants.items():
        cfg = config_class(obs_dim=obs_dim, num_actions=num_actions, max_context=context,
                           hidden_size=hidden, num_layers=layers, **{"num_heads": 4} | extra)
        model = model_class(cfg).train()
        forward = torch.compile(model) if name.endswith("compiled") else model
        steps[name] = train_step(model, lambda f=forward: f(**windows.as_dict(),
                                                            targets=targets).loss)
        if name == "ad_mlp2x_compiled":
            t0 = time.perf_counter()
            steps[name]()  # the compilation, timed once
            compile_s = time.perf_counter() - t0
        elif name.endswith("compiled"):
            steps[name]()
    token_dim = model.embed.in_features
    ref = GPT2Reference(token_dim, hidden, layers, 1, context, num_actions).train()
    tokens = model.tokens(windows).detach()  # the same features, one token per transition
    steps["gpt2_reference"] = train_step(ref, lambda: ref(tokens, targets))
    rounds = {name: [] for name in steps}
    for _ in range(2 if quick else 5):  # alternating rounds: drift hits every model alike
        for name, step in steps.items():
            rounds[name].append(median_time(step, 2 if quick else 5, warmup=1))
    rate = {name: batch * context / statistics.median(ts) for name, ts in rounds.items()}
    ref = rounds.pop("gpt2_reference")
    per_round = {n: [r / t for r, t in zip(ref, ts, strict=True)] for n, ts in rounds.items()}
    return {"hidden_size": hidden, "num_layers": layers, "context": context, "batch": batch,
            "transitions_per_s": rate,
            "over_gpt2": {n: statistics.median(x) for n, x in per_round.items()},
            "over_gpt2_range": {n: [min(x), max(x)] for n, x in per_round.items()},
            "compile_s": compile_s}


def train_step(model: torch.nn.Module, loss_fn, sync=None):
    """One optimizer step as the training loop takes it (backward, clip, AdamW); `sync`
    waits for the device (CUDA) so a timing covers the work."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sync is not None:
            sync()

    return step


def run(quick: bool = False) -> dict:
    """AD at both default sizes, DPT and the GRU at width 128, next to the matmul ceiling
    measured in the same run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 3 if quick else 7
    before = matmul_gflops(device=device)
    rows = [bench_model(hidden, 4, 256, 16, repeats, device=device) for hidden in (128, 256)]
    rows.append(bench_model(128, 4, 256, 16, repeats, device=device, family="dpt"))
    rows.append(bench_model(128, 1, 256, 16, repeats, device=device, family="gru"))
    if not quick:  # the d=256 row again through torch.compile (train --compile)
        rows.append(bench_model(256, 4, 256, 16, repeats, device=device, compile=True))
    # the ceiling is measured around the training figures, the best of both kept: a shared
    # CPU's speed drifts within a run
    peak = max(before, matmul_gflops(device=device))
    for r in rows:
        r["fraction_of_matmul"] = r["gflops"] / peak
    reference = versus_gpt2(quick) if device == "cpu" else None
    return {"benchmark": "train", "machine": machine(), "matmul_gflops_fp32": peak,
            "models": rows, "versus_gpt2": reference, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
