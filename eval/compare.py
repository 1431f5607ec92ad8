"""`icl-rl compare`: several evaluated models in one table and one plot (families side by side).

Each input is the folder (or results.json) of an `icl-rl eval` run, optionally named
`NAME=PATH`. The output puts every run's model under its name next to the baselines of the
first run (the others' baselines are the same agents when the runs share env, tasks, seed and
episodes, which is checked): compare.md (the agents table with every metric the runs computed)
and compare.png (the same panels as each run's curves.png).
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.config import CompareConfig
from eval.report import agents_table, plot
from icl_rl.config import parse_config
from icl_rl.errors import IclRlError
from icl_rl.io import atomic_write_text

SAME = ("env", "episodes", "episode_len", "num_tasks", "seed", "split")


def read(spec: str) -> tuple[str, dict]:
    """(name, results) of one NAME=PATH or PATH."""
    name, _, path = spec.rpartition("=")
    p = Path(path)
    file = p / "results.json" if p.is_dir() else p
    if not file.exists():
        raise IclRlError(f"compare: {file} does not exist; pass an icl-rl eval output folder")
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise IclRlError(f"compare: {file} does not parse ({e})") from None
    if "model" not in results.get("agents", {}):
        raise IclRlError(f"compare: {file} has no model row; it is not an icl-rl eval result")
    return name or (p.name if p.is_dir() else p.parent.name), results


def combine(runs: list[tuple[str, dict]], baselines: list[str] | None = None) -> dict:
    """One results dict: each run's model under its name, then the first run's baselines."""
    if not runs:
        raise IclRlError("compare: give at least one evaluation (--results)")
    first = runs[0][1]
    for name, r in runs[1:]:
        diff = [k for k in SAME if r.get(k) != first.get(k)]
        if diff:
            raise IclRlError(f"compare: {name} differs from {runs[0][0]} in {', '.join(diff)}; "
                             "evaluate them on the same tasks and episodes")
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise IclRlError(f"compare: names must differ, got {names}; use NAME=PATH")
    agents = {}
    for name, r in runs:  # the model, then its lookahead variants as NAME/lookahead_D
        agents[name] = r["agents"]["model"]
        agents.update({f"{name}/{v}": r["agents"][v] for v in variants(r)})
    own = {"model", *variants(first)}  # the first run's model agents, not baselines
    for b, row in first["agents"].items():
        if b not in own and (not baselines or b in baselines) and b not in agents:
            agents[b] = row
    common = set.intersection(*(set(r.get("metrics", [])) for _, r in runs))
    combined = {**first, "agents": agents, "metrics": [m for m in first.get("metrics", [])
                                                       if m in common]}
    combined.pop("lookahead", None)  # per run; its agents are in the table
    return combined


def variants(results: dict) -> list[str]:
    """The run's own model acting with other lookahead depths (`eval --lookahead`)."""
    rows = (results.get("lookahead") or {}).get("rows", [])
    return [r["agent"] for r in rows if r["agent"] != "model"]


def main(config: CompareConfig) -> dict:
    """Write compare.md and compare.png; returns the combined results."""
    combined = combine([read(s) for s in config.results], config.baselines)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(combined, out / "compare.png", config.title)
    sources = "\n".join(f"- {s}" for s in config.results)
    atomic_write_text(out / "compare.md", f"# Comparison\n\n{sources}\n\n"
                      f"{agents_table(combined)}\n![curves](compare.png)\n")
    return combined


def cli(argv: list[str] | None = None) -> dict:
    """Parse flags and run."""
    return main(parse_config(CompareConfig, argv, prog="icl-rl compare"))


if __name__ == "__main__":
    from icl_rl.cli import run

    run("compare")
