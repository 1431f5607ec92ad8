"""icl-rl: an in-context reinforcement learning testbed.

Importing the package registers every model family with the transformers Auto classes, so
`AutoModel.from_pretrained(path)` loads an icl-rl model after `import icl_rl` alone, and every
env id with Gymnasium (`gymnasium.make("icl_rl/DarkRoom-v0")`).
"""

from icl_rl.errors import IclRlError

__version__ = "0.1.0"

from icl_rl import gym, models  # noqa: E402  (registers families and env ids)

__all__ = ["IclRlError", "__version__", "gym", "models"]
