"""The recurrent family: a GRU (or LSTM) over the same step features as AD.

The RL² memory baseline: the whole history is read one step at a time into a constant-size
state, so acting costs the same at step 10 and at step 10,000 (no window, no cache growth).
Trained by the same loop and loss as AD, on windows of `context` steps that start from a zero
state; at evaluation the state carries the whole history. A window that starts mid-history
therefore starts from a state the model never has when it acts: `train
--history-start-fraction` puts a share of the windows where acting starts, at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icl_rl.errors import IclRlError
from icl_rl.models.base import FamilyConfig, FamilyModel, FamilyOutput, StepOutput
from icl_rl.transitions import Transitions, token_features

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentConfig(FamilyConfig):
    """A recurrent network over step tokens. Options: its cell and shape."""

    model_type = "icl_rl_recurrent"

    def __init__(self, hidden_size: int = 128, num_layers: int = 1, cell: str = "gru",
                 **kwargs) -> None:
        if cell not in CELLS:
            raise IclRlError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise IclRlError(f"{name} must be a positive integer, got {value!r}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        super().__init__(**kwargs)

    def describe(self) -> str:
        """Shape in words."""
        return f"{self.num_layers}-layer, {self.hidden_size}-wide {self.cell.upper()}"


@dataclass
class RecurrentState:
    """The hidden state of N histories: h [L, N, d] (and the LSTM's cell state c)."""

    h: Tensor
    c: Tensor | None = None

    def as_rnn(self):
        """The form torch's GRU / LSTM take."""
        return self.h if self.c is None else (self.h, self.c)


class RecurrentModel(FamilyModel):
    """GRU / LSTM over step tokens that predicts the learner's next action."""

    config_class = RecurrentConfig
    base_model_prefix = "recurrent"
    uses_window = False

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Linear(config.token_dim, d)
        self.rnn = CELLS[config.cell](d, d, config.num_layers, batch_first=True)
        self.action_head = nn.Linear(d, config.num_actions)
        self.post_init()

    def _run(self, x: Transitions, state: RecurrentState | None):
        """Aligned steps [B, K] -> top-layer outputs [B, K, d] and the new state."""
        tokens = self.hide(token_features(x, self.config.num_actions, self.config.obs_levels))
        out, new = self.rnn(self.embed(tokens), None if state is None else state.as_rnn())
        return out, (RecurrentState(*new) if isinstance(new, tuple) else RecurrentState(new))

    def forward(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor,
                episode_starts: Tensor, targets: Tensor | None = None,
                attention_mask: Tensor | None = None, **_) -> FamilyOutput:
        """Windows [B, K] from a zero state -> logits [B, K, A]; the loss against targets.

        Padding sits at the right end of a window, after every real step, so it never
        reaches a real step's output; it only gets no loss.
        """
        x = Transitions(observations, prev_actions, prev_rewards, episode_starts)
        out, _ = self._run(x, None)
        logits = self.action_head(out)
        return FamilyOutput(loss=self.action_loss(logits, targets, attention_mask),
                            logits=logits)

    def init_state(self, n: int, window: int | None = None, **options) -> RecurrentState:
        """Zero state for n histories (a window is refused: the state is the memory)."""
        self.check_window(window)
        c = self.config
        zeros = torch.zeros(c.num_layers, n, c.hidden_size, device=self.device)
        return RecurrentState(zeros, zeros.clone() if c.cell == "lstm" else None)

    @torch.no_grad()
    def step(self, inputs: Transitions, state: RecurrentState,
             output_features: bool = False) -> StepOutput:
        """One step of N histories: logits [N, A]; features: each layer's state [N, L, d]."""
        x = Transitions(*(v[:, None] for v in inputs.as_dict().values()))
        out, state = self._run(x, state)
        features = state.h.transpose(0, 1) if output_features else None
        return StepOutput(self.action_head(out[:, -1]).float(), features, state)

    def flops_per_token(self, context: int) -> float:
        """Analytic training FLOPs per step (forward + backward = 3x forward)."""
        c = self.config
        d, gates = c.hidden_size, 3 if c.cell == "gru" else 4
        forward = (2 * c.token_dim * d + c.num_layers * 2 * gates * 2 * d * d
                   + 2 * d * c.num_actions)
        return 3.0 * forward
