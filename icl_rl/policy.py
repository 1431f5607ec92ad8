"""A trained model of any family as a batched in-context Agent.

`ModelAgent` keeps the previous transition of every task (`icl_rl.transitions.StepContext`,
the same alignment the training windows use), hands the model one aligned input per step
through the family's acting protocol (`init_state`, `step`) and samples the action. What the
model remembers between steps (a ring KV cache, a recurrent state) is the family's state.

A model with world-model heads can also act by looking ahead (`lookahead=D`): it imagines D
steps with its own predictions and tilts its policy toward the actions with the higher
predicted return (`icl_rl.models.world_model.lookahead_values`). D = 0 is plain acting.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icl_rl import rng
from icl_rl.errors import IclRlError
from icl_rl.models.base import FamilyModel
from icl_rl.models.world_model import lookahead_values
from icl_rl.transitions import StepContext


class ModelAgent:
    """A trained model acting in context on N tasks at once (the Agent protocol).

    `window` (transformer families): steps of context kept, default the training context.
    `lookahead` D > 0 (a model with world-model heads): act from logits + `beta` * the
    predicted return of each action over D imagined steps, a beam of `beam` paths per task,
    plus (`bootstrap`) the return-to-go predicted where each path ends; `episode_len` (the
    env's) stops the imagined return at the episode's end; `reward_values` (the env's) are
    the rewards imagined steps may carry.
    `state_options` go to the family's `init_state` (AD: `use_cache`, `decode_attention`).
    """

    def __init__(self, model: FamilyModel, greedy: bool = False, window: int | None = None,
                 temperature: float = 1.0, lookahead: int = 0, beam: int = 5,
                 beta: float = 1.0, bootstrap: bool = True, episode_len: int | None = None,
                 reward_values: tuple[float, ...] | None = None, **state_options) -> None:
        self.model = model.eval()
        model.check_window(window)
        self.greedy = greedy
        self.window = window or (model.config.max_context if model.uses_window else None)
        if self.window is not None and self.window < 1:
            raise IclRlError(f"window must be >= 1, got {self.window}")
        if not temperature > 0:
            raise IclRlError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        if not isinstance(lookahead, int) or lookahead < 0:
            raise IclRlError(f"lookahead must be an integer >= 0, got {lookahead!r}")
        if lookahead and model.heads is None:
            raise IclRlError(f"lookahead {lookahead}: the model has no world-model heads "
                             f"(config.json: world_model_weight is "
                             f"{model.config.world_model_weight}); train one with `icl-rl "
                             "train --world-model-weight 1` or evaluate with lookahead 0")
        if beam < 1 or not beta >= 0:
            raise IclRlError(f"lookahead needs beam >= 1 and beta >= 0, got {beam}, {beta}")
        self.lookahead, self.beam, self.beta, self.bootstrap = lookahead, beam, beta, bootstrap
        self.episode_len, self.reward_values = episode_len, reward_values
        # the `world_model` rollout extra, recorded only by a model with the heads
        self.world_model = None if model.heads is None else self._predicted_transition
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
        self.episode_step = torch.zeros(n, dtype=torch.long, device=self.device)
        self.last_hidden: Tensor | None = None
        self.last_action: Tensor | None = None

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """One step of the model on this step's aligned input; sample (or take) the action."""
        out = self.model.step(self.context.inputs(obs), self.state,
                              output_features=self.output_features)
        self.state = out.state
        logits = out.logits  # [N, A]
        if self.lookahead:
            steps_left = None
            if self.episode_len is not None:
                steps_left = self.episode_len - self.episode_step
            logits = logits + self.beta * lookahead_values(
                self.model, self.state, out.hidden, out.logits, self.lookahead, self.beam,
                self.beta, steps_left, self.bootstrap, self.reward_values)
        self.last_logits = logits
        self.last_features = out.features
        self.last_hidden = out.hidden
        if self.greedy:
            self.last_action = logits.argmax(dim=-1)
        else:
            self.last_action = rng.categorical(self.generator, self._probs().cpu()).to(self.device)
        return self.last_action

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Remember the transition: it goes into the next input."""
        self.context.observe(action, reward, done)
        self.episode_step = (self.episode_step + 1) * ~done.to(self.device).bool()

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

    @torch.no_grad()
    def _predicted_transition(self, obs: Tensor) -> Tensor:
        """What the heads predict for the action just taken [N, obs_dim + 1]: the next
        observation, then the reward (the `world_model` extra)."""
        next_obs, reward = self.model.heads.predict(self.last_hidden, self.last_action)
        return torch.cat([next_obs, reward[:, None]], dim=-1)

    def cache_bytes(self) -> int:
        """Bytes held by the acting state's cache (0 for families without one)."""
        return getattr(self.state, "cache_bytes", lambda: 0)()
