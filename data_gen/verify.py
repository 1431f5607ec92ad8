"""`icl-rl verify DIR`: check a dataset's bytes against its card and validate every split."""

from __future__ import annotations

import json
from dataclasses import dataclass

from icl_rl.config import parse_config
from icl_rl.dataset import verify


@dataclass(frozen=True)
class VerifyConfig:
    """Verify a dataset folder: file hashes against the card, then schema checks per split."""

    dataset: str = "runs/dataset"
    """Dataset folder written by `icl-rl generate`."""


def main(config: VerifyConfig) -> dict:
    """Verify; returns what was checked (raises IclRlError on the first problem)."""
    return verify(config.dataset)


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags, verify, print the summary."""
    argv = list(argv or [])
    if argv and not argv[0].startswith("-"):
        argv = ["--dataset", *argv]  # `icl-rl verify DIR`
    res = main(parse_config(VerifyConfig, argv, prog="icl-rl verify"))
    print(json.dumps({"ok": True, **res}))
    return res
