"""`python -m data_gen ...` is `icl-rl generate ...`."""

from icl_rl.cli import run

if __name__ == "__main__":
    run("generate")
