"""Peak memory of training with a streamed dataset as the dataset grows 10x.

`python -m benchmarks.bench_streaming [--quick]` prints JSON: peak RSS of a short training run
(separate process each) on a dataset and on one 10x larger, streamed and, for contrast, loaded.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import emit, machine
from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate


def peak_rss_of_training(dataset: Path, streaming: bool, steps: int) -> float:
    """Peak RSS (MiB) of `icl-rl train` in a child process."""
    out = Path(tempfile.mkdtemp()) / "run"
    cmd = [sys.executable, "-m", "training.train", "--dataset", str(dataset), "--out", str(out),
           "--context", "128", "--model-kwargs",
           '{"hidden_size": 64, "num_layers": 2}', "--max-steps",
           str(steps), "--eval-every", "0", "--save-every", "0", "--progress", "false",
           "--streaming", str(streaming).lower()]
    report = out.parent / "peak_rss_kb"
    # the child writes its own peak RSS when it is done
    code = ("import atexit, resource, runpy, sys; sys.argv = sys.argv[1:]; "
            f"atexit.register(lambda: open({str(report)!r}, 'w').write("
            "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); "
            "runpy.run_module('training.train', run_name='__main__')")
    subprocess.run([sys.executable, "-c", code, *cmd[2:]], check=True, capture_output=True)
    return int(report.read_text()) / 1024


def run(quick: bool = False) -> dict:
    """1x and 10x datasets; each training run is a child process that reports its peak."""
    root = Path(tempfile.mkdtemp())
    small_n = 1000 if quick else 4000
    sizes = {"1x": small_n, "10x": 10 * small_n}
    data = {k: generate(GenerateConfig(out=str(root / k), num_arms=5, learner="ucb",
                                       num_histories=n, steps=500, shard_size=1000,
                                       heldout_fraction=0.0)) for k, n in sizes.items()}
    steps = 20 if quick else 50
    res = {"benchmark": "streaming", "machine": machine(), "histories": sizes,
           "transitions": {k: n * 500 for k, n in sizes.items()}}
    res["streamed_peak_rss_mb"] = {k: peak_rss_of_training(data[k], True, steps)
                                   for k in ("1x", "10x")}
    res["streamed_ratio_10x_vs_1x"] = (res["streamed_peak_rss_mb"]["10x"]
                                       / res["streamed_peak_rss_mb"]["1x"])
    res["loaded_peak_rss_mb"] = {"10x": peak_rss_of_training(data["10x"], False, steps)}
    return res


if __name__ == "__main__":
    emit(run(quick="--quick" in sys.argv))
