"""`python -m eval ...` is `icl-rl eval ...`."""

from icl_rl.cli import run

if __name__ == "__main__":
    run("eval")
