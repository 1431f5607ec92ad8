"""Start-up: how long `icl-rl CMD --help` takes, and how long before a command's own work
starts (interpreter start, option parsing, the command module's imports), for every command.

Each figure is the median wall time of fresh processes (the OS file cache warm: a first run
after boot is slower). The floors measured in the same run say what no deferral removes: the
interpreter alone, `import torch`, and transformers' model stack (`from transformers import
LlamaModel`), which every command that builds or loads a model needs before its first step.

`python -m benchmarks.bench_startup [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from icl_rl.cli import COMMANDS

BIN = Path(sys.executable).parent
# Everything before the command's main() runs: its options parsed (as `icl-rl CMD` does,
# from the light config module), then the command module imported.
TO_WORK = ("import importlib, sys; from icl_rl.cli import COMMANDS, check_flags; "
           "check_flags(sys.argv[1], []); importlib.import_module(COMMANDS[sys.argv[1]][0])")
FLOORS = {"interpreter": "pass", "import icl_rl": "import icl_rl",
          "import torch": "import torch",
          "transformers model stack": "from transformers import LlamaModel"}


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of running `cmd` to completion `repeats` times (after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(quick: bool = False) -> dict:
    """Help and time-to-work per command, and the floors, in seconds."""
    repeats = 1 if quick else 5
    cli = str(BIN / "icl-rl") if (BIN / "icl-rl").exists() else None
    base = [cli] if cli else [sys.executable, "-m", "icl_rl.cli"]
    help_s = {name: wall(base + [name, "--help"], repeats) for name in COMMANDS}
    help_s["(no command)"] = wall(base + ["--help"], repeats)
    work_s = {name: wall([sys.executable, "-c", TO_WORK, name], repeats) for name in COMMANDS}
    floors = {k: wall([sys.executable, "-c", code], repeats) for k, code in FLOORS.items()}
    return {"benchmark": "startup", "repeats": repeats, "help_s": help_s,
            "to_first_work_s": work_s, "floors_s": floors,
            "max_help_s": max(help_s.values())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat instead of five")
    print(json.dumps(main(ap.parse_args().quick), indent=2))
