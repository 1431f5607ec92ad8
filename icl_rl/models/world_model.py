"""World-model heads, and acting by looking ahead with them.

A family with world-model heads (`world_model_weight` > 0 in its config; `train
--world-model-weight W`) predicts, from its hidden state at o_t and an action a, the reward
r_t that a would earn and the next observation o_{t+1}. The labels come from the training
window itself: position t + 1 holds (o_{t+1}, a_t, r_t), so no dataset column is needed. An
observation dimension with integer levels (grid coordinates, wall bits) is predicted as a
class (cross-entropy), a continuous one as a value (squared error); the reward by squared
error. The next observation is unknown after the last step of an episode (the next position
is the new episode's start), so those steps train the reward only.

`lookahead_values` plans with these predictions at decision time: it rolls the model's own
imagined transitions D steps ahead (a beam of B paths per task, each imagined step one
forward of the model on its branched acting state) and returns, per first action, the best
predicted return. `ModelAgent(lookahead=D)` acts from logits + beta * those values: the
policy the model learned is the prior, the planner's values tilt it (pi(a) exp(beta Q(a)),
the policy that maximizes E[Q] - KL(. || pi) / beta). D = 0 changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icl_rl.errors import IclRlError
from icl_rl.transitions import Transitions


@dataclass
class WorldModelLoss:
    """The heads' loss on a batch and what it is made of (for logs and validation)."""

    loss: Tensor  # reward MSE + mean per-dimension observation loss + return-to-go Huber
    reward_mse: Tensor
    next_obs_accuracy: Tensor | None  # every levelled dimension right; None without any
    return_mae: Tensor | None = None  # |predicted - actual return-to-go|, where known


class WorldModelHead(nn.Module):
    """(hidden state at o_t, action a_t) -> predicted r_t and o_{t+1}: a one-layer MLP."""

    def __init__(self, hidden_size: int, num_actions: int, obs_dim: int,
                 obs_levels: list[int] | None) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.levels = list(obs_levels) if obs_levels else [0] * obs_dim
        self.widths = [level if level else 1 for level in self.levels]
        self.net = nn.Sequential(nn.Linear(hidden_size + num_actions, hidden_size), nn.GELU(),
                                 nn.Linear(hidden_size, 1 + sum(self.widths)))
        self.value_net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                       nn.Linear(hidden_size, 1))

    def value(self, hidden: Tensor) -> Tensor:
        """The predicted return-to-go of the episode from this step on [...] (its reward
        included)."""
        return self.value_net(hidden)[..., 0].float()

    def forward(self, hidden: Tensor, actions: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """hidden [..., d], actions [...] -> reward [...], per obs dimension logits or value."""
        a = F.one_hot(actions.long().clamp(min=0), self.num_actions).to(hidden.dtype)
        out = self.net(torch.cat([hidden, a], dim=-1))
        return out[..., 0], out[..., 1:].split(self.widths, dim=-1)

    def predict(self, hidden: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted next observation [..., obs_dim] (most likely level, or the value) and
        reward [...]."""
        reward, parts = self(hidden, actions)
        obs = [p.argmax(dim=-1).to(p.dtype) if level else p[..., 0]
               for p, level in zip(parts, self.levels, strict=True)]
        return torch.stack(obs, dim=-1).float(), reward.float()

    def loss(self, hidden: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor,
             reward_mask: Tensor, obs_mask: Tensor, returns: Tensor | None = None,
             return_mask: Tensor | None = None) -> WorldModelLoss:
        """Losses at the steps the masks [...] select (labels: r_t, o_{t+1} [..., obs_dim] and
        the episode's return-to-go from t)."""
        reward, parts = self(hidden, actions)
        rm, om = reward_mask.float(), obs_mask.float()
        reward_mse = masked_mean((reward.float() - rewards.float()) ** 2, rm)
        obs_terms, hits = [], []
        for i, (p, level) in enumerate(zip(parts, self.levels, strict=True)):
            target = next_obs[..., i]
            if level:
                label = target.round().long().clamp(0, level - 1)
                obs_terms.append(F.cross_entropy(p.reshape(-1, level).float(), label.reshape(-1),
                                                 reduction="none").reshape(label.shape))
                hits.append(p.argmax(dim=-1) == label)
            else:
                obs_terms.append((p[..., 0].float() - target.float()) ** 2)
        obs_loss = masked_mean(torch.stack(obs_terms, dim=-1).mean(dim=-1), om)
        accuracy = None
        if hits:
            accuracy = masked_mean(torch.stack(hits, dim=-1).all(dim=-1).float(), om).detach()
        loss = reward_mse + obs_loss
        return_mae = None
        if returns is not None:
            vm = return_mask.float()
            value = self.value(hidden)
            loss = loss + masked_mean(F.smooth_l1_loss(value, returns.float(), reduction="none"),
                                      vm)
            return_mae = masked_mean((value - returns.float()).abs(), vm).detach()
        return WorldModelLoss(loss, reward_mse.detach(), accuracy, return_mae)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x where mask [same shape] is 1 (0 where it selects nothing)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def returns_to_go(rewards: Tensor, dones: Tensor) -> tuple[Tensor, Tensor]:
    """Per step of windows [B, K] of (r_t, done_t): the return from t to its episode's end,
    and whether that end lies inside the window (else the label is unknown)."""
    b, k = rewards.shape
    idx = torch.arange(k, device=rewards.device).expand(b, k)
    end = torch.where(dones.bool(), idx, torch.full_like(idx, k))  # k: not in the window
    end = end.flip(1).cummin(dim=1).values.flip(1)  # the first episode end at or after t
    tail = rewards.float().flip(1).cumsum(dim=1).flip(1)  # sum of r from t to the window's end
    tail = torch.cat([tail, tail.new_zeros(b, 1)], dim=1)
    return tail[:, :k] - tail.gather(1, (end + 1).clamp(max=k)), end < k


def window_loss(head: WorldModelHead, hidden: Tensor, x: Transitions,
                attention_mask: Tensor | None) -> WorldModelLoss:
    """The heads' loss on training windows [B, K]: the labels of position t are in t + 1
    (o_{t+1}, a_t, r_t and whether t ended an episode)."""
    real = (torch.ones_like(x.episode_starts, dtype=torch.bool) if attention_mask is None
            else attention_mask.bool())
    both = real[:, :-1] & real[:, 1:] & (x.prev_actions[:, 1:] >= 0)
    rewards = x.prev_rewards[:, 1:] * both
    dones = x.episode_starts[:, 1:].bool() & both
    returns, known = returns_to_go(rewards, dones)
    return head.loss(hidden[:, :-1], x.prev_actions[:, 1:], x.prev_rewards[:, 1:],
                     x.observations[:, 1:], reward_mask=both,
                     obs_mask=both & ~x.episode_starts[:, 1:].bool(), returns=returns,
                     return_mask=both & known)


@torch.no_grad()
def lookahead_values(model, state, hidden: Tensor, logits: Tensor, depth: int, beam: int,
                     beta: float, steps_left: Tensor | None = None,
                     bootstrap: bool = True,
                     reward_values: tuple[float, ...] | None = None) -> Tensor:
    """Predicted return of each first action [N, A] over `depth` imagined steps.

    `state`: the model's acting state after the current step (its top-layer output `hidden`
    [N, d] and action logits [N, A]); it is not changed: imagined steps run on copies
    (`model.select_state`). At each level every kept path is extended by every action (the
    heads predict its reward and next observation); the `beam` extensions per task with the
    highest beta * predicted return + log pi(path) (the planner's own objective, so a path
    the policy finds unlikely needs more predicted reward to stay) are kept, and each one's
    imagined transition (predicted o, its action, predicted r) is fed to the model as the next
    token. With `bootstrap` a path's estimate adds the return-to-go the heads predict where it
    ends; without, it is the predicted reward of its steps only. A first action's value is
    its best path at the deepest level it survived to. `steps_left` [N]: steps left in each
    task's episode (this one included); predictions past the episode's end count 0.
    `reward_values`: the rewards the env pays, where they are few (the env's): the imagined
    token carries the nearest one, a reward the model could have seen in training (a
    predicted 0.2 fed as is reads as a fifth of a payoff), while the path's score keeps the
    predicted expectation.
    """
    if depth < 1:
        raise IclRlError(f"lookahead depth must be >= 1, got {depth}")
    if beam < 1:
        raise IclRlError(f"lookahead beam must be >= 1, got {beam}")
    head = model.heads
    n, num_actions = logits.shape
    dev = hidden.device
    actions = torch.arange(num_actions, device=dev)

    def alive(level: int) -> Tensor:  # [N, 1]: does step `level` (1 = now) fall in the episode
        if steps_left is None:
            return torch.ones(n, 1, device=dev)
        return (steps_left.to(dev) >= level).float()[:, None]

    # the frontier: P kept paths per task, their hidden state [N*P, d] and logits [N*P, A]
    score = torch.zeros(n, 1, device=dev)  # predicted reward along each path
    prior = torch.zeros(n, 1, device=dev)  # log pi of each path
    root = torch.full((n, 1), -1, dtype=torch.long, device=dev)  # its first action
    support = None if reward_values is None else torch.tensor(reward_values, device=dev)
    for level in range(1, depth + 1):
        p = score.shape[1]
        obs, reward = head.predict(hidden[:, None].expand(-1, num_actions, -1),
                                   actions.expand(len(hidden), -1))  # [N*P, A, o], [N*P, A]
        obs = obs.reshape(n, p * num_actions, -1)
        reward = reward.reshape(n, p * num_actions)
        step_prior = torch.log_softmax(logits.float(), dim=-1).reshape(n, p * num_actions)
        score = score.repeat_interleave(num_actions, dim=1) + reward * alive(level)
        prior = prior.repeat_interleave(num_actions, dim=1) + step_prior
        root = (actions.expand(n, -1) if level == 1
                else root.repeat_interleave(num_actions, dim=1))
        if level == 1:  # every first action has a value [N, A], kept in the beam or not
            values = score.clone()
        keep = (beta * score + prior).topk(min(beam, score.shape[1]), dim=1).indices  # [N, B]
        b = keep.shape[1]
        score, prior, root, reward = (v.gather(1, keep) for v in (score, prior, root, reward))
        estimate = score
        if bootstrap or level < depth:
            rows = (torch.arange(n, device=dev)[:, None] * p + keep // num_actions).reshape(-1)
            o = obs.gather(1, keep[..., None].expand(-1, -1, obs.shape[-1]))
            r = reward.reshape(-1)
            if support is not None:  # the nearest reward the env pays
                r = support[(r[:, None] - support).abs().argmin(dim=1)]
            state = model.select_state(state, rows, room=depth - level + 1)
            out = model.step(Transitions(o.reshape(n * b, -1), (keep % num_actions).reshape(-1),
                                         r, torch.zeros(n * b, dtype=torch.bool, device=dev)),
                             state)
            state, hidden, logits = out.state, out.hidden, out.logits
            if bootstrap:
                estimate = score + head.value(hidden).reshape(n, b) * alive(level + 1)
        best = torch.full_like(values, float("-inf")).scatter_reduce(1, root, estimate, "amax")
        values = torch.where(torch.isfinite(best), best, values)
    return values
