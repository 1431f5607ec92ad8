"""Run `accelerate launch` with 2 CPU processes (gloo) from a test, with a diagnosis if it hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CPU_2PROC = Path(__file__).resolve().parent.parent / "configs/accelerate/cpu_2proc.yaml"


def accelerate_launch(module_args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m accelerate.commands.launch --config_file configs/accelerate/cpu_2proc.yaml -m
    ARGS`, with ACCELERATE_USE_CPU=1 (which that config needs; see its comments).

    On a timeout the whole process group gets SIGABRT, so faulthandler prints every process's
    Python stack, and the test fails with that output instead of waiting for pytest's timeout.
    """
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
           "-m", *module_args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(
            f"accelerate launch hung for {timeout} s; stacks:\n{out[-20000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
