"""World-model heads, branching an acting state, lookahead, and their metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.compare import combine
from eval.config import EvalConfig
from eval.evaluate import main as evaluate
from eval.world_model import thinking_time, world_model_accuracy
from icl_rl.envs import make_env
from icl_rl.errors import IclRlError
from icl_rl.models import ADConfig, ADModel, load_model
from icl_rl.models.recurrent import RecurrentConfig, RecurrentModel
from icl_rl.models.world_model import lookahead_values, returns_to_go, window_loss
from icl_rl.policy import ModelAgent
from icl_rl.rollout import History, rollout
from icl_rl.transitions import Transitions, sequences
from training.train import TrainConfig
from training.train import main as train

GRID = dict(obs_dim=2, num_actions=5, obs_levels=[5, 5], env_name="dark_room",
            env_params={"size": 5, "episode_len": 8, "start": "center"})


def ad(weight=1.0, **kw):
    torch.manual_seed(0)
    return ADModel(ADConfig(**GRID, hidden_size=32, num_layers=2, num_heads=2, max_context=40,
                            world_model_weight=weight, **kw)).eval()


def gru(weight=1.0):
    torch.manual_seed(0)
    return RecurrentModel(RecurrentConfig(**GRID, hidden_size=32,
                                          world_model_weight=weight)).eval()


def history(n=4, steps=40, seed=0):
    env = make_env("dark_room", size=5, episode_len=8)
    g = torch.Generator().manual_seed(seed)
    return rollout(env, make_learner_random(env), env.sample_tasks(n, g), steps,
                   agent_generator=torch.Generator().manual_seed(seed + 1))


def make_learner_random(env):
    from icl_rl.learners import make_learner

    return make_learner("random", env)


def test_returns_to_go_sum_to_the_episode_end_and_know_where_it_is_unknown():
    r = torch.tensor([[1.0, 0, 2, 3, 1, 1, 5]])
    d = torch.tensor([[0, 1, 0, 0, 1, 0, 0]]).bool()
    g, known = returns_to_go(r, d)
    assert g.tolist() == [[1.0, 0.0, 6.0, 4.0, 1.0, 6.0, 5.0]]
    assert known.tolist() == [[True, True, True, True, True, False, False]]


def test_window_labels_are_the_next_position_and_skip_episode_ends():
    """Position t is scored against (o_{t+1}, a_t, r_t) from position t + 1; the next
    observation is not scored at an episode's last step."""
    h = history()
    x = sequences(h.observations, h.actions, h.rewards, h.dones)
    seen = {}

    class Recorder(torch.nn.Module):
        def loss(self, hidden, actions, rewards, next_obs, reward_mask, obs_mask, returns,
                 return_mask):
            seen.update(actions=actions, rewards=rewards, next_obs=next_obs, obs_mask=obs_mask,
                        reward_mask=reward_mask, returns=returns, return_mask=return_mask)
            return "ok"

    assert window_loss(Recorder(), torch.zeros(4, 40, 8), x, None) == "ok"
    assert torch.equal(seen["actions"], h.actions[:, :-1])
    assert torch.equal(seen["rewards"], h.rewards[:, :-1])
    assert torch.equal(seen["next_obs"], h.observations[:, 1:])
    assert torch.equal(seen["obs_mask"], ~h.dones[:, :-1])
    assert seen["reward_mask"].all()
    # returns-to-go: the sum of the rewards to each step's episode end, known inside the window
    first = h.rewards[0, :8].flip(0).cumsum(0).flip(0)
    assert torch.allclose(seen["returns"][0, :8], first)
    assert seen["return_mask"][:, :32].all() and not seen["return_mask"][:, 32:].any()


@pytest.mark.parametrize("make", [ad, gru])
def test_heads_train_on_the_window_and_add_their_weighted_loss(make):
    h = history()
    x = sequences(h.observations, h.actions, h.rewards, h.dones)
    with_heads, without = make(1.0).train(), make(0.0).train()
    assert without.world_model is None and with_heads.world_model is not None
    out = with_heads(**x.as_dict(), targets=h.actions)
    plain = without(**x.as_dict(), targets=h.actions)
    assert out.world_model_loss > 0 and 0 <= out.next_obs_accuracy <= 1
    assert out.reward_mse >= 0 and out.return_mae >= 0 and plain.world_model_loss is None
    # the action loss is the same function of the same backbone; the heads add weight * loss
    action = with_heads.action_loss(out.logits, h.actions, None)
    assert torch.allclose(out.loss, action + out.world_model_loss, atol=1e-5)
    out.loss.backward()
    assert with_heads.world_model.value_net[0].weight.grad.abs().sum() > 0
    assert with_heads.world_model.net[0].weight.grad.abs().sum() > 0


def test_a_family_without_heads_refuses_a_weight():
    from icl_rl.models.dpt import DPTConfig, DPTModel

    with pytest.raises(IclRlError, match="no world-model heads"):
        DPTModel(DPTConfig(**GRID, hidden_size=32, num_layers=1, num_heads=2,
                           world_model_weight=1.0))
    with pytest.raises(IclRlError, match="world_model_weight must be >= 0"):
        ADConfig(**GRID, world_model_weight=-1.0)


@pytest.mark.parametrize("make", [ad, gru])
@pytest.mark.parametrize("room", [None, 3])
def test_a_selected_state_steps_like_the_original(make, room):
    """Branching copies a task's state: stepping the copy gives the original's logits, and the
    original is left as it was."""
    model = make()
    h = history(n=3, steps=12)
    x = sequences(h.observations, h.actions, h.rewards, h.dones)
    step = lambda i: Transitions(*(v[:, i] for v in x.as_dict().values()))  # noqa: E731
    state = model.init_state(3)
    for i in range(10):
        state = model.step(step(i), state).state
    index = torch.tensor([2, 0, 0, 1])
    copy = model.select_state(state, index, room=room)
    nxt = step(10)
    branched = model.step(Transitions(*(v[index] for v in nxt.as_dict().values())), copy)
    original = model.step(nxt, state)
    assert torch.allclose(branched.logits, original.logits[index], atol=1e-5)
    assert torch.allclose(branched.hidden, original.hidden[index], atol=1e-5)


class Oracle(torch.nn.Module):
    """Heads that know the answer: reward 1 for action 2, observations unchanged, value 0."""

    def predict(self, hidden, actions):
        return torch.zeros(*actions.shape, 2), (actions == 2).float()

    def value(self, hidden):
        return torch.zeros(hidden.shape[:-1])


def test_lookahead_values_sum_the_predicted_rewards_of_the_best_path():
    model = ad()
    model.world_model = Oracle()
    h = history(n=2, steps=5)
    x = sequences(h.observations, h.actions, h.rewards, h.dones)
    state = model.init_state(2)
    for i in range(5):
        out = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), state)
        state = out.state
    before = [layer.keys.clone() for layer in state.cache.layers]
    q1 = lookahead_values(model, state, out.hidden, out.logits, 1, beam=5, beta=1.0)
    assert q1.tolist() == [[0, 0, 1, 0, 0]] * 2
    q3 = lookahead_values(model, state, out.hidden, out.logits, 3, beam=25, beta=1.0)
    assert q3.tolist() == [[2, 2, 3, 2, 2]] * 2  # any first action, then action 2 twice
    # a beam of one keeps only the best path: the other first actions keep their one-step value
    q3 = lookahead_values(model, state, out.hidden, out.logits, 3, beam=1, beta=1.0)
    assert q3.tolist() == [[0, 0, 3, 0, 0]] * 2
    # the episode ends after 2 more steps for the first task: nothing counts past it
    q3 = lookahead_values(model, state, out.hidden, out.logits, 3, beam=25, beta=1.0,
                          steps_left=torch.tensor([2, 8]))
    assert q3.tolist() == [[1, 1, 2, 1, 1], [2, 2, 3, 2, 2]]
    # planning never touches the acting state
    assert all(torch.equal(a, b.keys) for a, b in zip(before, state.cache.layers, strict=True))
    with pytest.raises(IclRlError, match="depth"):
        lookahead_values(model, state, out.hidden, out.logits, 0, beam=5, beta=1.0)


def test_lookahead_zero_is_plain_acting_and_depth_tilts_toward_predicted_reward():
    env = make_env("dark_room", size=5, episode_len=8)
    tasks = env.sample_tasks(6, torch.Generator().manual_seed(3))
    model = ad()

    def run(**kw):
        return rollout(env, ModelAgent(model, **kw), tasks, 24,
                       env_generator=torch.Generator().manual_seed(4),
                       agent_generator=torch.Generator().manual_seed(5))

    plain, zero = run(), run(lookahead=0, beta=100.0)
    assert torch.equal(plain.actions, zero.actions)
    model.world_model = Oracle()
    tilted = run(lookahead=2, beta=100.0, episode_len=8)
    assert (tilted.actions == 2).float().mean() > 0.95
    assert (plain.actions == 2).float().mean() < 0.6


def test_lookahead_needs_heads_and_sane_settings():
    with pytest.raises(IclRlError, match="no world-model heads"):
        ModelAgent(ad(weight=0.0), lookahead=2)
    for bad in (dict(lookahead=-1), dict(lookahead=1, beam=0), dict(lookahead=1, beta=-1.0)):
        with pytest.raises(IclRlError):
            ModelAgent(ad(), **bad)


def test_world_model_metric_on_known_predictions():
    rng = np.random.default_rng(0)
    n, t, ep = 5, 12, 4
    obs = torch.tensor(rng.integers(0, 5, (n, t, 2)), dtype=torch.float32)
    rewards = torch.tensor(rng.integers(0, 2, (n, t)), dtype=torch.float32)
    dones = torch.zeros(n, t, dtype=torch.bool)
    dones[:, ep - 1::ep] = True
    perfect = torch.cat([torch.cat([obs[:, 1:], obs[:, -1:]], 1), rewards[..., None]], -1)

    def metric(pred):
        h = History(obs, torch.zeros(n, t, dtype=torch.long), rewards, dones,
                    torch.zeros(n, 1), extras={"world_model": pred})
        return world_model_accuracy(h, [5, 5], k=1)

    out = metric(perfect)
    assert out["wm_next_obs_accuracy_mean"] == [1.0, 1.0, 1.0]
    assert out["wm_reward_error_mean"] == [0.0, 0.0, 0.0]
    wrong = perfect.clone()
    wrong[..., 0] += 1  # every x off by one; rewards off by 0.5
    wrong[..., 2] += 0.5
    out = metric(wrong)
    assert out["wm_next_obs_accuracy_first_k"] == 0.0
    assert out["wm_reward_error_last_k"] == pytest.approx(0.5)


def test_thinking_time_gains_are_paired_by_task():
    base = np.array([1.0, 5.0, 9.0, 3.0])
    rows = thinking_time({0: base, 2: base + 1.0}, {0: base / 10, 2: base / 10}, 10.0)
    assert [r["depth"] for r in rows] == [0, 2]
    assert rows[1]["gain"] == pytest.approx(1.0) and rows[1]["gain_ci95"] == 0.0
    assert rows[1]["fraction_of_oracle"] == pytest.approx(0.55)  # (4.5 + 1) / 10
    assert rows[0]["return_ci95"] > 0


@pytest.fixture(scope="module")
def room_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    data = generate(GenerateConfig(out=str(root / "data"), env="dark_room",
                                   env_kwargs='{"size": 5, "episode_len": 8}',
                                   learner="q_learning", num_histories=120, steps=80,
                                   heldout_fraction=0.2, seed=0))
    res = train(TrainConfig(dataset=str(data), out=str(root / "run"), context=40,
                            model_kwargs={"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                            world_model_weight=0.5, batch_size=8, max_steps=6, warmup_steps=1,
                            eval_every=0, eval_batches=1, save_every=0, progress=False))
    return data, res, root


def test_train_and_eval_with_lookahead_end_to_end(room_run):
    data, res, root = room_run
    model = load_model(res["model_dir"])
    assert model.config.world_model_weight == 0.5 and model.world_model is not None
    rows = [json.loads(line) for line in Path(res["model_dir"]).parent.joinpath(
        "metrics.jsonl").read_text().splitlines()]
    assert any("eval/next_obs_accuracy" in r and "eval/return_mae" in r for r in rows)
    out = evaluate(EvalConfig(model=res["model_dir"], dataset=str(data), out=str(root / "ev"),
                              num_tasks=8, episodes=3, lookahead=["0", "1"], beam=3,
                              baselines=["random"], progress=False))
    assert set(out["agents"]) == {"model", "lookahead_1", "random"}
    assert "world_model" in out["metrics"]
    assert "wm_next_obs_accuracy_mean" in out["agents"]["lookahead_1"]
    assert "wm_reward_error_mean" not in out["agents"]["random"]
    assert [r["depth"] for r in out["lookahead"]["rows"]] == [0, 1]
    report = (root / "ev" / "report.md").read_text()
    assert "Thinking time" in report and "lookahead_1" in report
    # compare: a run's lookahead agents are its own model's variants, not shared baselines
    combined = combine([("a", out), ("b", out)])
    assert list(combined["agents"]) == ["a", "a/lookahead_1", "b", "b/lookahead_1", "random"]
    assert "lookahead" not in combined
    with pytest.raises(IclRlError, match="distinct depths"):
        evaluate(EvalConfig(model=res["model_dir"], lookahead=["1", "1"]))
    with pytest.raises(IclRlError, match="integers"):
        evaluate(EvalConfig(model=res["model_dir"], lookahead=["two"]))


def test_eval_without_heads_has_no_world_model_columns_and_refuses_lookahead(room_run, tmp_path):
    data, res, root = room_run
    plain = train(TrainConfig(dataset=str(data), out=str(tmp_path / "run"), context=40,
                              model_kwargs={"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                              batch_size=8, max_steps=2, warmup_steps=1, eval_every=0,
                              eval_batches=1, save_every=0, progress=False))
    out = evaluate(EvalConfig(model=plain["model_dir"], dataset=str(data),
                              out=str(tmp_path / "ev"), num_tasks=4, episodes=2,
                              baselines=["random"], progress=False))
    assert "world_model" not in out["metrics"] and "lookahead" not in out
    with pytest.raises(IclRlError, match="no world-model heads"):
        evaluate(EvalConfig(model=plain["model_dir"], lookahead=["2"]))


def test_train_refuses_a_weight_for_dpt_and_a_changed_weight_on_init(room_run, tmp_path):
    data, res, _ = room_run
    with pytest.raises(IclRlError, match="no world-model heads"):
        train(TrainConfig(dataset=str(data), out=str(tmp_path / "a"), model="dpt",
                          world_model_weight=1.0))
    with pytest.raises(IclRlError, match="world_model_weight"):
        train(TrainConfig(dataset=str(data), out=str(tmp_path / "b"), init_model=res["model_dir"],
                          world_model_weight=2.0, context=40))


@pytest.mark.parametrize("name", sorted(__import__("icl_rl.envs", fromlist=["ENVS"]).ENVS))
def test_every_reward_an_env_pays_is_in_its_reward_values(name):
    """Lookahead snaps imagined rewards to `reward_values`: an env that declares them must pay
    nothing else, and one that declares none pays more than a few values."""
    env = make_env(name)
    g = torch.Generator().manual_seed(0)
    h = rollout(env, make_learner_random(env), env.sample_tasks(32, g),
                20 * env.spec.episode_len, agent_generator=torch.Generator().manual_seed(1))
    paid = set(h.rewards.unique().tolist())
    if env.reward_values is None:
        assert len(paid) > 100
    else:
        assert paid <= set(env.reward_values)
