"""The Algorithm Distillation model: one token per transition, a transformers decoder backbone.

Token t embeds (o_t, a_{t-1}, r_{t-1}, episode-start flag) with one fused linear layer; the
backbone is a `transformers` LlamaModel fed through `inputs_embeds`; the head predicts a_t.
Positions are rotary and relative, so a window that slides along a long history needs no
position bookkeeping beyond continuing the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ModelOutput


class ADConfig(PreTrainedConfig):
    """Shape of the model and the env family it acts in."""

    model_type = "icl_rl_ad"

    def __init__(
        self,
        obs_dim: int = 1,
        num_actions: int = 2,
        obs_levels: list[int] | None = None,
        env_name: str = "",
        env_params: dict | None = None,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        max_context: int = 256,
        dropout: float = 0.0,
        rope_theta: float = 10000.0,
        hidden_inputs: list[str] | None = None,
        **kwargs,
    ) -> None:
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        # Per observation dimension: number of integer levels to one-hot encode (grid
        # coordinates, wall bits), or 0 to feed the value as is. None: all as is.
        self.obs_levels = list(obs_levels) if obs_levels else None
        self.env_name = env_name  # family the model was trained for; eval refuses others
        self.env_params = dict(env_params or {})
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_context = max_context  # transitions (= tokens) per training window
        self.dropout = dropout
        self.rope_theta = rope_theta
        # parts of the token zeroed before the embedding: ablations of what in-context RL needs
        self.hidden_inputs = list(hidden_inputs or [])
        super().__init__(**kwargs)

    def backbone_config(self) -> LlamaConfig:
        """The decoder's config: no vocabulary, no token ids; inputs come as embeddings."""
        return LlamaConfig(
            vocab_size=1,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_context,
            attention_dropout=self.dropout,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=False,
        )

    @property
    def obs_features(self) -> int:
        """Width of the encoded observation."""
        if not self.obs_levels:
            return self.obs_dim
        return sum(level if level else 1 for level in self.obs_levels)

    @property
    def token_dim(self) -> int:
        """Width of a raw token: obs, one-hot previous action, previous reward, two flags."""
        return self.obs_features + self.num_actions + 3

    TOKEN_PARTS = ("observation", "action", "reward", "episode_start")  # hideable parts

    def token_slices(self) -> dict[str, slice]:
        """Where each of TOKEN_PARTS lies in a raw token (see transition_tokens)."""
        o, a = self.obs_features, self.num_actions
        bounds = (0, o, o + a, o + a + 1, o + a + 2)
        return {name: slice(bounds[i], bounds[i + 1]) for i, name in enumerate(self.TOKEN_PARTS)}

    def input_mask(self) -> list[float]:
        """1 for the token features the model sees, 0 for those in `hidden_inputs`."""
        mask = [1.0] * self.token_dim
        for name in self.hidden_inputs:
            part = self.token_slices()[name]
            mask[part] = [0.0] * (part.stop - part.start)
        return mask


def encode_obs(obs: Tensor, obs_levels: list[int] | None) -> Tensor:
    """Observations [..., obs_dim] -> features: one-hot where a dimension has integer levels.

    A grid coordinate as one number forces the network to learn equality of positions from a
    linear feature; one-hot cells make "same cell as where the reward was" a dot product.
    """
    if not obs_levels:
        return obs
    parts = []
    for i, level in enumerate(obs_levels):
        x = obs[..., i]
        if level:
            parts.append(F.one_hot(x.long().clamp(0, level - 1), level).to(obs.dtype))
        else:
            parts.append(x[..., None])
    return torch.cat(parts, dim=-1)


def transition_tokens(obs: Tensor, prev_action: Tensor, prev_reward: Tensor,
                      episode_start: Tensor, num_actions: int,
                      obs_levels: list[int] | None = None) -> Tensor:
    """Raw token features [..., token_dim] for o_t and the transition that led to it.

    obs [..., obs_dim]; prev_action [...] int64 with -1 at the start of a history (no previous
    action); prev_reward [...]; episode_start [...] bool, True where o_t opens an episode.
    """
    has_prev = prev_action >= 0
    one_hot = F.one_hot(prev_action.clamp(min=0), num_actions).to(obs.dtype)
    one_hot = one_hot * has_prev[..., None]
    return torch.cat([encode_obs(obs, obs_levels), one_hot,
                      prev_reward[..., None].to(obs.dtype),
                      episode_start[..., None].to(obs.dtype),
                      (~has_prev)[..., None].to(obs.dtype)], dim=-1)


def shift_transitions(actions: Tensor, rewards: Tensor, dones: Tensor,
                      first: tuple[Tensor, Tensor, Tensor] | None = None):
    """Previous action / reward / episode-start aligned with o_t, for histories [B, T].

    `first` gives (a, r, done) of the step before the window, [B] each; None means the
    window starts the history.
    """
    b = actions.shape[0]
    if first is None:
        first = (actions.new_full((b,), -1), rewards.new_zeros(b), dones.new_ones(b))
    prev_a = torch.cat([first[0][:, None], actions[:, :-1]], dim=1)
    prev_r = torch.cat([first[1][:, None], rewards[:, :-1]], dim=1)
    start = torch.cat([first[2][:, None], dones[:, :-1]], dim=1)
    return prev_a, prev_r, start


@dataclass
class ADOutput(ModelOutput):
    """Action logits, the loss when targets are given, and the decoder's cache."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    cache: object | None = None
    hidden_states: tuple[Tensor, ...] | None = None


class ADModel(PreTrainedModel):
    """Decoder over transition tokens that predicts the learner's next action."""

    config_class = ADConfig
    base_model_prefix = "ad"
    _supports_sdpa = True
    main_input_name = "tokens"

    def __init__(self, config: ADConfig) -> None:
        super().__init__(config)
        self.embed = nn.Linear(config.token_dim, config.hidden_size)  # one fused embedding
        self.backbone = LlamaModel(config.backbone_config())
        self.backbone.embed_tokens = None  # no vocabulary: inputs always come as embeddings
        self.action_head = nn.Linear(config.hidden_size, config.num_actions)
        self.post_init()

    def forward(
        self,
        tokens: Tensor,
        actions: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
    ) -> ADOutput:
        """tokens [B, T, token_dim] -> logits [B, T, A]; loss if target `actions` [B, T].

        `attention_mask` [B, T] is 1 for real steps and 0 for padding; padded steps get no loss.
        """
        if self.config.hidden_inputs:  # an ablation: some parts of the token are never seen
            tokens = tokens * tokens.new_tensor(self.config.input_mask())
        x = self.embed(tokens)  # [B, T, d]
        out = self.backbone(inputs_embeds=x, attention_mask=attention_mask,
                            position_ids=position_ids, cache=cache, use_cache=use_cache,
                            output_hidden_states=output_hidden_states)
        logits = self.action_head(out.last_hidden_state)  # [B, T, A]
        loss = None
        if actions is not None:
            target = actions.long()
            if attention_mask is not None:
                target = target.masked_fill(attention_mask == 0, -100)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                   target.reshape(-1), ignore_index=-100)
        return ADOutput(loss=loss, logits=logits, cache=out.cache,
                        hidden_states=out.hidden_states)

    def flops_per_token(self, context: int) -> float:
        """Analytic training FLOPs per token (forward + backward = 3x forward)."""
        c = self.config
        d, f, L = c.hidden_size, c.intermediate_size, c.num_layers
        per_layer = 2 * (4 * d * d + 3 * d * f) + 2 * 2 * context * d  # matmuls + attention
        forward = L * per_layer + 2 * c.token_dim * d + 2 * d * c.num_actions
        return 3.0 * forward
