"""Start-up: `--help`, a bad flag and `import icl_rl` load no torch, transformers model stack,
datasets or matplotlib; what is deferred still loads where it is used (Auto classes, Gymnasium
ids). Run in fresh interpreters: this test process has imported everything already."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers.modeling_utils", "datasets", "matplotlib")


def run_python(code: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_every_command_answers_help_and_bad_flags_without_heavy_imports():
    code = f"""
import sys
from icl_rl.cli import COMMANDS, main
for name in COMMANDS:
    try:
        main([name, "--help"])
    except SystemExit as e:
        assert e.code == 0, (name, e.code)
    else:
        raise AssertionError(name + ": --help did not exit")
    try:
        main([name, "--no-such-flag", "1"])
    except SystemExit as e:
        assert e.code == 2, (name, e.code)
    else:
        raise AssertionError(name + ": a bad flag was accepted")
loaded = [m for m in {HEAVY!r} + ("transformers",) if m in sys.modules]
assert not loaded, loaded  # not even transformers' package: the parser is argparse's
print("checked", len(COMMANDS))
"""
    r = run_python(code)
    assert "checked 9" in r.stdout
    assert "usage: icl-rl rl2" in r.stdout and "--trial_episodes" in r.stdout
    assert "at the end). (default: 50)" in " ".join(r.stdout.split())  # docstring, default
    assert "icl-rl train: error: bad command line" in r.stderr


def test_import_icl_rl_is_light_and_deferred_parts_load_on_use(tmp_path):
    code = f"""
import sys
import icl_rl
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, loaded
import gymnasium
env = gymnasium.make("icl_rl/DarkRoom-v0")  # ids registered by `import icl_rl`
obs, _ = env.reset(seed=0)
assert obs.shape == (2,), obs.shape
from transformers import AutoConfig, AutoModel
families = icl_rl.models.FAMILIES  # first use registers the families with the Auto classes
cfg_class, model_class = families["gru"]
cfg = cfg_class(obs_dim=2, num_actions=5, hidden_size=8)
model_class(cfg).save_pretrained(r"{tmp_path}")
loaded = AutoModel.from_pretrained(r"{tmp_path}")
assert type(loaded) is model_class and isinstance(AutoConfig.from_pretrained(r"{tmp_path}"),
                                                  cfg_class)
print("ok")
"""
    assert "ok" in run_python(code).stdout
