"""Timing helpers shared by the benchmarks: medians of repeats, peak RSS, machine info."""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    """What the figures were measured on: the software record every result carries (python and
    package versions, processor, torch's CPU vector ISA and threads, the GPU if any)."""
    from icl_rl.software import software

    return software()


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Shortest wall time of `fn()` over `repeats` runs: for ceilings, the best the machine does."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5,
                  device: str = "cpu") -> float:
    """The fp32 matmul ceiling of this machine in GFLOP/s: the best rate over square sizes and
    repeats (a shared or throttled CPU varies from one second to the next; a ceiling is the
    best it reached, not a typical moment)."""
    rates = []
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)

        def mm(a=a, b=b):
            a @ b
            if device != "cpu":
                torch.cuda.synchronize()

        rates.append(2 * n**3 / best_time(mm, repeats, warmup=2) / 1e9)
    return max(rates)


def emit(result: dict) -> None:
    """Print one benchmark's result as JSON."""
    print(json.dumps(result, indent=2))
