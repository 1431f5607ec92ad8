"""Gymnasium front-ends: one task instance as a `gymnasium.Env`, many as a vector env, and an
adapter that lets a trained model act in them.

A Gymnasium episode is one episode of the task (100 pulls for bandits, whose own episodes are
one pull; `episodes_per_reset` changes it); `reset()` starts over on the *same* task (a learning
history is many episodes of one task), `reset(options={"new_task": True})` draws a new one.
Episodes end by a fixed horizon, so they are `truncated`, never `terminated`.

Importing this module registers every id with Gymnasium under the namespace `icl_rl`, so
`gymnasium.make("icl_rl/DarkRoom-v0")` and `gymnasium.make_vec("icl_rl/DarkRoom-v0",
num_envs=4)` work as for any env package. Gymnasium >= 1.0 no longer loads plugins by entry
point, so something must import this module first: `import icl_rl` (which does), or
Gymnasium's own form `gymnasium.make("icl_rl.gym:icl_rl/DarkRoom-v0")`, which imports it for
you.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

from icl_rl.errors import IclRlError

# torch and the env families are imported where used: registering the ids on `import icl_rl`
# costs only Gymnasium's import.

ENV_IDS = {
    "BernoulliBandit-v0": "bernoulli_bandit",
    "GaussianBandit-v0": "gaussian_bandit",
    "DarkRoom-v0": "dark_room",
    "DarkRoomHard-v0": "dark_room_hard",
    "DarkKeyToDoor-v0": "dark_key_to_door",
    "DarkMaze-v0": "dark_maze",
    "TwoStep-v0": "two_step",
}
NAMESPACE = "icl_rl"  # Gymnasium ids are f"{NAMESPACE}/{env_id}"


class TaskEnv(gymnasium.Env):
    """One task of an icl-rl family as a standard Gymnasium environment."""

    metadata = {"render_modes": []}

    def __init__(self, family: str, task=None, episodes_per_reset: int | None = None,
                 **params) -> None:
        import torch

        from icl_rl.envs import Bandit, make_env

        self.env = make_env(family, **params)
        spec = self.env.spec
        bandit = isinstance(self.env, Bandit)
        # A bandit episode is one pull; a Gymnasium episode of 100 pulls is more useful.
        self.horizon = spec.episode_len * (episodes_per_reset or (100 if bandit else 1))
        if spec.obs_levels:
            high = np.array([max(level - 1, 1) for level in spec.obs_levels], dtype=np.float32)
            self.observation_space = spaces.Box(0.0, high, (spec.obs_dim,), np.float32)
        else:  # bandits: a constant observation
            self.observation_space = spaces.Box(0.0, 1.0, (spec.obs_dim,), np.float32)
        self.action_space = spaces.Discrete(spec.num_actions)
        self.task = None if task is None else torch.as_tensor(task, dtype=torch.float32)
        if self.task is not None and self.task.shape != (spec.task_dim,):
            raise IclRlError(f"{family}: task must have {spec.task_dim} values, got "
                             f"{tuple(self.task.shape)}")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode of the same task (a new task on the first reset or if asked)."""
        import torch

        super().reset(seed=seed)
        g = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        if self.task is None or (options or {}).get("new_task"):
            self.task = self.env.sample_tasks(1, g)[0]
        obs = self.env.reset(self.task[None], g)
        self.t = 0
        return obs[0].numpy().astype(np.float32), {"task": self.task.numpy().copy()}

    def step(self, action):
        """One step; truncated after `episodes_per_reset` of the family's episodes."""
        import torch

        obs, reward, done = self.env.step(torch.as_tensor([int(action)]))
        self.t += 1
        truncated = self.t >= self.horizon
        final = self.env.final_obs if truncated else obs
        return (final[0].numpy().astype(np.float32), float(reward[0]), False, truncated,
                {"optimal_action": int(self.env.optimal_action()[0])} if not truncated else {})


def make(env_id: str, task=None, **params) -> TaskEnv:
    """`icl_rl.gym.make("DarkRoom-v0", task=[2, 7])`: one task instance."""
    if env_id not in ENV_IDS:
        raise IclRlError(f"unknown env id {env_id!r}; choose one of: {', '.join(ENV_IDS)}")
    return TaskEnv(ENV_IDS[env_id], task=task, **params)


def make_vec(env_id: str, tasks=None, num_envs: int | None = None, **params):
    """A synchronous vector env over `tasks` (or `num_envs` sampled tasks)."""
    if tasks is None:
        if not num_envs or num_envs < 1:
            raise IclRlError("give tasks or a positive num_envs")
        tasks = [None] * num_envs
    return gymnasium.vector.SyncVectorEnv([lambda t=t: make(env_id, task=t, **params)
                                           for t in tasks])


def register_envs() -> None:
    """Register every id with Gymnasium as `icl_rl/<Id>` (done on import; idempotent)."""
    for env_id, family in ENV_IDS.items():
        if f"{NAMESPACE}/{env_id}" not in gymnasium.registry:
            gymnasium.register(f"{NAMESPACE}/{env_id}", entry_point="icl_rl.gym:TaskEnv",
                               kwargs={"family": family})


register_envs()


class ModelAdapter:
    """Lets a trained model act in Gymnasium envs: act on observations, then observe rewards.

    Works for one env (obs [obs_dim]) or a vector env (obs [n, obs_dim]); the model keeps its
    context across episodes, which is what in-context learning needs.
    """

    def __init__(self, model, greedy: bool = False, seed: int = 0) -> None:
        from icl_rl.policy import ModelAgent

        self.agent = ModelAgent(model, greedy=greedy)
        self.seed = seed
        self.n = None

    def act(self, obs) -> np.ndarray | int:
        """Actions for `obs` (starts a new context on the first call)."""
        import torch

        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = o.ndim == 1
        o = o[None] if single else o
        if self.n is None:
            self.n = o.shape[0]
            self.agent.reset(self.n, torch.Generator().manual_seed(self.seed))
        self.last_obs = o
        a = self.agent.act(o)
        return int(a[0]) if single else a.numpy()

    def observe(self, action, reward, terminated, truncated) -> None:
        """Feed back what the env returned for the last action."""
        import torch

        a = torch.as_tensor(np.atleast_1d(action)).long()
        r = torch.as_tensor(np.atleast_1d(reward), dtype=torch.float32)
        done = torch.as_tensor(np.atleast_1d(np.logical_or(terminated, truncated)))
        self.agent.observe(self.last_obs, a, r, None, done)

    def reset(self) -> None:
        """Forget the context (a new learning history)."""
        self.n = None
