"""The `icl-rl` command: one subcommand per stage, each also a `python -m` module."""

from __future__ import annotations

import importlib
import logging
import sys

from icl_rl.errors import IclRlError

COMMANDS = {
    "generate": ("data_gen.generate", "roll out a source learner on many tasks -> HF dataset"),
    "verify": ("data_gen.verify", "check a dataset's bytes against its card's hashes"),
    "train": ("training.train", "train a model (ad, dpt, gru) on a dataset (accelerate)"),
    "rl2": ("training.rl2", "train an in-context learner by plain RL across tasks (RL², PPO)"),
    "eval": ("eval.evaluate", "evaluate a trained model in context on held-out tasks"),
    "probe": ("eval.probe", "linear probes for the task posterior in a model's hidden states"),
    "compare": ("eval.compare", "several evaluated models side by side: one table, one plot"),
    "sweep": ("pipeline.sweep",
              "ablation sweep: variants of generate -> train -> eval (resumable)"),
    "demo": ("pipeline.demo", "generate -> train -> evaluate on a small bandit default (minutes)"),
}


def run(command: str, argv: list[str] | None = None) -> int:
    """Run one subcommand; an IclRlError becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file
    module = importlib.import_module(COMMANDS[command][0])
    try:
        module.cli(argv)
    except IclRlError as e:
        print(f"icl-rl {command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `icl-rl` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
        print("usage: icl-rl COMMAND [--help] [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nicl-rl: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
