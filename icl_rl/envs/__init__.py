"""Environment families, batched over tasks, and their registry."""

from __future__ import annotations

import inspect

from icl_rl.envs.bandits import Bandit, BernoulliBandit, GaussianBandit
from icl_rl.envs.base import Env, EnvSpec
from icl_rl.envs.gridworld import DarkRoom, DarkRoomHard, GridWorld
from icl_rl.envs.key_to_door import DarkKeyToDoor
from icl_rl.envs.maze import DarkMaze
from icl_rl.envs.two_step import TwoStep
from icl_rl.errors import IclRlError

ENVS: dict[str, type[Env]] = {
    "bernoulli_bandit": BernoulliBandit,
    "gaussian_bandit": GaussianBandit,
    "dark_room": DarkRoom,
    "dark_room_hard": DarkRoomHard,
    "dark_key_to_door": DarkKeyToDoor,
    "dark_maze": DarkMaze,
    "two_step": TwoStep,
}


def env_param_names(name: str) -> list[str]:
    """The keyword arguments family `name` takes."""
    return [p for p in inspect.signature(_lookup(name).__init__).parameters if p != "self"]


def _lookup(name: str) -> type[Env]:
    if name not in ENVS:
        raise IclRlError(f"unknown env {name!r}; choose one of: {', '.join(sorted(ENVS))}")
    return ENVS[name]


def make_env(name: str, **params) -> Env:
    """Build family `name` with `params`; unknown names or parameters raise IclRlError."""
    cls = _lookup(name)
    allowed = env_param_names(name)
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise IclRlError(
            f"env {name!r} does not take {', '.join(extra)}; it takes: {', '.join(allowed)}"
        )
    try:
        return cls(**params)
    except IclRlError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a string where a number belongs
        raise IclRlError(f"env {name!r}: bad parameter value in {params}: {e}") from None


__all__ = ["ENVS", "Bandit", "Env", "EnvSpec", "BernoulliBandit", "GaussianBandit", "GridWorld",
           "DarkRoom", "DarkRoomHard", "DarkKeyToDoor", "DarkMaze", "TwoStep", "make_env",
           "env_param_names"]
