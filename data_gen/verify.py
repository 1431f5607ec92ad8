"""`icl-rl verify DIR`: check a dataset's bytes against its card and validate every split."""

from __future__ import annotations

import json

from data_gen.config import VerifyConfig
from icl_rl.config import parse_config
from icl_rl.dataset import verify


def main(config: VerifyConfig) -> dict:
    """Verify; returns what was checked (raises IclRlError on the first problem)."""
    return verify(config.dataset)


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags, verify, print the summary."""
    argv = VerifyConfig.prepare_argv(list(argv or []))
    res = main(parse_config(VerifyConfig, argv, prog="icl-rl verify"))
    print(json.dumps({"ok": True, **res}))
    return res
