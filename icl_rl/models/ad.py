"""The Algorithm Distillation family: one token per step, a transformers decoder backbone.

Token t embeds the step's features (o_t, a_{t-1}, r_{t-1}, episode start; see
`icl_rl.transitions`) with one fused linear layer; the backbone is a `transformers` LlamaModel
fed through `inputs_embeds`; the head predicts a_t. Positions are rotary and relative, so a
window that slides along a long history needs no position bookkeeping beyond the count.

Acting state: a ring KV cache of the last `window` tokens. Each step appends one token per task
and reads the action logits there: one forward of N tokens, never recomputing the past. Past
the window the newest token overwrites the oldest slot; attention of a single query over the
cached keys does not depend on their order, and rotary encodings are relative, so the ring
needs no reordering. Known difference from recomputing the same window: a cached key/value of
layer l >= 1 was computed while older (now evicted) tokens were visible, so after the first
eviction the two differ slightly; before it they are equal up to float error (a test checks).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaModel
from transformers.cache_utils import DynamicCache, DynamicLayer

from icl_rl.errors import IclRlError
from icl_rl.models.base import FamilyConfig, FamilyModel, FamilyOutput, StepOutput
from icl_rl.transitions import Transitions, token_features


class ADConfig(FamilyConfig):
    """AD: a Llama decoder over one token per step. Options: the decoder's shape.

    `num_kv_heads` (default `num_heads`): key/value heads shared by the query heads
    (grouped-query attention; 1 is multi-query). Fewer k/v projections per token: at
    `num_kv_heads` 1 and 4 heads the attention's projections do 5/8 of the matrix work.
    """

    model_type = "icl_rl_ad"

    def __init__(self, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                 intermediate_size: int | None = None, dropout: float = 0.0,
                 rope_theta: float = 10000.0, value_head: bool = False,
                 num_kv_heads: int | None = None, **kwargs) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.dropout = dropout  # attention dropout
        self.rope_theta = rope_theta
        self.value_head = bool(value_head)  # a state-value output (RL² trains one; AD no)
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("num_kv_heads", self.num_kv_heads)):
            if not isinstance(value, int) or value < 1:
                raise IclRlError(f"{name} must be a positive integer, got {value!r}")
        if hidden_size % num_heads:
            raise IclRlError(f"hidden_size {hidden_size} must be divisible by num_heads "
                             f"{num_heads}")
        if num_heads % self.num_kv_heads:
            raise IclRlError(f"num_kv_heads must be a positive integer that divides num_heads "
                             f"{num_heads} (1 to share one key/value head), got "
                             f"{self.num_kv_heads!r}")
        super().__init__(**kwargs)

    def backbone_config(self) -> LlamaConfig:
        """The decoder's config: no vocabulary, no token ids; inputs come as embeddings."""
        return LlamaConfig(
            vocab_size=1,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_context,
            attention_dropout=self.dropout,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=False,
        )

    def describe(self) -> str:
        """Shape in words."""
        heads = ", world-model heads" if self.world_model_weight else ""
        shared = (f" over {self.num_kv_heads} key/value head"
                  f"{'s' if self.num_kv_heads > 1 else ''}"
                  if self.num_kv_heads != self.num_heads else "")
        return (f"{self.num_layers}-layer, {self.hidden_size}-wide decoder with "
                f"{self.num_heads} attention head{'s' if self.num_heads > 1 else ''}{shared} "
                f"(transformers LlamaModel backbone{heads})")


class RingLayer(DynamicLayer):
    """A cache layer of fixed capacity: preallocated, written in place, oldest slot reused."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.count = 0  # tokens ever written

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        """Allocate [B, H, capacity, head_dim] once."""
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.keys = key_states.new_zeros(b, h, self.capacity, d)
        self.values = value_states.new_zeros(b, h, self.capacity, d)
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
        """Write the new tokens' keys/values into their slots; return the valid part."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        for i in range(key_states.shape[-2]):  # one token per step in decoding
            slot = self.count % self.capacity
            self.keys[:, :, slot] = key_states[:, :, i]
            self.values[:, :, slot] = value_states[:, :, i]
            self.count += 1
        n = min(self.count, self.capacity)
        return self.keys[:, :, :n], self.values[:, :, :n]

    def get_seq_length(self) -> int:
        """Tokens currently held."""
        return min(self.count, self.capacity)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Keys visible to the query after the update."""
        return min(self.count + query_length, self.capacity), 0

    def get_max_length(self) -> int:
        """Capacity."""
        return self.capacity

    def reset(self) -> None:
        """Forget everything."""
        self.count = 0
        super().reset()


def kv_cache_bytes(cache: DynamicCache | None) -> int:
    """Bytes held by a KV cache's keys and values (0 without one)."""
    if cache is None:
        return 0
    return sum(x.numel() * x.element_size() for layer in cache.layers
               if layer.is_initialized for x in (layer.keys, layer.values))


def last_features(out: FamilyOutput) -> Tensor:
    """The last position's state after each layer [N, L, d] of a forward's hidden states."""
    return torch.stack([h[:, -1] for h in out.hidden_states[1:]], dim=1)


@dataclass
class ADState:
    """Acting state of N histories: a ring KV cache (or, as a reference, the raw window)."""

    window: int
    cache: DynamicCache | None  # None: recompute the whole window every step
    decode_attention: str | None
    t: int = 0  # steps taken
    tokens: list[Tensor] = field(default_factory=list)  # recompute mode only

    def cache_bytes(self) -> int:
        """Bytes held by the KV cache (flat once the window is full)."""
        return kv_cache_bytes(self.cache)


class ADModel(FamilyModel):
    """Decoder over step tokens that predicts the learner's next action."""

    config_class = ADConfig
    base_model_prefix = "ad"
    _supports_sdpa = True
    supports_world_model = True

    def __init__(self, config: ADConfig) -> None:
        super().__init__(config)
        self.embed = nn.Linear(config.token_dim, config.hidden_size)  # one fused embedding
        self.backbone = LlamaModel(config.backbone_config())
        self.backbone.embed_tokens = None  # no vocabulary: inputs always come as embeddings
        self.action_head = nn.Linear(config.hidden_size, config.num_actions)
        self.value_head = (nn.Linear(config.hidden_size, 1)
                           if getattr(config, "value_head", False) else None)
        self.world_model = self.make_world_model(config.hidden_size)
        self.post_init()

    def tokens(self, x: Transitions) -> Tensor:
        """Aligned transitions [...] -> token features [..., token_dim], hidden parts zeroed."""
        return self.hide(token_features(x, self.config.num_actions, self.config.obs_levels))

    def forward(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor,
                episode_starts: Tensor, targets: Tensor | None = None,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                cache=None, use_cache: bool = False,
                output_hidden_states: bool = False) -> FamilyOutput:
        """Aligned windows [B, K] -> logits [B, K, A]; the loss against `targets` [B, K].

        `attention_mask` [B, K] is 1 for real steps and 0 for padding; padded steps get no loss.
        """
        x = Transitions(observations, prev_actions, prev_rewards, episode_starts)
        out = self._decode(self.tokens(x), targets, attention_mask, position_ids, cache,
                           use_cache, output_hidden_states)
        return self.with_world_model(out, x, attention_mask)

    def _decode(self, tokens: Tensor, targets=None, attention_mask=None, position_ids=None,
                cache=None, use_cache=False, output_hidden_states=False) -> FamilyOutput:
        """tokens [B, K, token_dim] through the embedding, the backbone and the head."""
        out = self.backbone(inputs_embeds=self.embed(tokens), attention_mask=attention_mask,
                            position_ids=position_ids, cache=cache, use_cache=use_cache,
                            output_hidden_states=output_hidden_states)
        logits = self.action_head(out.last_hidden_state)  # [B, K, A]
        values = (None if self.value_head is None
                  else self.value_head(out.last_hidden_state)[..., 0])  # [B, K]
        return FamilyOutput(loss=self.action_loss(logits, targets, attention_mask),
                            logits=logits, values=values, hidden_states=out.hidden_states,
                            last_hidden_state=out.last_hidden_state)

    # -- acting ----------------------------------------------------------------------------
    def init_state(self, n: int, window: int | None = None, use_cache: bool = True,
                   decode_attention: str | None = "eager") -> ADState:
        """A ring cache of `window` tokens (default: the training context) for n tasks.

        `decode_attention`: one query over the cached keys is a batch of matrix-vector
        products; on a CPU plain matmul attention ("eager") reads the cache faster than SDPA's
        flash kernel (docs/benchmarks.md). Used for cached steps on CPU only; None keeps the
        model's own. `use_cache` False recomputes the window every step (a reference).
        """
        window = window or self.config.max_context
        if window < 1:
            raise IclRlError(f"window must be >= 1, got {window}")
        cache = None
        if use_cache:
            cache = DynamicCache(config=self.backbone.config)
            cache.layers = [RingLayer(window) for _ in range(self.config.num_layers)]
        return ADState(window, cache, decode_attention)

    @torch.no_grad()
    def step(self, inputs: Transitions, state: ADState,
             output_features: bool = False) -> StepOutput:
        """Append one token per task; logits [N, A] (and per-layer features [N, L, d])."""
        token = self.tokens(inputs)[:, None]  # [N, 1, token_dim]
        if state.cache is not None:
            pos = torch.full((token.shape[0], 1), state.t, device=token.device)
            with self._attention_for_decoding(state.decode_attention, token.device):
                out = self._decode(token, cache=state.cache, use_cache=True, position_ids=pos,
                                   output_hidden_states=output_features)
        else:
            state.tokens = (state.tokens + [token])[-state.window:]
            out = self._decode(torch.cat(state.tokens, dim=1),
                               output_hidden_states=output_features)
        state.t += 1
        features = last_features(out) if output_features else None
        return StepOutput(out.logits[:, -1].float(), features, state,
                          hidden=out.last_hidden_state[:, -1])

    def select_state(self, state: ADState, index: Tensor, room: int | None = None) -> ADState:
        """Copies of the histories `index` [M]: their cache rows (a ring keeps its count).

        `room`: tokens the copy will take before it is dropped (lookahead's depth); while the
        ring is not full the copy then holds only the filled slots and that room, not the
        whole window (the copy is most of a lookahead step's cost).
        """
        if state.cache is None:
            return ADState(state.window, None, state.decode_attention, state.t,
                           [x.index_select(0, index) for x in state.tokens])
        cache = DynamicCache(config=self.backbone.config)
        cache.layers = []
        for old in state.cache.layers:
            size = old.capacity
            if room is not None and old.count + room <= old.capacity:
                size = old.count + room  # no wrap before the copy is dropped
            layer = RingLayer(size)
            if old.is_initialized:
                kept = min(old.count, size)
                for name in ("keys", "values"):
                    src = getattr(old, name)
                    new = src.new_empty(len(index), *src.shape[1:2], size, src.shape[-1])
                    torch.index_select(src[:, :, :kept], 0, index, out=new[:, :, :kept])
                    setattr(layer, name, new)
                layer.device, layer.is_initialized = old.device, True
            layer.count = old.count
            cache.layers.append(layer)
        return ADState(state.window, cache, state.decode_attention, state.t)

    @contextmanager
    def _attention_for_decoding(self, implementation: str | None, device: torch.device):
        """Switch the backbone to `implementation` for one cached step on CPU."""
        config = self.backbone.config
        before = config._attn_implementation
        switch = implementation is not None and device.type == "cpu"
        if switch:
            config._attn_implementation = implementation
        try:
            yield
        finally:
            if switch:
                config._attn_implementation = before

    def flops_per_token(self, context: int) -> float:
        """Analytic training FLOPs per token (forward + backward = 3x forward)."""
        c = self.config
        d, f, L = c.hidden_size, c.intermediate_size, c.num_layers
        kv = d * c.num_kv_heads // c.num_heads  # width of the keys (and of the values)
        per_layer = 2 * (2 * d * d + 2 * d * kv + 3 * d * f) + 2 * 2 * context * d  # + attention
        forward = L * per_layer + 2 * c.token_dim * d + 2 * d * c.num_actions
        return 3.0 * forward
