"""Benchmarks: each module's `run(quick) -> dict` returns JSON-able figures measured here."""
