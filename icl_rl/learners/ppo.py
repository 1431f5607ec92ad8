"""PPO (Schulman et al. 2017) as a sequential-task source learner, batched over N tasks: a
tabular softmax policy and a tabular value function per task, trained on all tasks at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.base import Learner, LearnerParams


@dataclass(frozen=True)
class PPOParams(LearnerParams):
    """Clipped PPO with GAE on tabular policy logits and state values, one table per task."""

    lr: float = 0.2
    """Adam step size for the logits and the values (tabular parameters take large steps)."""
    gamma: float = 0.9
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda: 0 is one-step TD advantages, 1 is Monte Carlo returns minus V."""
    clip: float = 0.2
    """PPO ratio clipping range epsilon."""
    epochs: int = 2
    """Full-batch gradient steps on each collected rollout."""
    rollout_len: int = 40
    """Steps collected per task between updates (40 = two 20-step Dark Room episodes)."""
    entropy_coef: float = 0.01
    """Weight of the policy entropy bonus."""
    value_coef: float = 0.5
    """Weight of the squared value error. The value table is a separate parameter and Adam is
    invariant to a gradient's scale, so this matters only through Adam's eps; it is kept so
    the objective reads as the standard one."""
    normalize_advantages: bool = False
    """Standardise the advantages of each task's rollout (mean 0, std 1) before the update.
    Off by default: on Dark Room (256 tasks) it learned more slowly (0.90 vs 0.94 of the
    oracle's return over episodes 91-100) and plateaued lower (0.94 vs 0.96 by episode 200)."""


class PPO(Learner):
    """Logits [N, S, A] and values [N, S], updated every `rollout_len` steps.

    The loss is summed over tasks, so each task's tables get their own gradient and Adam's
    per-element moments keep the tasks independent. GAE never bootstraps across the end of an
    episode (with auto-reset the next observation belongs to the next episode); at the end of a
    rollout it bootstraps with V(next state). Draws per step: multinomial [N, A] -> [N] (the
    action); updates draw nothing (full-batch epochs).
    """

    Params = PPOParams
    name = "ppo"

    def __init__(self, env: Env, params: PPOParams | None = None) -> None:
        if not hasattr(env, "obs_to_state"):
            raise IclRlError(f"learner 'ppo' needs a gridworld (tabular states), not "
                             f"{env.spec.name!r}; use ucb or thompson for bandits")
        super().__init__(env, params)
        p = self.params
        if not (p.lr > 0 and 0 <= p.gamma <= 1 and 0 <= p.lam <= 1 and p.clip > 0
                and isinstance(p.epochs, int) and p.epochs >= 1
                and isinstance(p.rollout_len, int) and p.rollout_len >= 1
                and p.entropy_coef >= 0 and p.value_coef >= 0):
            raise IclRlError(f"ppo: need lr>0, gamma and lam in [0, 1], clip>0, integer "
                             f"epochs>=1 and rollout_len>=1, coefficients >= 0: {p}")
        self.env = env

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Uniform policies, zero values, fresh optimiser and empty rollout buffers."""
        super().reset(n, generator)
        s, a, length = self.env.num_states, self.spec.num_actions, self.params.rollout_len
        self.logits = torch.zeros(n, s, a, requires_grad=True)
        self.values = torch.zeros(n, s, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits, self.values], lr=self.params.lr)
        self.rows = torch.arange(n)
        self.states = torch.zeros(n, length, dtype=torch.long)
        self.actions = torch.zeros(n, length, dtype=torch.long)
        self.rewards = torch.zeros(n, length)
        self.dones = torch.zeros(n, length, dtype=torch.bool)
        self.next_states = torch.zeros(n, length, dtype=torch.long)
        self.t = 0  # next free slot of the buffers

    def act(self, obs: Tensor) -> Tensor:
        """Sample from softmax(logits[s])."""
        logits = self.logits.detach()[self.rows, self.env.obs_to_state(obs)]  # [N, A]
        return rng.categorical(self.generator, logits.softmax(dim=1))

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Store the transition; when the buffer is full, run the PPO update."""
        self.states[:, self.t] = self.env.obs_to_state(obs)
        self.actions[:, self.t] = action
        self.rewards[:, self.t] = reward
        self.dones[:, self.t] = done
        self.next_states[:, self.t] = self.env.obs_to_state(next_obs)
        self.t += 1
        if self.t == self.params.rollout_len:
            self.update()
            self.t = 0

    def advantages(self) -> tuple[Tensor, Tensor]:
        """GAE advantages and value targets [N, L] of the full buffers under the current V.

        Every step bootstraps from V(the state it led to), at a time limit too (episodes end
        by time limits, the state holds no time); the GAE sum stops at an episode's end.
        """
        p = self.params
        with torch.no_grad():
            v = self.values[self.rows[:, None], self.states]  # [N, L]
            v_next = self.values[self.rows[:, None], self.next_states]  # [N, L]
            live = (~self.dones).float()  # the advantage sum does not cross an episode's end
            delta = self.rewards + p.gamma * v_next - v
            adv = torch.zeros_like(delta)
            running = torch.zeros_like(delta[:, 0])
            for t in reversed(range(p.rollout_len)):
                running = delta[:, t] + p.gamma * p.lam * live[:, t] * running
                adv[:, t] = running
        return adv, adv + v

    def update(self) -> None:
        """`epochs` full-batch steps of the clipped objective on every task at once."""
        p, rows = self.params, self.rows[:, None]  # rows [N, 1] broadcasts over time
        adv, returns = self.advantages()
        if p.normalize_advantages:
            std, mean = torch.std_mean(adv, dim=1, correction=0, keepdim=True)
            adv = (adv - mean) / (std + 1e-8)
        with torch.no_grad():
            old_logp = self.logits[rows, self.states].log_softmax(2).gather(
                2, self.actions[..., None])[..., 0]  # [N, L]
        for _ in range(p.epochs):
            logp_all = self.logits[rows, self.states].log_softmax(2)  # [N, L, A]
            logp = logp_all.gather(2, self.actions[..., None])[..., 0]  # [N, L]
            ratio = (logp - old_logp).exp()
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - p.clip, 1 + p.clip) * adv)
            entropy = -(logp_all.exp() * logp_all).sum(2)
            value_err = (self.values[rows, self.states] - returns) ** 2
            loss = (-surrogate - p.entropy_coef * entropy + p.value_coef * value_err).mean(1)
            self.optimizer.zero_grad()
            loss.sum().backward()  # summed over tasks: each task's tables get their own gradient
            self.optimizer.step()
