"""The command-line parser built from a config dataclass agrees with transformers'
HfArgumentParser, whose conventions the commands have always followed, on every command's
options and on how each kind of flag is read."""

from __future__ import annotations

import dataclasses
import importlib
import typing

import pytest
from transformers import HfArgumentParser

from icl_rl.cli import COMMANDS
from icl_rl.config import build_parser, parse_config
from icl_rl.errors import IclRlError

CONFIGS = {name: getattr(importlib.import_module(module.rsplit(".", 1)[0] + ".config"), cls)
           for name, (module, cls, _) in COMMANDS.items()}
BOOL_TEXTS = ["yes", "True", "t", "Y", "1", "no", "FALSE", "f", "n", "0"]


def described(parser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, a.nargs, a.const, a.default, a.required,
             a.choices, type(a).__name__) for a in parser._actions]


def sample_value(kind) -> list[str]:
    """A command-line value of the field's type."""
    kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if kind is bool:
        return ["false"]
    if typing.get_origin(kind) is list:
        return ["a,b", "c"]
    return {int: ["7"], float: ["0.25"], str: ["text"]}[kind]


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_same_options_defaults_and_values_as_hf_argument_parser(command):
    cls = CONFIGS[command]
    ours, theirs = build_parser(cls), HfArgumentParser(cls)
    assert described(ours) == described(theirs)
    for a, b in zip(ours._actions, theirs._actions, strict=True):
        if getattr(b.type, "__name__", "") == "string_to_bool":
            assert [a.type(t) for t in BOOL_TEXTS] == [b.type(t) for t in BOOL_TEXTS]
        else:
            assert a.type is b.type, a.dest
    hints = typing.get_type_hints(cls)
    required = [f"--{f.name}" for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    base = [x for flag in required for x in (flag, *sample_value(hints[flag[2:]]))]
    argvs = [base]
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        argvs.append([*base, flag, *sample_value(hints[f.name])])
        if hints[f.name] is bool:
            argvs += [[*base, flag], [*base, f"--{f.name}", "yes"]]
            if f.default is True:
                argvs.append([*base, f"--no-{f.name.replace('_', '-')}"])
    for argv in argvs:
        assert vars(ours.parse_args(argv)) == vars(theirs.parse_args(argv)), argv


def test_flag_kinds_read_as_documented(tmp_path):
    @dataclasses.dataclass
    class Options:
        steps: int = 3
        rate: float | None = None
        name: str = "x"
        fast: bool = False
        progress: bool = True
        labels: list[str] = dataclasses.field(default_factory=list)

    opts = parse_config(Options, ["--rate", "0.5", "--fast", "--no-progress", "--labels", "a", "b"])
    assert opts == Options(3, 0.5, "x", True, False, ["a", "b"])
    assert parse_config(Options, ["--fast", "no", "--progress", "1"]).fast is False
    (tmp_path / "c.yaml").write_text("steps: 9\nfast: true\n")
    opts = parse_config(Options, ["--config", str(tmp_path / "c.yaml"), "--steps", "4"])
    assert (opts.steps, opts.fast) == (4, True)  # flags over the file over the defaults
    for bad in (["--steps", "many"], ["--fast", "maybe"], ["--labels"]):
        with pytest.raises(SystemExit) as e:  # argparse's usage line names the flag
            parse_config(Options, bad)
        assert e.value.code == 2
    with pytest.raises(IclRlError, match="bad command line"):
        parse_config(Options, ["--unknown", "1"])
    help_text = build_parser(Options, prog="p").format_help()
    assert "--no-progress" in help_text and "--labels LABELS [LABELS ...]" in help_text
