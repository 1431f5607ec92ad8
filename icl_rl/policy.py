"""A trained model of any family as a batched in-context Agent.

`ModelAgent` keeps the previous transition of every task (`icl_rl.transitions.StepContext`,
the same alignment the training windows use), hands the model one aligned input per step
through the family's acting protocol (`init_state`, `step`) and samples the action. What the
model remembers between steps (a ring KV cache, a recurrent state) is the family's state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.errors import IclRlError
from icl_rl.models.base import FamilyModel
from icl_rl.transitions import StepContext


class ModelAgent:
    """A trained model acting in context on N tasks at once (the Agent protocol).

    `window` (transformer families): steps of context kept, default the training context.
    `state_options` go to the family's `init_state` (AD: `use_cache`, `decode_attention`).
    """

    def __init__(self, model: FamilyModel, greedy: bool = False, window: int | None = None,
                 temperature: float = 1.0, **state_options) -> None:
        self.model = model.eval()
        model.check_window(window)
        self.greedy = greedy
        self.window = window or (model.config.max_context if model.uses_window else None)
        if self.window is not None and self.window < 1:
            raise IclRlError(f"window must be >= 1, got {self.window}")
        if not temperature > 0:
            raise IclRlError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.state_options = state_options
        self.device = next(model.parameters()).device
        self.context = StepContext()
        self.output_features = False
        self.last_logits: Tensor | None = None
        self.last_features: Tensor | None = None

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Empty context for n tasks."""
        if n < 1:
            raise IclRlError("need at least one task")
        self.n = n
        self.generator = generator
        self.context.reset(n, self.device)
        self.state = self.model.init_state(n, self.window, **self.state_options)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """One step of the model on this step's aligned input; sample (or take) the action."""
        out = self.model.step(self.context.inputs(obs), self.state,
                              output_features=self.output_features)
        self.state = out.state
        self.last_logits = out.logits  # [N, A]
        self.last_features = out.features
        if self.greedy:
            return out.logits.argmax(dim=-1)
        return rng.categorical(self.generator, self._probs().cpu()).to(self.device)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Remember the transition: it goes into the next input."""
        self.context.observe(action, reward, done)

    def _probs(self) -> Tensor:
        return torch.softmax(self.last_logits / self.temperature, dim=-1)

    # -- rollout extras ------------------------------------------------------------------------
    def request_extras(self, names: set[str]) -> None:
        """Compute per-layer features at every step only when a rollout asks for them."""
        self.output_features = "features" in names

    def action_probs(self, obs: Tensor) -> Tensor:
        """The distribution the last action came from [N, A] (one-hot when greedy)."""
        if self.greedy:
            return torch.nn.functional.one_hot(self.last_logits.argmax(-1),
                                               self.last_logits.shape[-1]).float()
        return self._probs()

    def features(self, obs: Tensor) -> Tensor:
        """Per-layer hidden state at the last step [N, L, d]."""
        return self.last_features

    def cache_bytes(self) -> int:
        """Bytes held by the acting state's cache (0 for families without one)."""
        return getattr(self.state, "cache_bytes", lambda: 0)()
