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
# What the state remembers: the whole history (RL²'s trial), the current episode only (the
# state is zeroed where an episode starts), or nothing (zeroed every step: a feedforward
# policy over the step's own input).
MEMORIES = ("history", "episode", "none")


class RecurrentConfig(FamilyConfig):
    """A recurrent network over step tokens. Options: its cell and shape."""

    model_type = "icl_rl_recurrent"

    def __init__(self, hidden_size: int = 128, num_layers: int = 1, cell: str = "gru",
                 memory: str = "history", value_head: bool = False, **kwargs) -> None:
        if cell not in CELLS:
            raise IclRlError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if memory not in MEMORIES:
            raise IclRlError(f"memory must be one of {', '.join(MEMORIES)}, got {memory!r}")
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise IclRlError(f"{name} must be a positive integer, got {value!r}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.memory = memory
        self.value_head = bool(value_head)  # a state-value output (RL² trains one; AD no)
        super().__init__(**kwargs)

    def describe(self) -> str:
        """Shape in words."""
        memory = "" if self.memory == "history" else f", memory: {self.memory}"
        heads = ", world-model heads" if self.world_model_weight else ""
        return (f"{self.num_layers}-layer, {self.hidden_size}-wide {self.cell.upper()}{memory}"
                f"{heads}")


@dataclass
class RecurrentState:
    """The hidden state of N histories: h [L, N, d] (and the LSTM's cell state c)."""

    h: Tensor
    c: Tensor | None = None

    def as_rnn(self):
        """The form torch's GRU / LSTM take."""
        return self.h if self.c is None else (self.h, self.c)

    def masked(self, keep: Tensor) -> RecurrentState:
        """The state with the histories where `keep` [N] is False zeroed."""
        k = keep.to(self.h.dtype)[None, :, None]
        return RecurrentState(self.h * k, None if self.c is None else self.c * k)


class RecurrentModel(FamilyModel):
    """GRU / LSTM over step tokens that predicts the learner's next action."""

    config_class = RecurrentConfig
    base_model_prefix = "recurrent"
    uses_window = False
    supports_world_model = True

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.embed = nn.Linear(config.token_dim, d)
        self.rnn = CELLS[config.cell](d, d, config.num_layers, batch_first=True)
        self.action_head = nn.Linear(d, config.num_actions)
        self.value_head = nn.Linear(d, 1) if config.value_head else None
        self.world_model = self.make_world_model(d)
        self.post_init()

    def _rnn(self, x: Tensor, state: RecurrentState | None):
        out, new = self.rnn(x, None if state is None else state.as_rnn())
        return out, (RecurrentState(*new) if isinstance(new, tuple) else RecurrentState(new))

    def _run(self, x: Transitions, state: RecurrentState | None):
        """Aligned steps [B, K] -> top-layer outputs [B, K, d] and the new state.

        memory "none": every step from a zero state (one batched call over B*K steps);
        "episode": the state zeroed where an episode starts, so the sequence runs in segments
        between the columns where any row starts one (RL²'s lockstep episodes: one segment per
        episode).
        """
        tokens = self.embed(self.hide(token_features(x, self.config.num_actions,
                                                     self.config.obs_levels)))  # [B, K, d]
        b, k, d = tokens.shape
        memory = self.config.memory
        if memory == "none":
            out, new = self._rnn(tokens.reshape(b * k, 1, d), None)
            return out.reshape(b, k, d), RecurrentState(*(
                None if v is None else torch.zeros_like(v[:, :b]) for v in (new.h, new.c)))
        if memory == "history":
            return self._rnn(tokens, state)
        starts = x.episode_starts.bool()  # [B, K]
        cuts = [0, *(starts[:, 1:].any(0).nonzero()[:, 0] + 1).tolist(), k]
        outs = []
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            if state is not None:
                state = state.masked(~starts[:, lo])
            out, state = self._rnn(tokens[:, lo:hi], state)
            outs.append(out)
        return torch.cat(outs, dim=1), state

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
        values = None if self.value_head is None else self.value_head(out)[..., 0]
        return self.with_world_model(
            FamilyOutput(loss=self.action_loss(logits, targets, attention_mask), logits=logits,
                         values=values, last_hidden_state=out), x, attention_mask)

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
        return StepOutput(self.action_head(out[:, -1]).float(), features, state,
                          hidden=out[:, -1])

    def select_state(self, state: RecurrentState, index: Tensor,
                     room: int | None = None) -> RecurrentState:
        """Copies of the histories `index` [M] (`room` is a window's notion: unused)."""
        return RecurrentState(state.h.index_select(1, index),
                              None if state.c is None else state.c.index_select(1, index))

    def flops_per_token(self, context: int) -> float:
        """Analytic training FLOPs per step (forward + backward = 3x forward)."""
        c = self.config
        d, gates = c.hidden_size, 3 if c.cell == "gru" else 4
        forward = (2 * c.token_dim * d + c.num_layers * 2 * gates * 2 * d * d
                   + 2 * d * c.num_actions)
        return 3.0 * forward
