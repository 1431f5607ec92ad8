"""The Decision-Pretrained Transformer family (Lee et al. 2023): act from a set of transitions.

DPT's input is an in-context dataset of transitions (s, a, r, s') from one task and a query
state; it predicts the oracle's action at the query (the label of every pretraining example is
the env oracle's, not a learner's). As in the reference implementation the query comes first,
then the transitions, through a causal decoder (the same transformers LlamaModel backbone as
AD, fed through `inputs_embeds`): the output at position j is the prediction for the query given
the first j transitions, so one forward trains every prefix of the context at once (loss at each
prefix, averaged; position 0, the empty context, is trained too: it is the first action).

Each transition is one self-contained token: the encoded s, one-hot a, r, the encoded s' and a
flag saying s' is known. The token path is still `icl_rl.transitions`: the transition at
aligned position j is (o_{j-1}, a_{j-1}, r_{j-1}, o_j), with s' unknown where o_j opens a new
episode (a history stores no observation past an episode's end). Training windows of K
aligned steps therefore carry K - 1 transitions; the batch adds `query_observations` [B,
obs_dim] and, as targets, the oracle's action there (`icl_rl.data.WindowDataset(queries=True)`).

Acting (online deployment): the model's own interactions fill the context, by default those of
finished episodes (for a bandit, whose episode is one pull, every pull so far; in a gridworld,
the past episodes: the context is fixed during an episode, as in the paper) and the query is
the current observation. The state keeps a KV cache of [query, transitions]: while the query
is unchanged (always, for a bandit) new transitions are appended as in decoding; a new query
recomputes the context (one forward of the window). Offline deployment: `frozen_context`
fixes the context to a roll-in's transitions; greedy actions come from `ModelAgent(greedy=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.cache_utils import DynamicCache

from icl_rl.errors import IclRlError
from icl_rl.models.ad import ADConfig, ADModel, kv_cache_bytes, last_features
from icl_rl.models.base import FamilyOutput, StepOutput
from icl_rl.transitions import Transitions, encode_obs, obs_features

SCOPES = ("episodes", "steps")


class DPTConfig(ADConfig):
    """DPT: a Llama decoder over [query, transitions]. Options: the decoder's shape and what
    fills the context when acting online."""

    model_type = "icl_rl_dpt"

    def __init__(self, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                 intermediate_size: int | None = None, dropout: float = 0.0,
                 rope_theta: float = 10000.0, context_scope: str = "episodes",
                 num_kv_heads: int | None = None, **kwargs) -> None:
        if context_scope not in SCOPES:
            raise IclRlError(f"context_scope must be one of {', '.join(SCOPES)} (what fills the "
                             f"context online: finished episodes, or every step), got "
                             f"{context_scope!r}")
        self.context_scope = context_scope
        super().__init__(hidden_size, num_layers, num_heads, intermediate_size, dropout,
                         rope_theta, num_kv_heads=num_kv_heads, **kwargs)

    @property
    def token_dim(self) -> int:
        """s, one-hot a, r, s', s'-known flag, query flag."""
        return 2 * obs_features(self.obs_dim, self.obs_levels) + self.num_actions + 3

    def parts(self) -> dict[str, list[slice]]:
        """Where each hideable input lies in a token (an observation is s, s' and the query)."""
        o, a = obs_features(self.obs_dim, self.obs_levels), self.num_actions
        return {"observation": [slice(0, o), slice(o + a + 1, 2 * o + a + 1)],
                "action": [slice(o, o + a)], "reward": [slice(o + a, o + a + 1)],
                "episode_start": [slice(2 * o + a + 1, 2 * o + a + 2)]}

    def describe(self) -> str:
        """Shape in words."""
        return (f"{self.num_layers}-layer, {self.hidden_size}-wide Decision-Pretrained "
                "Transformer (transformers LlamaModel backbone)")


@dataclass
class DPTState:
    """Acting state of N tasks: the context's transition tokens and a KV cache over them."""

    window: int  # tokens: the query and up to window - 1 transitions
    use_cache: bool
    decode_attention: str | None
    scope: str
    frozen: bool
    context: Tensor  # [N, C, token_dim] transitions in the context
    pending: list[Tensor] = field(default_factory=list)  # transitions of the current episode
    last_obs: Tensor | None = None
    cache: DynamicCache | None = None
    cached_query: Tensor | None = None  # query token the cache was built for
    cached_len: int = 0  # transitions in the cache
    last: StepOutput | None = None  # the output while nothing has changed

    def cache_bytes(self) -> int:
        """Bytes held by the KV cache."""
        return kv_cache_bytes(self.cache)


class DPTModel(ADModel):
    """Decoder over [query, transitions] that predicts the oracle's action at the query."""

    config_class = DPTConfig
    base_model_prefix = "dpt"
    # Batches carry a query state per window, and the targets are the oracle's action there.
    needs_queries: ClassVar[bool] = True
    targets: ClassVar[tuple[str, ...]] = ("optimal_actions",)
    # Its input ends in a query, not in the next step: the heads' labels have no place in it.
    supports_world_model: ClassVar[bool] = False

    # -- tokens ------------------------------------------------------------------------------
    def transition_tokens(self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor,
                          next_known: Tensor) -> Tensor:
        """Transitions [...] -> tokens [..., token_dim]; s' is zero where it is unknown."""
        c = self.config
        known = next_known.to(obs.dtype)[..., None]
        tokens = torch.cat([encode_obs(obs, c.obs_levels),
                            F.one_hot(actions.long().clamp(min=0), c.num_actions).to(obs.dtype),
                            rewards.to(obs.dtype)[..., None],
                            encode_obs(next_obs, c.obs_levels) * known, known,
                            torch.zeros_like(known)], dim=-1)
        return self.hide(tokens)

    def query_tokens(self, obs: Tensor) -> Tensor:
        """Query states [..., obs_dim] -> tokens: the state in s's place and the query flag."""
        c = self.config
        enc = encode_obs(obs.float(), c.obs_levels)
        rest = enc.new_zeros(*enc.shape[:-1], c.token_dim - enc.shape[-1] - 1)
        return self.hide(torch.cat([enc, rest, torch.ones_like(enc[..., :1])], dim=-1))

    def window_tokens(self, x: Transitions, query_observations: Tensor) -> Tensor:
        """Aligned windows [B, K] and queries [B, obs_dim] -> [query, K - 1 transitions]."""
        obs = x.observations.float()
        transitions = self.transition_tokens(obs[:, :-1], x.prev_actions[:, 1:],
                                             x.prev_rewards[:, 1:], obs[:, 1:],
                                             ~x.episode_starts[:, 1:])
        return torch.cat([self.query_tokens(query_observations)[:, None], transitions], dim=1)

    def forward(self, observations: Tensor, prev_actions: Tensor, prev_rewards: Tensor,
                episode_starts: Tensor, targets: Tensor | None = None,
                attention_mask: Tensor | None = None, query_observations: Tensor | None = None,
                output_hidden_states: bool = False) -> FamilyOutput:
        """Windows [B, K] and queries [B, obs_dim] -> logits [B, K, A]: position j predicts
        the oracle's action at the query from the first j transitions; the loss against
        `targets` [B, K] (the query's label at every position) averages every prefix."""
        if query_observations is None:
            raise IclRlError("a DPT batch needs query_observations (windows made with "
                             "WindowDataset(..., queries=True), as icl-rl train does for it)")
        x = Transitions(observations, prev_actions, prev_rewards, episode_starts)
        return self._decode(self.window_tokens(x, query_observations), targets, attention_mask,
                            output_hidden_states=output_hidden_states)

    # -- acting ------------------------------------------------------------------------------
    def init_state(self, n: int, window: int | None = None, use_cache: bool = True,
                   decode_attention: str | None = "eager",
                   frozen_context: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
                   ) -> DPTState:
        """An empty context for n tasks (online), or a fixed one (offline).

        `frozen_context`: (observations [n, m, obs_dim], actions, rewards, dones [n, m]) of a
        roll-in on the same tasks; its m transitions are the whole context and the model's
        own steps never enter it.
        """
        window = window or self.config.max_context
        if window < 1:
            raise IclRlError(f"window must be >= 1, got {window}")
        empty = torch.zeros(n, 0, self.config.token_dim, device=self.device)
        state = DPTState(window, use_cache, decode_attention, self.config.context_scope,
                         frozen_context is not None, empty)
        if frozen_context is not None:
            state.context = self.context_tokens(*frozen_context, n=n)[:, -(window - 1):]
            if window == 1:
                state.context = empty
        return state

    def context_tokens(self, observations: Tensor, actions: Tensor, rewards: Tensor,
                       dones: Tensor, n: int) -> Tensor:
        """Transition tokens [n, m, token_dim] of a roll-in's steps (s' known within an
        episode, up to its last recorded step)."""
        if observations.ndim != 3 or observations.shape[0] != n or actions.shape != \
                observations.shape[:2]:
            raise IclRlError(f"frozen_context: need observations [{n}, m, obs_dim] and actions, "
                             f"rewards, dones [{n}, m]; got {tuple(observations.shape)} and "
                             f"{tuple(actions.shape)}")
        obs = observations.to(self.device).float()
        nxt = torch.cat([obs[:, 1:], obs[:, -1:]], dim=1)
        known = ~dones.to(self.device).bool()
        known[:, -1] = False
        return self.transition_tokens(obs, actions.to(self.device), rewards.to(self.device),
                                      nxt, known)

    @torch.no_grad()
    def step(self, inputs: Transitions, state: DPTState,
             output_features: bool = False) -> StepOutput:
        """Add the transition that led here to the context (when its episode is over, or at
        once with context_scope "steps"), then predict at the current observation."""
        obs = inputs.observations.float()
        if not state.frozen:
            if state.last_obs is not None:
                state.pending.append(self.transition_tokens(
                    state.last_obs, inputs.prev_actions, inputs.prev_rewards, obs,
                    ~inputs.episode_starts))
            if state.pending and (state.scope == "steps" or bool(inputs.episode_starts.all())):
                state.context = torch.cat([state.context, *[t[:, None] for t in state.pending]],
                                          dim=1)
                state.pending = []
            state.last_obs = obs
        keep = state.window - 1
        if state.context.shape[1] > keep:  # the oldest transitions slide out: positions shift
            state.context = state.context[:, state.context.shape[1] - keep:]
            state.cache = None
        query = self.query_tokens(obs)
        reuse = (state.use_cache and state.cache is not None
                 and torch.equal(query, state.cached_query))
        if reuse:
            new = state.context[:, state.cached_len:]
            if new.shape[1] == 0 and state.last is not None and (
                    state.last.features is not None or not output_features):
                return StepOutput(state.last.logits, state.last.features, state)
            positions = torch.arange(state.cached_len + 1, state.cached_len + 1 + new.shape[1],
                                     device=new.device).expand(new.shape[0], -1)
            single = new.shape[1] == 1
            with self._attention_for_decoding(state.decode_attention if single else None,
                                              new.device):
                out = self._decode(new, cache=state.cache, use_cache=True,
                                   position_ids=positions, output_hidden_states=output_features)
        else:
            tokens = torch.cat([query[:, None], state.context], dim=1)
            state.cache = DynamicCache(config=self.backbone.config) if state.use_cache else None
            out = self._decode(tokens, cache=state.cache, use_cache=state.use_cache,
                               output_hidden_states=output_features)
            state.cached_query = query
        state.cached_len = state.context.shape[1]
        features = last_features(out) if output_features else None
        state.last = StepOutput(out.logits[:, -1].float(), features, None)
        return StepOutput(state.last.logits, features, state)
