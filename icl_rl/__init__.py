"""icl-rl: an in-context reinforcement learning testbed.

`import icl_rl` is light (no torch or transformers): it registers every env id with Gymnasium
(`gymnasium.make("icl_rl/DarkRoom-v0")`), and `icl_rl.models` loads on first use. Importing
`icl_rl.models` registers every model family with the transformers Auto classes, so

    import icl_rl.models
    from transformers import AutoModel
    model = AutoModel.from_pretrained(path)

loads an icl-rl model (the model cards say so). Registration waits for that import because the
Auto classes pull in torch and transformers' model stack (2-3 s), which `icl-rl CMD --help`
and the data-only commands should not pay.
"""

from __future__ import annotations

import importlib

from icl_rl.errors import IclRlError

__version__ = "0.1.0"

from icl_rl import gym  # noqa: E402  (registers the Gymnasium ids; imports no torch)

__all__ = ["IclRlError", "__version__", "gym", "models"]


def __getattr__(name: str):
    """`icl_rl.models` on first access (PEP 562), registering the families then."""
    if name == "models":
        return importlib.import_module("icl_rl.models")
    raise AttributeError(f"module 'icl_rl' has no attribute {name!r}")
