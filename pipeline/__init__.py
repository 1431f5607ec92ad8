"""Orchestration above the three stages: `icl-rl sweep` and `icl-rl demo`.

The stages (`data_gen`, `training`, `eval`) never import one another; this package is the only
place that chains them.
"""
