"""icl-rl: an in-context reinforcement learning testbed."""

from icl_rl.errors import IclRlError

__version__ = "0.1.0"
__all__ = ["IclRlError", "__version__"]
