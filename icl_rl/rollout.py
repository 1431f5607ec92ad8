"""The one rollout loop: any Agent (source learner, trained model, baseline) on N tasks."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from icl_rl.agents import Agent, check_extras
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError


@dataclass
class History:
    """Learning histories of N tasks over T steps."""

    observations: Tensor  # [N, T, obs_dim] float32, o_t
    actions: Tensor  # [N, T] int64, a_t
    rewards: Tensor  # [N, T] float32, r_t
    dones: Tensor  # [N, T] bool, t is the last step of an episode
    tasks: Tensor  # [N, task_dim] float32
    optimal_actions: Tensor | None = None  # [N, T] int64, oracle action at o_t
    expected_rewards: Tensor | None = None  # [N, T] float32, E[r_t | a_t] where the env knows it
    # per-step records asked of `rollout` (`extras=`): "action_probs" [N, T, A] (the agent's
    # action distribution at each step), "features" [N, T, L, d] (per-layer hidden states)
    extras: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    # [N, T, obs_dim] the observation each step ended on (`rollout(..., record_final_obs=True)`):
    # o_{t+1}, except at an episode's end, where it is the episode's last observation instead of
    # the next episode's start. What replaying a learner along the history must feed it.
    final_observations: Tensor | None = None

    @property
    def num_histories(self) -> int:
        """N."""
        return self.actions.shape[0]

    @property
    def num_steps(self) -> int:
        """T."""
        return self.actions.shape[1]

    @staticmethod
    def cat(parts: list[History]) -> History:
        """Histories of disjoint task batches, stacked along the task dimension."""

        def join(name):
            values = [getattr(p, name) for p in parts]
            if name == "extras":
                return {k: torch.cat([v[k] for v in values]) for k in values[0]}
            return None if values[0] is None else torch.cat(values)

        return History(*(join(f.name) for f in dataclasses.fields(History)))

    def head(self, n: int, t: int) -> History:
        """The first `n` histories' first `t` steps (views, no copy)."""
        def cut(name, v):
            if v is None:
                return None
            if name == "extras":
                return {k: x[:n, :t] for k, x in v.items()}
            return v[:n] if name == "tasks" else v[:n, :t]

        return History(*(cut(f.name, getattr(self, f.name)) for f in dataclasses.fields(History)))

    def episode_returns(self) -> Tensor:
        """Return of every complete episode [N, E] (histories run in lockstep)."""
        return self.per_episode(self.rewards)

    def per_episode(self, values: Tensor) -> Tensor:
        """Sum of per-step `values` [N, T] over every complete episode: [N, E]."""
        ends = self.dones[0].nonzero()[:, 0]  # [E]
        csum = values.cumsum(dim=1)[:, ends]  # [N, E]
        return torch.diff(csum, dim=1, prepend=torch.zeros_like(csum[:, :1]))


def rollout(
    env: Env,
    agent: Agent,
    tasks: Tensor,
    steps: int,
    env_generator: torch.Generator | None = None,
    agent_generator: torch.Generator | None = None,
    record_optimal: bool = True,
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
    episode_stride: int = 1,
    extras: tuple[str, ...] | list[str] = (),
    record_final_obs: bool = False,
) -> History:
    """Run `agent` on `tasks` [N, task_dim] for `steps` steps; returns the History.

    Per step: agent.act -> (oracle action) -> env.step -> agent.observe. `observe` gets the
    observation the step led to; after an auto-reset the next `act` gets the new episode's
    first observation. The env and the agent draw from separate generators so that changing
    an agent never changes the task's rewards for the same actions.

    `episode_stride` k > 1 records only episodes 0, k, 2k, ... (the subsampled learning
    histories of Algorithm Distillation): the agent learns for k times as many steps and the
    History holds `steps` of them. `on_step` is called after every step the agent takes.

    `extras` names per-step records to keep in `History.extras` (`icl_rl.agents.EXTRAS`:
    the agent's action distribution, a model's per-layer features); none are computed unless
    asked.
    """
    if steps < 1:
        raise IclRlError(f"steps must be >= 1, got {steps}")
    if episode_stride < 1:
        raise IclRlError(f"episode_stride must be >= 1, got {episode_stride}")
    n = tasks.shape[0]
    if n < 1:
        raise IclRlError("need at least one task to roll out")
    extras = check_extras(agent, extras)
    obs = env.reset(tasks, env_generator)
    agent.reset(n, agent_generator)
    recorded: dict[str, Tensor] = {}  # allocated at the first step, when shapes are known
    dev = tasks.device
    # Preallocated buffers; the loop only writes slices.
    observations = torch.empty(n, steps, env.spec.obs_dim, device=dev)
    actions = torch.empty(n, steps, dtype=torch.long, device=dev)
    rewards = torch.empty(n, steps, device=dev)
    dones = torch.empty(n, steps, dtype=torch.bool, device=dev)
    optimal = torch.empty(n, steps, dtype=torch.long, device=dev) if record_optimal else None
    expected = torch.empty(n, steps, device=dev) if hasattr(env, "expected_reward") else None
    final = torch.empty(n, steps, env.spec.obs_dim, device=dev) if record_final_obs else None
    # Episodes run in lockstep and have a fixed length, so which steps are kept is known
    # without looking at `done`.
    episode_len = env.spec.episode_len
    t = 0  # steps recorded so far
    for step in tqdm(itertools.count(), total=steps * episode_stride, disable=not progress,
                     desc="rollout", leave=False):
        if t == steps:
            break
        keep = (step // episode_len) % episode_stride == 0
        action = agent.act(obs)
        if keep:
            observations[:, t] = obs
            actions[:, t] = action
            if optimal is not None:
                optimal[:, t] = env.optimal_action()
            if expected is not None:
                expected[:, t] = env.expected_reward(action)
            for name in extras:
                value = getattr(agent, name)(obs)  # [N, ...]
                if name not in recorded:
                    recorded[name] = value.new_empty(n, steps, *value.shape[1:])
                recorded[name][:, t] = value
        next_obs, reward, done = env.step(action)
        # the transition's own next observation: at an episode's end, where it ended, not the
        # auto-reset start of the next episode (env.final_obs equals next_obs on other steps)
        agent.observe(obs, action, reward, env.final_obs, done)
        if keep:
            rewards[:, t] = reward
            dones[:, t] = done
            if final is not None:
                final[:, t] = env.final_obs
            t += 1
        obs = next_obs
        if on_step is not None:
            on_step(step)
    return History(observations, actions, rewards, dones, tasks, optimal, expected, recorded,
                   final)
