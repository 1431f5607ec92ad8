"""A trained model as a batched in-context Agent, decoding with a KV cache.

Each step appends one token per task (o_t with the transition that led to it) and reads the
action logits at that token: one forward of N tokens, never recomputing the past. Past the
model's context the cache becomes a ring buffer of the last `window` tokens: the newest token
overwrites the oldest slot. Attention of a single new query over the cached keys does not
depend on their order, and rotary position encodings are relative, so the ring needs no
reordering and positions simply keep counting.

Known difference from recomputing the same window from scratch: a cached key/value of layer
l >= 1 was computed while older (now evicted) tokens were still visible, so after the first
eviction the two differ slightly; before it they are equal up to float error (a test checks
both).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer

from icl_rl import rng
from icl_rl.errors import IclRlError
from icl_rl.models.ad import ADModel, transition_tokens


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


def ring_cache(model: ADModel, window: int) -> DynamicCache:
    """A cache whose every layer is a RingLayer of `window` tokens."""
    cache = DynamicCache(config=model.backbone.config)
    cache.layers = [RingLayer(window) for _ in range(model.config.num_layers)]
    return cache


class ModelAgent:
    """A trained AD model acting in context on N tasks at once (the Agent protocol)."""

    def __init__(self, model: ADModel, greedy: bool = False, window: int | None = None,
                 use_cache: bool = True, temperature: float = 1.0,
                 decode_attention: str | None = "eager") -> None:
        self.model = model.eval()
        # One query over the cached keys is a batch of matrix-vector products; on a CPU plain
        # matmul attention ("eager") reads the cache faster than SDPA's flash kernel (see
        # docs/benchmarks.md). Used for cached decoding on CPU only; None keeps the model's.
        self.decode_attention = decode_attention
        self.greedy = greedy
        self.window = window or model.config.max_context
        if self.window < 1:
            raise IclRlError(f"window must be >= 1, got {self.window}")
        self.use_cache = use_cache  # False: recompute the whole window every step (reference)
        self.temperature = temperature
        self.device = next(model.parameters()).device
        self.num_actions = model.config.num_actions
        self.last_logits: Tensor | None = None

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Empty context for n tasks."""
        if n < 1:
            raise IclRlError("need at least one task")
        self.n = n
        self.generator = generator
        self.t = 0
        self.prev_action = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self.prev_reward = torch.zeros(n, device=self.device)
        self.episode_start = torch.ones(n, dtype=torch.bool, device=self.device)
        self.cache = ring_cache(self.model, self.window) if self.use_cache else None
        self.tokens: list[Tensor] = []  # recompute mode only

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Append this step's token, read the action distribution, choose."""
        obs = obs.to(self.device, torch.float32)
        token = transition_tokens(obs, self.prev_action, self.prev_reward, self.episode_start,
                                  self.num_actions, self.model.config.obs_levels)[:, None]
        if self.use_cache:
            pos = torch.full((self.n, 1), self.t, device=self.device)
            with self._attention_for_decoding():
                out = self.model(token, cache=self.cache, use_cache=True, position_ids=pos)
        else:
            self.tokens = (self.tokens + [token])[-self.window:]
            out = self.model(torch.cat(self.tokens, dim=1))
        self.t += 1
        logits = out.logits[:, -1].float()  # [N, A]
        self.last_logits = logits
        if self.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return rng.categorical(self.generator, probs.cpu()).to(self.device)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        """Remember the transition: it goes into the next token."""
        self.prev_action = action.to(self.device).long()
        self.prev_reward = reward.to(self.device).float()
        self.episode_start = done.to(self.device).bool()

    @contextmanager
    def _attention_for_decoding(self):
        """Switch the backbone to `decode_attention` for one cached step on CPU."""
        config = self.model.backbone.config
        before = config._attn_implementation
        switch = self.decode_attention is not None and self.device.type == "cpu"
        if switch:
            config._attn_implementation = self.decode_attention
        try:
            yield
        finally:
            if switch:
                config._attn_implementation = before

    def cache_bytes(self) -> int:
        """Bytes held by the KV cache (flat once the window is full)."""
        if self.cache is None:
            return 0
        return sum(x.numel() * x.element_size() for layer in self.cache.layers
                   if layer.is_initialized for x in (layer.keys, layer.values))
