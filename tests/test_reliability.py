"""Faults and bad input: SIGKILLed jobs resume to the same bytes, verify catches tampering,
malformed datasets and configs end in IclRlError."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from icl_rl.dataset import verify
from icl_rl.errors import IclRlError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_when(cmd: list[str], ready, timeout: float = 300, jitter: float = 0.5) -> None:
    """Start cmd, wait until ready() holds, wait a random moment more, SIGKILL it."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ready() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, jitter))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkilled_generate_resumes_to_identical_bytes(tmp_path):
    # 20 shards of 250 histories x 1,000 steps: about 0.1 s each, killed after a random one
    args = ["--env", "dark_room", "--learner", "q_learning", "--num-histories", "5000",
            "--steps", "1000", "--shard-size", "250", "--heldout-fraction", "0.0"]
    cmd = [sys.executable, "-m", "data_gen", *args]
    subprocess.run([*cmd, "--out", str(tmp_path / "straight")], env=ENV, check=True,
                   capture_output=True)
    out = tmp_path / "killed"
    k = random.Random().randint(1, 8)
    kill_when([*cmd, "--out", str(out)], lambda: len(list(out.glob("data/*.parquet"))) >= k,
              jitter=0.05)
    assert not (out / "README.md").exists(), "the run finished before the kill; slow it down"
    done_before = len(list(out.glob("data/*.parquet")))
    r = subprocess.run([*cmd, "--out", str(out)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert digest(out) == digest(tmp_path / "straight")  # no leftover temporaries either
    assert k <= done_before < 20
    verify(out)


def test_sigkilled_training_resumes_to_identical_weights(tmp_path):
    data = generate(GenerateConfig(out=str(tmp_path / "d"), env="bernoulli_bandit",
                                   num_arms=3, learner="ucb", num_histories=200, steps=32,
                                   shard_size=200, heldout_fraction=0.1))
    args = ["--dataset", str(data), "--context", "32", "--model-kwargs",
            '{"hidden_size": 32, "num_layers": 2, "num_heads": 2}', "--batch-size", "8",
            "--max-steps", "120", "--save-every", "10", "--eval-every", "0", "--warmup-steps",
            "10", "--progress", "false"]
    cmd = [sys.executable, "-m", "training.train", *args]
    subprocess.run([*cmd, "--out", str(tmp_path / "straight")], env=ENV, check=True,
                   capture_output=True)
    out = tmp_path / "killed"
    kill_when([*cmd, "--out", str(out)],
              lambda: len(list((out / "checkpoints").glob("step_*"))) >= 1)
    assert not (out / "model").exists(), "the run finished before the kill; slow it down"
    r = subprocess.run([*cmd, "--out", str(out), "--resume-from-checkpoint", "latest"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(tmp_path / "straight/model/model.safetensors")
    b = load_file(out / "model/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return generate(GenerateConfig(out=str(tmp_path_factory.mktemp("good") / "d"),
                                   env="bernoulli_bandit", num_arms=3, learner="ucb",
                                   num_histories=20, steps=12, shard_size=20,
                                   heldout_fraction=0.25))


def test_verify_catches_tampering(good, tmp_path):
    import shutil

    assert verify(good)["histories"] == {"train": 15, "test": 5}
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    shard = next(bad.glob("data/train-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IclRlError, match="content differs"):
        verify(bad)
    shard.unlink()
    with pytest.raises(IclRlError, match="missing"):
        verify(bad)
