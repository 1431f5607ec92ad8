"""`python -m benchmarks [--quick] [--out DIR] [--only NAME[,NAME]]` (or `make bench`): every
benchmark, one JSON, one table.

Each benchmark runs in its own process so that its peak RSS is its own. Results go to
`DIR/results.json` and `DIR/results.md` (default `bench_results/`; the table also to stdout).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODULES = ["bench_envs", "bench_generate", "bench_train", "bench_eval", "bench_streaming",
           "bench_bayes", "bench_rl2", "bench_startup"]
NAMES = [m.removeprefix("bench_") for m in MODULES]


def run_one(name: str, quick: bool) -> dict:
    """One benchmark module in a child process; its JSON plus wall time."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if quick else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return {"benchmark": name.removeprefix("bench_"), "error": r.stderr[-2000:]}
    res = json.loads(r.stdout)
    res["wall_s"] = time.perf_counter() - t0
    return res


def table(results: dict) -> str:
    """The headline figures as markdown."""
    b = {r["benchmark"]: r for r in results["benchmarks"]}
    lines = ["| figure | value |", "|---|---|",
             f"| fp32 matmul, best of 1024^3 and 2048^3 | "
             f"{results['limits']['matmul_gflops_fp32']:.0f} GFLOP/s |",
             f"| memory copy (read + write), best of 7 | "
             f"{results['limits']['memory_bandwidth_gbs']:.1f} GB/s |"]
    if "envs" in b:
        for k, v in b["envs"]["env_steps_per_s"].items():
            lines.append(f"| env steps/s, {k}, 4096 tasks | {v / 1e6:.1f} M |")
        for k, v in b["envs"]["reference_python_loop"].items():
            loop = ("numpy loop as in the reference codebases" if "numpy" in k
                    else "tightest plain-Python loop")
            pair = k.replace("_numpy_gym", "").replace("_numpy", "")
            lines.append(f"| speed-up over a per-task {loop}, {pair} | {v['speedup']:.1f}x "
                         f"(rounds {v['speedup_range'][0]:.1f}-{v['speedup_range'][1]:.1f}x) |")
    if "generate" in b:
        for g in b["generate"]["generate"]:
            lines.append(f"| generate to parquet, {g['env']}/{g['learner']} | "
                         f"{g['transitions_per_s'] / 1e6:.2f} M transitions/s |")
    if "train" in b:
        for m in b["train"]["models"]:
            lines.append(f"| training {m.get('family', 'ad')} d={m['hidden_size']} "
                         f"L={m['num_layers']} ctx "
                         f"{m['context']} | {m['tokens_per_s']:.0f} tokens/s, "
                         f"{m['fraction_of_matmul']:.0%} of matmul |")
        ref = b["train"].get("versus_gpt2")
        if ref:
            shape = (f"d={ref['hidden_size']} L={ref['num_layers']} ctx {ref['context']} "
                     f"batch {ref['batch']}")
            lines.append(f"| training, GPT-2 reference of DPT's shape, {shape} | "
                         f"{ref['transitions_per_s']['gpt2_reference']:.0f} transitions/s |")
            for name, ratio in ref["over_gpt2"].items():
                low, high = ref["over_gpt2_range"][name]
                lines.append(f"| training {name} over the GPT-2 reference, same shape, timed in "
                             f"turn | {ratio:.2f}x (rounds {low:.2f}-{high:.2f}x; "
                             f"{ref['transitions_per_s'][name]:.0f}/s) |")
    if "eval" in b:
        for r in b["eval"]["results"]:
            if r.get("mode") == "kv_cache":
                lines.append(f"| eval KV cache, ctx {r['context']}, {r['tasks']} tasks | "
                             f"{r['actions_per_s']:.0f} actions/s, "
                             f"{r['fraction_of_bandwidth_ceiling']:.0%} of the bandwidth bound "
                             f"measured in turn (rounds {r['fraction_range'][0]:.0%}-"
                             f"{r['fraction_range'][1]:.0%}; {r['fraction_of_best_bandwidth']:.0%}"
                             f" of the run's best copy rate) |")
            elif r.get("mode") == "kv_cache_sdpa":
                lines.append(f"| eval KV cache through SDPA (not the CPU fast path), ctx "
                             f"{r['context']} | {r['actions_per_s']:.0f} actions/s |")
            elif "gru_over_cached_ad" in r:
                lines.append(f"| eval GRU (constant state) vs cached AD, {r['context']} steps "
                             f"of history | {r['gru_over_cached_ad']:.1f}x actions/s |")
            elif "cache_speedup" in r:
                lines.append(f"| eval cache vs recompute, ctx {r['context']} | "
                             f"{r['cache_speedup']:.0f}x |")
            elif r.get("lookahead"):
                lines.append(f"| eval lookahead D={r['lookahead']} (beam 5), {r['context']} of "
                             f"{r['window']} tokens, {r['tasks']} tasks | "
                             f"{r['actions_per_s']:.0f} actions/s, {r['cost_over_d0']:.1f}x the "
                             "time of D=0 |")
    if "bayes" in b:
        r = b["bayes"]
        lines.append(f"| divergence + probes, {r['tasks']} tasks x {r['steps']} steps | "
                     f"{r['divergence_and_probes_s']:.0f} s ({r['probe_fits']} probe fits; "
                     f"{r['held_features_bytes'] / 2**20:.0f} MiB of hidden states held) |")
    if "rl2" in b:
        for r in b["rl2"]["results"]:
            lines.append(f"| RL² env steps/s incl. updates, {r['env']}, GRU 64, {r['trials']} "
                         f"trials, {r['epochs']}x{r['minibatches']} minibatches | "
                         f"{r['env_steps_per_s'] / 1e3:.0f} k ({r['update_share']:.0%} in "
                         "updates) |")
        r = b["rl2"].get("two_processes")
        if r:
            lines.append(f"| RL² env steps/s incl. updates, {r['config']}, 2 CPU processes "
                         f"(accelerate) | {r['env_steps_per_s'] / 1e3:.0f} k |")
    if "startup" in b:
        r = b["startup"]
        slowest = max(r["help_s"], key=r["help_s"].get)
        lines.append(f"| `icl-rl CMD --help`, slowest command ({slowest}) | "
                     f"{r['max_help_s']:.2f} s |")
        for name, t in r["to_first_work_s"].items():
            lines.append(f"| start-up before `{name}`'s own work (options parsed, modules "
                         f"imported) | {t:.2f} s |")
        for name, t in r["floors_s"].items():
            lines.append(f"| start-up floor: {name} | {t:.2f} s |")
    if "streaming" in b:
        lines.append(f"| streamed training peak RSS, 10x data / 1x | "
                     f"{b['streaming']['streamed_ratio_10x_vs_1x']:.2f} |")
    for r in results["benchmarks"]:
        if "peak_rss_mb" in r:
            lines.append(f"| peak RSS, {r['benchmark']} | {r['peak_rss_mb']:.0f} MiB |")
        if "error" in r:
            lines.append(f"| {r['benchmark']} | FAILED |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `--only` is checked against MODULES (one-line error otherwise)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks, each in its own process; write DIR/results.json and "
                    "DIR/results.md and print the table.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: a smoke run, not figures to quote")
    parser.add_argument("--out", default="bench_results", metavar="DIR",
                        help="folder for results.json and results.md (default: bench_results)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these benchmarks, of: {', '.join(NAMES)}")
    args = parser.parse_args(argv)
    if args.only is None:
        args.modules = list(MODULES)
    else:
        names = [n.strip().removeprefix("bench_") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in NAMES]
        if unknown or not names:
            parser.error(f"--only: unknown benchmark {', '.join(unknown) or repr(args.only)}; "
                         f"choose from: {', '.join(NAMES)}")
        args.modules = [m for m, n in zip(MODULES, NAMES, strict=True) if n in names]
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen benchmarks; write and print the results."""
    args = parse_args(argv)
    # torch only now: `--help` and a bad `--only` answer without it.
    from benchmarks.bench_eval import memory_bandwidth_gbs
    from benchmarks.common import machine, matmul_gflops

    results = {"machine": machine(), "quick": args.quick,
               "limits": {"matmul_gflops_fp32": matmul_gflops(),
                          "memory_bandwidth_gbs": memory_bandwidth_gbs()},
               "benchmarks": [run_one(m, args.quick) for m in args.modules]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table(results))
    print(table(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
