"""Config parsing for every entry point: a config dataclass's fields as flags, an optional YAML
file, flags on top.

The flags follow transformers' `HfArgumentParser` conventions (`--max-steps` or `--max_steps`;
`--flag`, `--flag true|false` and `--no-flag` for booleans; list fields take one or more
values), built with the standard library's argparse: importing transformers for its parser
cost every command about 0.5 s before its first line of work, `--help` included
(tests/test_config_parser.py checks the two parsers agree on every command's options).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import TypeVar

from icl_rl.errors import IclRlError

C = TypeVar("C")


def parse_config(cls: type[C], argv: list[str] | None = None, prog: str | None = None) -> C:
    """Parse argv into `cls`. `--config FILE.yaml` supplies defaults; flags override them.

    Every field's docstring (the string literal under it) becomes its `--help` text.
    """
    import sys

    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(cls, prog=prog)
    parser.add_argument("--config", type=str, default=None,
                        help="YAML file of option values; command-line flags override it")
    _add_field_docs(parser, cls)
    known = {f.name for f in dataclasses.fields(cls)}
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        if not path.is_file():
            raise IclRlError(f"--config {path}: no such file")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise IclRlError(f"{path}: expected a mapping of option: value")
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            hint = getattr(cls, "unknown_option_hint", lambda _names: "")(unknown)
            raise IclRlError(f"{path}: unknown option(s) {', '.join(unknown)} for "
                             f"{cls.__name__}{hint}")
        parser.set_defaults(**values)
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 0:
            raise
        raise IclRlError(f"bad command line for {prog or cls.__name__}; see --help") from None
    kwargs = {k: v for k, v in vars(ns).items() if k in known}
    return cls(**kwargs)


def read_bool(text: str | bool) -> bool:
    """A boolean flag's value: yes/no, true/false, t/f, y/n, 1/0 (any case)."""
    if isinstance(text, bool):
        return text
    if text.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if text.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"expected one of yes/no, true/false, t/f, y/n, 1/0, got {text!r}")


def build_parser(cls, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass `cls` (types int, float, str,
    bool, list[...] and X | None), defaults shown in --help."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        kind = hints[field.name]
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            if len(inner) != 1:
                raise TypeError(f"{cls.__name__}.{field.name}: only X | None unions are flags")
            kind = inner[0]
        names = [f"--{field.name}"]
        if "_" in field.name:
            names.append(f"--{field.name.replace('_', '-')}")
        kwargs: dict = {}
        if field.default is not dataclasses.MISSING:
            kwargs["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            kwargs["default"] = field.default_factory()
        elif kind is not bool:
            kwargs["required"] = True
        if kind is bool:
            # `--flag` alone means true; a bool without a default is false
            kwargs.update(type=read_bool, nargs="?", const=True)
            kwargs.setdefault("default", False)
        elif typing.get_origin(kind) is list:
            kwargs.update(type=typing.get_args(kind)[0], nargs="+")
        else:
            kwargs["type"] = kind
        parser.add_argument(*names, **kwargs)
        if kind is bool and field.default is True:
            parser.add_argument(f"--no_{field.name}", f"--no-{field.name.replace('_', '-')}",
                                action="store_false", dest=field.name, default=False)
    return parser


def follows_progress(main):
    """Decorate a command's main(config): with `config.progress` off, transformers' own bars
    (loading and writing weights) are off too for the call, so --no-progress silences the
    command."""
    import functools

    @functools.wraps(main)
    def wrapper(config, *args, **kwargs):
        if getattr(config, "progress", True):
            return main(config, *args, **kwargs)
        from transformers.utils import logging as hf_logging

        was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return main(config, *args, **kwargs)
        finally:
            if was_on:
                hf_logging.enable_progress_bar()

    return wrapper


def _add_field_docs(parser, cls) -> None:
    """Attach each field's attribute docstring as argparse help (a subclass's own docstring
    of a field wins over its base's)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:], strict=False):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                    and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
                    and isinstance(b.value.value, str)):
                docs[a.target.id] = " ".join(b.value.value.split())
    for action in parser._actions:
        name = action.dest
        if name in docs:
            # the help formatter appends the default itself
            action.help = docs[name].replace("%", "%%")  # argparse formats help


def as_list(value) -> list[str]:
    """A list option from the command line, a YAML file or code: a list, or one string of
    comma-separated names; "none" and empty names dropped only by the caller."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [x.strip() for item in items for x in str(item).split(",") if x.strip()]


def normalize_lists(config, *names: str) -> None:
    """Turn each named field of a (frozen) config into a list of names (see `as_list`)."""
    for name in names:
        object.__setattr__(config, name, as_list(getattr(config, name)))


def require_positive(config, *names: str, optional: bool = False) -> None:
    """Each named field must be a positive integer (or None where `optional`)."""
    for name in names:
        value = getattr(config, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or value < 1:
            raise IclRlError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def save_config(config, path: Path) -> None:
    """Save a config dataclass as JSON next to what it produced."""
    from icl_rl.io import atomic_write_text

    atomic_write_text(path, json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True))


def parse_kwargs(text: str | dict | None, flag: str) -> dict:
    """A JSON object given on the command line (e.g. --learner-kwargs '{"c": 2}')."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise IclRlError(f"{flag}: not valid JSON ({e.msg}); e.g. {flag} '{{\"c\": 2.0}}'") \
            from None
    if not isinstance(value, dict):
        raise IclRlError(f"{flag}: expected a JSON object, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options every training command shares: checkpoints, trackers, logging, seed,
    precision. A command's config subclasses it (and may redeclare a default)."""

    save_every: int = 500
    """Checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept; older ones are deleted."""
    resume_from_checkpoint: str | None = None
    """A checkpoint folder, `latest` (must exist) or `auto` (latest if any, else fresh)."""
    report_to: list[str] = dataclasses.field(default_factory=lambda: ["none"])
    """Trackers: none, wandb, tensorboard (several: space- or comma-separated)."""
    project: str = "icl-rl"
    """Tracker project name."""
    log_every: int = 20
    """Log training metrics every this many steps."""
    seed: int = 0
    """Seed for initialisation, data order and every random draw."""
    mixed_precision: str | None = None
    """no, fp16 or bf16 (bf16 on GPUs; it is slow on most CPUs). Default: what `accelerate
    launch --config_file` sets (configs/accelerate/gpus_1node.yaml: bf16), else no."""
    progress: bool = True
    """Show a progress bar (main process only)."""

    def __post_init__(self) -> None:
        normalize_lists(self, "report_to")

    def trackers(self) -> list[str]:
        """--report-to without `none`."""
        return [t for t in self.report_to if t != "none"]

    def check_run_options(self) -> None:
        """One-line errors for bad shared options."""
        require_positive(self, "keep_checkpoints", "log_every")
        if self.save_every < 0:
            raise IclRlError("--save-every must be >= 0")
        bad = sorted(set(self.trackers()) - {"wandb", "tensorboard"})
        if bad:
            raise IclRlError(f"--report-to: unknown tracker(s) {bad}; use none, wandb, "
                             "tensorboard")
