"""The `icl-rl` command: one subcommand per stage, each also a `python -m` module.

Start-up is kept short: a subcommand's options live in a light config module (no torch,
transformers or datasets import), so `--help` and a bad flag are answered from it before the
command's own module, and its heavy imports, load.
"""

from __future__ import annotations

import importlib
import logging
import sys

from icl_rl.errors import IclRlError

# name: (command module, its config class in the package's light `config` module, summary)
COMMANDS = {
    "generate": ("data_gen.generate", "GenerateConfig",
                 "roll out a source learner on many tasks -> HF dataset"),
    "verify": ("data_gen.verify", "VerifyConfig",
               "check a dataset's bytes against its card's hashes"),
    "train": ("training.train", "TrainConfig",
              "train a model (ad, dpt, gru) on a dataset (accelerate)"),
    "rl2": ("training.rl2", "RL2Config",
            "train an in-context learner by plain RL across tasks (RL², PPO)"),
    "eval": ("eval.evaluate", "EvalConfig",
             "evaluate a trained model in context on held-out tasks"),
    "probe": ("eval.probe", "ProbeConfig",
              "linear probes for the task posterior in a model's hidden states"),
    "compare": ("eval.compare", "CompareConfig",
                "several evaluated models side by side: one table, one plot"),
    "sweep": ("pipeline.sweep", "SweepConfig",
              "ablation sweep: variants of generate -> train -> eval (resumable)"),
    "demo": ("pipeline.demo", "DemoConfig",
             "generate -> train -> evaluate on a small bandit default (minutes)"),
}


def check_flags(command: str, argv: list[str]) -> None:
    """Answer --help, and refuse a bad flag or --config file, from the command's light config
    module (exits on --help; raises IclRlError otherwise)."""
    from icl_rl.config import parse_config

    module, name, _ = COMMANDS[command]
    package = module.rsplit(".", 1)[0]
    config_class = getattr(importlib.import_module(f"{package}.config"), name)
    args = getattr(config_class, "prepare_argv", lambda a: a)(list(argv))
    parse_config(config_class, args, prog=f"icl-rl {command}")


def run(command: str, argv: list[str] | None = None) -> int:
    """Run one subcommand; an IclRlError becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_flags(command, argv)
        module = importlib.import_module(COMMANDS[command][0])
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
        lines = [f"  {name:<{width}}  {doc}" for name, (*_, doc) in COMMANDS.items()]
        print("usage: icl-rl COMMAND [--help] [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nicl-rl: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
