"""What a result was computed with: the package versions and the CPU code path.

Training runs (run_info.json), evaluations (results.json), sweep summaries and benchmarks record
it, because the same command and seed reproduce a result to the digit only with the same
numerical libraries on the same kind of processor: an RL² run amplifies a last-bit difference in
one matmul into a different policy (docs/rl2.md measures how far apart such runs land).
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("icl-rl", "torch", "transformers", "datasets", "accelerate", "numpy")


def software() -> dict:
    """Python, the versions of the packages a result depends on, and the processor; with torch
    loaded, the vector instruction set its CPU kernels use (AVX2, AVX512, ...)."""
    info = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    info["machine"] = platform.machine()
    info["processor"] = _cpu_model()
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
