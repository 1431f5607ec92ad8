"""What every model family shares: the env it acts in, where it came from, and two interfaces.

- Training: `forward(observations, prev_actions, prev_rewards, episode_starts, targets=None,
  attention_mask=None)` over aligned windows [B, K] (see `icl_rl.transitions`) -> logits
  [B, K, A] and the cross-entropy loss against `targets`.
- Acting: `init_state(n, window)` and `step(inputs, state) -> StepOutput(logits, features,
  state)`, one aligned input [N] per call. `ModelAgent` and the Gymnasium adapter drive every
  family through these two methods only; what the state is (a ring KV cache, a recurrent hidden
  state) is the family's business.

A family is a `FamilyConfig` subclass (its options as constructor arguments) and a
`FamilyModel` subclass, registered with `icl_rl.models.register_family`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from icl_rl.errors import IclRlError
from icl_rl.models.world_model import WorldModelHead, window_loss
from icl_rl.transitions import Transitions, token_dim, token_slices


class FamilyConfig(PreTrainedConfig):
    """The fields every family has: the env's spaces, the hidden inputs, the provenance."""

    model_type = ""
    # Constructor arguments that are not family options: set from the dataset and `train`.
    COMMON: ClassVar[tuple[str, ...]] = ("obs_dim", "num_actions", "obs_levels", "env_name",
                                          "env_params", "max_context", "hidden_inputs",
                                          "world_model_weight", "provenance")

    def __init__(self, obs_dim: int = 1, num_actions: int = 2,
                 obs_levels: list[int] | None = None, env_name: str = "",
                 env_params: dict | None = None, max_context: int = 256,
                 hidden_inputs: list[str] | None = None, world_model_weight: float = 0.0,
                 provenance: dict | None = None, **kwargs) -> None:
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        # Per observation dimension: number of integer levels to one-hot encode (grid
        # coordinates, wall bits), or 0 to feed the value as is. None: all as is.
        self.obs_levels = list(obs_levels) if obs_levels else None
        self.env_name = env_name  # family the model was trained for; eval refuses others
        self.env_params = dict(env_params or {})
        self.max_context = max_context  # steps per training window
        # parts of the input zeroed before the model sees them: ablations of in-context RL
        self.hidden_inputs = list(hidden_inputs or [])
        # > 0: the model has world-model heads (next observation, reward; see
        # `icl_rl.models.world_model`) and their loss enters the training loss with this weight
        self.world_model_weight = float(world_model_weight)
        if not self.world_model_weight >= 0:
            raise IclRlError(f"world_model_weight must be >= 0, got {world_model_weight!r}")
        # where the weights came from: dataset, source learner, steps, context, target.
        # Models saved before this field existed carry it as `training`.
        self.provenance = dict(provenance or kwargs.pop("training", None) or {})
        super().__init__(**kwargs)

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The family's own options (name -> default): what `--model-kwargs` may set."""
        params = inspect.signature(cls.__init__).parameters
        return {n: p.default for n, p in params.items()
                if n not in ("self", "kwargs") and n not in cls.COMMON}

    @property
    def token_dim(self) -> int:
        """Width of a step's features (`icl_rl.transitions.token_features`)."""
        return token_dim(self.obs_dim, self.num_actions, self.obs_levels)

    def token_slices(self) -> dict[str, slice]:
        """Where each hideable part lies in a step's features."""
        return token_slices(self.obs_dim, self.num_actions, self.obs_levels)

    def parts(self) -> dict[str, list[slice]]:
        """Where each hideable input lies in a step's features (a family whose tokens hold a
        part in several places, e.g. DPT's s and s', lists them all)."""
        return {name: [part] for name, part in self.token_slices().items()}

    def input_mask(self) -> list[float]:
        """1 for the step features the model sees, 0 for those in `hidden_inputs`."""
        mask = [1.0] * self.token_dim
        for name in self.hidden_inputs:
            for part in self.parts()[name]:
                mask[part] = [0.0] * (part.stop - part.start)
        return mask

    def describe(self) -> str:
        """One line for model cards and logs, e.g. "4-layer, 64-wide Llama decoder"."""
        return self.model_type


@dataclass
class FamilyOutput(ModelOutput):
    """Action logits, the loss when targets are given, hidden states when asked."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    values: Tensor | None = None  # [B, K] state values, for a family with a value head (RL²)
    hidden_states: tuple[Tensor, ...] | None = None
    last_hidden_state: Tensor | None = None  # [B, K, d] the top layer's output
    # with world-model heads: their loss (already in `loss`, weighted) and its parts
    world_model_loss: Tensor | None = None
    reward_mse: Tensor | None = None
    next_obs_accuracy: Tensor | None = None
    return_mae: Tensor | None = None


@dataclass
class StepOutput:
    """One acting step of N tasks."""

    logits: Tensor  # [N, A]
    features: Tensor | None  # [N, L, d] per-layer hidden states, when asked
    state: Any  # the family's acting state after this step
    hidden: Tensor | None = None  # [N, d] the top layer's output (world-model heads read it)


class FamilyModel(PreTrainedModel):
    """Base of every family: the action loss, and the acting protocol to implement."""

    config_class = FamilyConfig
    main_input_name = "observations"
    # Acting with a bounded window of past steps (a transformer); False: constant-size state.
    uses_window: ClassVar[bool] = True
    # Training targets the family learns (`train --target`; the first is the default).
    targets: ClassVar[tuple[str, ...]] = ("actions", "optimal_actions")
    # Batches carry a query state per window (`WindowDataset(queries=True)`): DPT.
    needs_queries: ClassVar[bool] = False
    # The family can carry world-model heads (`train --world-model-weight`) and act with
    # lookahead: it implements `select_state` and fills `StepOutput.hidden`. Every family
    # sets `self.world_model = self.make_world_model(width)` (None without heads).
    supports_world_model: ClassVar[bool] = False

    def action_loss(self, logits: Tensor, targets: Tensor | None,
                    attention_mask: Tensor | None) -> Tensor | None:
        """Cross-entropy of logits [B, K, A] against targets [B, K]; padding gets none."""
        if targets is None:
            return None
        target = targets.long()
        if attention_mask is not None:
            target = target.masked_fill(attention_mask == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               ignore_index=-100)

    def make_world_model(self, hidden_size: int) -> WorldModelHead | None:
        """The world-model heads when the config asks for them (weight > 0), else None."""
        c = self.config
        if not c.world_model_weight:
            return None
        if not self.supports_world_model:
            raise IclRlError(f"the {c.model_type} family has no world-model heads; train an ad "
                             "or recurrent model with --world-model-weight")
        return WorldModelHead(hidden_size, c.num_actions, c.obs_dim, c.obs_levels)

    @property
    def heads(self) -> WorldModelHead | None:
        """The world-model heads, or None (also for a family that never sets them)."""
        return getattr(self, "world_model", None)

    def with_world_model(self, out: FamilyOutput, x: Transitions,
                         attention_mask: Tensor | None) -> FamilyOutput:
        """`out` with the heads' loss added (weighted) when the model has heads and a loss."""
        if self.heads is None or out.loss is None:
            return out
        wm = window_loss(self.heads, out.last_hidden_state, x, attention_mask)
        out.loss = out.loss + self.config.world_model_weight * wm.loss
        out.world_model_loss = wm.loss.detach()
        out.reward_mse, out.next_obs_accuracy = wm.reward_mse, wm.next_obs_accuracy
        out.return_mae = wm.return_mae
        return out

    def select_state(self, state: Any, index: Tensor, room: int | None = None) -> Any:
        """A new acting state whose row i is a copy of `state`'s row index[i] (lookahead
        branches a task's state into several imagined futures); `room`: how many more steps
        the copy will take, where a family can use it to copy less."""
        raise NotImplementedError

    def hide(self, features: Tensor) -> Tensor:
        """Zero the hidden parts of step features [..., token_dim] (an ablation)."""
        if not self.config.hidden_inputs:
            return features
        return features * features.new_tensor(self.config.input_mask())

    def init_state(self, n: int, window: int | None = None, **options) -> Any:
        """The acting state of n new histories."""
        raise NotImplementedError

    def step(self, inputs: Transitions, state: Any, output_features: bool = False) -> StepOutput:
        """Act on one aligned input [N]: logits [N, A], optional features, the new state."""
        raise NotImplementedError

    def flops_per_token(self, context: int) -> float:
        """Analytic training FLOPs per step (forward + backward); 0 if unknown."""
        return 0.0

    def check_window(self, window: int | None) -> None:
        """A window is a transformer's notion; a constant-state family refuses one."""
        if window is not None and not self.uses_window:
            raise IclRlError(f"--window {window}: a {self.config.model_type} model keeps a "
                             "constant-size state, not a window of past steps; leave --window "
                             "unset")
