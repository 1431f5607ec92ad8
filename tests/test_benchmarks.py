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
    assert names == ["envs", "generate", "train", "eval", "streaming", "bayes", "rl2", "startup"]
    assert not [b for b in res["benchmarks"] if "error" in b]
    assert res["limits"]["matmul_gflops_fp32"] > 0 and res["limits"]["memory_bandwidth_gbs"] > 0
    assert "| fp32 matmul" in (tmp_path / "bench_results/results.md").read_text()


def test_help_is_fast_and_imports_no_torch(tmp_path):
    code = ("import sys, runpy; sys.argv = ['benchmarks', '--help']\n"
            "try:\n    runpy.run_module('benchmarks', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'python -m benchmarks --help imported torch'")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    for option in ("--quick", "--out", "--only"):
        assert option in r.stdout
    assert not (tmp_path / "bench_results").exists()  # --help runs nothing


def test_only_refuses_unknown_names(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "envs,nosuch"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    error = r.stderr.strip().splitlines()[-1]
    assert "nosuch" in error and "envs, generate, train, eval, streaming" in error, error
    assert not (tmp_path / "bench_results").exists()
