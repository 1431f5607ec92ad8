"""The benchmark suite's quick mode runs end to end (CI smoke) and every benchmark reports."""

from __future__ import annotations

import json
import subprocess
import sys


def test_benchmark_suite_quick(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "bench_results/results.json").read_text())
    names = [b["benchmark"] for b in res["benchmarks"]]
    assert names == ["envs", "generate", "train", "eval", "streaming"]
    assert not [b for b in res["benchmarks"] if "error" in b]
    assert res["limits"]["matmul_gflops_fp32"] > 0 and res["limits"]["memory_bandwidth_gbs"] > 0
    assert "| fp32 matmul" in (tmp_path / "bench_results/results.md").read_text()
