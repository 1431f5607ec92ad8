"""Contract tests over every registered model family: acting step by step equals the training
forward, save and reload through AutoModel, the acting state and window rules."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from icl_rl.errors import IclRlError
from icl_rl.models import FAMILIES, build_model
from icl_rl.policy import ModelAgent
from icl_rl.transitions import Transitions, sequences

ENV = {"name": "dark_room", "params": {"size": 9, "episode_len": 20},
       "spec": {"obs_dim": 2, "num_actions": 5, "obs_levels": [9, 9]}}
SMALL = {"ad": {"hidden_size": 32, "num_layers": 2, "num_heads": 4},
         "gru": {"hidden_size": 32, "num_layers": 2},
         "dpt": {"hidden_size": 32, "num_layers": 2, "num_heads": 4}}
# Families that predict at every step of the aligned history (DPT predicts at a query state:
# its acting contract is tested in tests/test_dpt.py).
STEP_FAMILIES = ("ad", "gru")


def small(name: str, **common):
    torch.manual_seed(0)
    return build_model(name, ENV, SMALL.get(name, {}), max_context=40, **common).eval()


def history(b: int = 4, t: int = 40) -> Transitions:
    g = torch.Generator().manual_seed(1)
    return sequences(torch.randint(0, 9, (b, t, 2), generator=g).float(),
                     torch.randint(0, 5, (b, t), generator=g), torch.rand(b, t, generator=g),
                     (torch.arange(t) % 20 == 19).expand(b, t))


@pytest.mark.parametrize("name", STEP_FAMILIES)
def test_step_by_step_equals_the_full_forward(name):
    model = small(name)
    x = history()
    with torch.no_grad():
        full = model(**x.as_dict()).logits  # [B, T, A]
    state = model.init_state(4)
    steps = []
    for i in range(40):
        out = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), state,
                         output_features=True)
        state = out.state
        steps.append(out.logits)
        assert out.features.shape == (4, 2, 32)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-4


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_save_and_reload_through_automodel(name, tmp_path):
    model = small(name, hidden_inputs=["reward"], provenance={"dataset": "d"})
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config.hidden_inputs == ["reward"] and loaded.config.provenance == {
        "dataset": "d"}
    for (k, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(),
                              strict=True):
        assert torch.equal(p, q), k


def test_recurrent_state_is_constant_size_and_refuses_a_window():
    model = small("gru")
    agent = ModelAgent(model)
    assert agent.window is None
    agent.reset(3)
    before = agent.state.h.shape
    obs = torch.zeros(3, 2)
    for _ in range(50):  # past any training context: no window, no growth
        a = agent.act(obs)
        agent.observe(obs, a, torch.zeros(3), obs, torch.zeros(3, dtype=torch.bool))
    assert agent.state.h.shape == before == (2, 3, 32)
    with pytest.raises(IclRlError, match="constant-size state, not a window"):
        ModelAgent(model, window=16)
    with pytest.raises(IclRlError, match="cell must be one of gru, lstm"):
        build_model("gru", ENV, {"cell": "rnn"})
    lstm = build_model("gru", ENV, {"cell": "lstm", "hidden_size": 8})
    assert lstm.init_state(2).c.shape == (1, 2, 8)
