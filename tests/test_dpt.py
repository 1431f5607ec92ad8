"""The Decision-Pretrained Transformer family, its roll-in data and its two deployments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.compare import CompareConfig
from eval.compare import main as compare
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from icl_rl.data import WindowDataset
from icl_rl.envs import DarkRoom, GaussianBandit, make_env
from icl_rl.errors import IclRlError
from icl_rl.learners import make_learner
from icl_rl.models import build_model
from icl_rl.rollout import History, rollout
from icl_rl.transitions import Transitions, sequences
from training.train import TrainConfig
from training.train import main as train

ENV = {"name": "dark_room", "params": {"size": 9, "episode_len": 20},
       "spec": {"obs_dim": 2, "num_actions": 5, "obs_levels": [9, 9]}}


def dpt(**options):
    torch.manual_seed(0)
    shape = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, **options}
    return build_model("dpt", ENV, shape, max_context=64).eval()


def history(b: int, t: int, episode: int, constant_obs: bool = False) -> Transitions:
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 9, (b, t, 2), generator=g).float()
    if constant_obs:
        obs = torch.zeros_like(obs)
    return sequences(obs, torch.randint(0, 5, (b, t), generator=g),
                     (torch.rand(b, t, generator=g) < 0.3).float(),
                     (torch.arange(t) % episode == episode - 1).expand(b, t))


def test_prefix_training_equals_a_loop_over_prefixes():
    """One forward's loss is the mean over prefixes of the loss of each prefix alone."""
    model = dpt()
    x = history(3, 12, episode=4)
    query = torch.tensor([[1.0, 2.0], [8.0, 0.0], [4.0, 4.0]])
    label = torch.tensor([2, 0, 4])
    with torch.no_grad():
        full = model(**x.as_dict(), query_observations=query,
                     targets=label[:, None].expand(3, 12)).loss
        losses = []
        for j in range(12):
            prefix = Transitions(*(v[:, :j + 1] for v in x.as_dict().values()))
            logits = model(**prefix.as_dict(), query_observations=query).logits[:, -1]
            losses.append(F.cross_entropy(logits, label, reduction="none"))
    assert abs(float(torch.stack(losses).mean() - full)) < 1e-5


@pytest.mark.parametrize("scope", ["steps", "episodes"])
@pytest.mark.parametrize("constant_obs", [False, True], ids=["new_query", "same_query"])
@pytest.mark.parametrize("kv_heads", [4, 1])
def test_acting_equals_the_forward_over_the_context_it_holds(scope, constant_obs, kv_heads):
    """Online acting: the prediction at each step is the forward over [query = o_t, the
    transitions the context holds] (every completed step, or those of finished episodes),
    whether the KV cache is extended (same query, as in a bandit) or rebuilt; with shared
    key/value heads (`num_kv_heads`) too."""
    model = dpt(context_scope=scope, num_kv_heads=kv_heads)
    assert model.backbone.layers[0].self_attn.k_proj.out_features == 32 * kv_heads // 4
    x = history(3, 30, episode=5, constant_obs=constant_obs)
    state = model.init_state(3)
    last_start = 0
    for i in range(30):
        step = Transitions(*(v[:, i] for v in x.as_dict().values()))
        out = model.step(step, state, output_features=True)
        state = out.state
        if bool(x.episode_starts[0, i]):
            last_start = i
        held = i if scope == "steps" else last_start  # aligned steps 1..held are in context
        prefix = Transitions(*(v[:, :held + 1] for v in x.as_dict().values()))
        with torch.no_grad():
            ref = model(**prefix.as_dict(), query_observations=x.observations[:, i],
                        output_hidden_states=True)
        assert state.context.shape[1] == held
        assert (out.logits - ref.logits[:, -1]).abs().max() < 1e-4, i
        assert out.features.shape == (3, 2, 32)
        assert (out.features[:, -1] - ref.hidden_states[-1][:, -1]).abs().max() < 1e-4


def test_window_slides_and_frozen_context_stays():
    model = dpt(context_scope="steps")
    x = history(2, 30, episode=1)
    state = model.init_state(2, window=8)
    for i in range(30):
        state = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), state).state
    assert state.context.shape[1] == 7  # the query and 7 transitions
    rollin = (torch.zeros(2, 5, 2), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5),
              torch.ones(2, 5, dtype=torch.bool))
    frozen = model.init_state(2, frozen_context=rollin)
    for i in range(10):
        out = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), frozen)
    assert out.state.context.shape[1] == 5
    with pytest.raises(IclRlError, match="frozen_context"):
        model.init_state(3, frozen_context=rollin)


def test_query_windows_come_from_their_own_task_with_the_oracle_label():
    env = DarkRoom()
    tasks = env.task_set()[torch.tensor([0, 10, 40, 44, 70, 80])]
    h = rollout(env, make_learner("random", env), tasks, 60,
                env_generator=torch.Generator().manual_seed(0),
                agent_generator=torch.Generator().manual_seed(1))
    ds = WindowDataset(h, context=20, target="optimal_actions", queries=True)
    idx = list(range(len(ds)))
    b = ds.__getitems__(idx)
    rows = torch.tensor(idx) // ds.starts
    q = b["query_observations"]
    assert q.shape == (len(ds), 2)
    for i, r in enumerate(rows.tolist()):  # a state of the window's own history
        assert (h.observations[r] == q[i]).all(dim=-1).any()
    oracle = env.toward(q.long(), tasks[rows].long())  # the env oracle at the query state
    assert torch.equal(b["targets"][:, 0], oracle)
    assert (b["targets"] == b["targets"][:, :1]).all()  # the same label at every prefix
    assert len(set(map(tuple, q.tolist()))) > 20  # queries differ between windows
    blind = History(h.observations, h.actions, h.rewards, h.dones, h.tasks)
    with pytest.raises(IclRlError, match="no optimal_actions column.*DPT"):
        WindowDataset(blind, context=20, target="optimal_actions", queries=True)
    with pytest.raises(IclRlError, match="target must be optimal_actions"):
        WindowDataset(h, context=20, queries=True)


def test_rollin_sources():
    """The bandit roll-in pulls i.i.d. from its own Dirichlet / point-mass mix; a random start
    Dark Room of one-step episodes gives transitions from uniformly random states."""
    env = GaussianBandit(5, 0.3, means="uniform")
    tasks = env.sample_tasks(400, torch.Generator().manual_seed(0))
    assert float(tasks.min()) >= 0 and float(tasks.max()) <= 1 and env.prior[0] == 0.5
    mix = make_learner("dirichlet_mix", env)
    h = rollout(env, mix, tasks, 300, env_generator=torch.Generator().manual_seed(1),
                agent_generator=torch.Generator().manual_seed(2))
    probs = mix.probs
    assert torch.allclose(probs.sum(1), torch.ones(400))
    freq = F.one_hot(h.actions, 5).float().mean(1)
    assert (freq - probs).abs().mean() < 0.03  # i.i.d. from each history's own mix
    assert float(probs.max(1).values.std()) > 0.15  # from near uniform to near one arm
    room = make_env("dark_room", episode_len=1, start="random")
    goals = room.task_set()[:4].repeat(50, 1)
    h = rollout(room, make_learner("random", room), goals, 40,
                env_generator=torch.Generator().manual_seed(3),
                agent_generator=torch.Generator().manual_seed(4))
    assert bool(h.dones.all())
    cells = room.obs_to_state(h.observations.reshape(-1, 2)).bincount(minlength=81)
    assert int((cells > 0).sum()) == 81 and cells.max() < 3 * cells.float().mean()
    room.reset(room.task_set()[[0, 40]])
    expected = room.optimal_episode_return()  # mean over start cells of a 1-step episode
    assert torch.allclose(expected, torch.tensor([3 / 81, 5 / 81]))
    with pytest.raises(IclRlError, match="start must be one of"):
        make_env("dark_room", start="corner")


def test_dpt_trains_evaluates_online_and_offline(tmp_path):
    data = generate(GenerateConfig(out=str(tmp_path / "rollin"), env="gaussian_bandit",
                                   env_kwargs='{"noise_std": 0.3, "means": "uniform"}',
                                   learner="dirichlet_mix", num_histories=300, steps=40,
                                   heldout_fraction=0.2, shard_size=300, seed=0))
    base = dict(dataset=str(data), model="dpt", context=40, batch_size=8, max_steps=4,
                warmup_steps=1, eval_every=0, save_every=0, progress=False,
                model_kwargs={"hidden_size": 16, "num_layers": 1, "num_heads": 2})
    with pytest.raises(IclRlError, match="--target actions: the dpt family learns "
                                         "optimal_actions"):
        train(TrainConfig(out=str(tmp_path / "bad"), target="actions", **base))
    res = train(TrainConfig(out=str(tmp_path / "run"), **base))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["model_type"] == "icl_rl_dpt" and config["provenance"]["target"] == \
        "optimal_actions"
    assert "Decision-Pretrained Transformer" in (tmp_path / "run/model/README.md").read_text()
    out = evaluate(EvalConfig(model=res["model_dir"], dataset=str(data),
                              out=str(tmp_path / "eval"), num_tasks=16, episodes=20,
                              baselines=["source", "greedy", "thompson"],
                              offline_context=["1", "30"], progress=False))
    assert set(out["agents"]) == {"model", "source", "greedy", "thompson"}
    rows = out["offline"]["rows"]
    assert [r["context"] for r in rows] == [1, 30] and all(r["suboptimality"] >= 0
                                                           for r in rows)
    floor = out["offline"]["bayes_floor"]  # a bandit with an exact posterior: next to it
    assert floor["histories"] == 16 and floor["steps"] == 40
    assert floor["by_prefix"][0]["bayes"] == pytest.approx(np.log(5), abs=1e-5)
    assert floor["gap"] == pytest.approx(floor["loss"] - floor["bayes"], abs=1e-9)
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "Offline deployment" in text and "against the Bayes floor" in text
    with pytest.raises(IclRlError, match="--offline-context: sizes must be >= 1"):
        evaluate(EvalConfig(model=res["model_dir"], offline_context=["0"]))
    # families side by side: each run's model under its name, the first run's baselines
    both = compare(CompareConfig(results=[f"dpt={tmp_path / 'eval'}",
                                          f"again={tmp_path / 'eval' / 'results.json'}"],
                                 out=str(tmp_path / "cmp"), baselines=["thompson"]))
    assert list(both["agents"]) == ["dpt", "again", "thompson"]
    assert (tmp_path / "cmp" / "compare.png").exists()
    assert "| dpt |" in (tmp_path / "cmp" / "compare.md").read_text()
    other = json.loads((tmp_path / "eval" / "results.json").read_text())
    other["episodes"] = 99
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(IclRlError, match="differs from dpt in episodes"):
        compare(CompareConfig(results=[f"dpt={tmp_path / 'eval'}",
                                       f"x={tmp_path / 'other.json'}"]))


@pytest.mark.parametrize("family", ["ad", "gru"])
def test_offline_deployment_of_a_family_without_fixed_contexts_is_refused(family):
    from eval.offline import offline
    from icl_rl.envs import make_env
    from icl_rl.models import build_model
    from training.rl2 import env_meta

    env = make_env("bernoulli_bandit", num_arms=3)
    model = build_model(family, env_meta(env), {"hidden_size": 8}, max_context=10)
    with pytest.raises(IclRlError, match=r"no fixed-context mode; .*--model dpt"):
        offline(model, env, "unused", [5], 4, 2, 0)


class _PosteriorModel(torch.nn.Module):
    """Predicts the exact posterior over the best arm from the transitions a DPT window gives
    position j (the first j), `ahead` pulls later if asked: the Bayes floor itself, or a
    misaligned copy of it."""

    needs_queries = True

    def __init__(self, env, max_context: int, ahead: int = 0) -> None:
        super().__init__()
        self.env, self.ahead = env, ahead
        self.config = type("Config", (), {"max_context": max_context})()

    def forward(self, observations, prev_actions, prev_rewards, episode_starts,
                attention_mask=None, query_observations=None):
        from icl_rl.bayes import best_arm_posterior

        assert query_observations is not None and attention_mask is not None
        actions = torch.cat([prev_actions[:, 1:], prev_actions[:, -1:]], dim=1)
        rewards = torch.cat([prev_rewards[:, 1:], prev_rewards[:, -1:]], dim=1)
        p = best_arm_posterior(self.env, actions, rewards)
        if self.ahead:
            p = torch.cat([p[:, self.ahead:], p[:, -1:].expand(-1, self.ahead, -1)], dim=1)
        return type("Out", (), {"logits": p.clamp_min(1e-30).log()})()


@pytest.mark.parametrize("kind", ["bernoulli", "normal", "uniform"])
def test_bayes_floor_is_the_exact_posterior_at_every_prefix(kind):
    """best_arm_posterior is each bandit's exact P(best arm | pulls before t); a model that
    predicts it scores a gap of 0 at every prefix, one that peeks a pull ahead beats it (so
    the prefixes line up), and a real DPT's loss is its training loss on the same windows."""
    from eval.offline import bayes_floor, bayes_floor_text
    from icl_rl.bayes import bandit_reference_probs, best_arm_posterior, prob_best_uniform_normal

    env = (make_env("bernoulli_bandit", num_arms=4) if kind == "bernoulli" else
           GaussianBandit(4, 0.3, means=kind))
    tasks = env.sample_tasks(24, torch.Generator().manual_seed(0))
    h = rollout(env, make_learner("dirichlet_mix", env), tasks, 30,
                env_generator=torch.Generator().manual_seed(1),
                agent_generator=torch.Generator().manual_seed(2))
    post = best_arm_posterior(env, h.actions, h.rewards)
    assert torch.allclose(post[:, 0], torch.full((24, 4), 0.25), atol=1e-6)  # no pulls yet
    if kind == "uniform":  # the truncated normals, not the Gaussian prior Thompson matches
        onehot = F.one_hot(h.actions[:, :5], 4).double()
        counts = onehot.sum(1).numpy()
        sums = (onehot * h.rewards[:, :5, None].double()).sum(1).numpy()
        want = torch.from_numpy(prob_best_uniform_normal(counts, sums, 0.3)).float()
    else:
        prior = {} if kind == "bernoulli" else {"prior_mean": 0.0, "prior_std": 1.0,
                                               "noise_std": 0.3}
        want = bandit_reference_probs(h.actions, h.rewards, 4,
                                      "bernoulli" if kind == "bernoulli" else "gaussian",
                                      **prior)[:, 5]
    assert torch.allclose(post[:, 5], want, atol=1e-5)
    assert best_arm_posterior(DarkRoom(), h.actions, h.rewards) is None

    exact = bayes_floor(_PosteriorModel(env, 30), env, h, 20, [10, 50])
    assert exact["histories"] == 20 and exact["steps"] == 30
    assert abs(exact["gap"]) < 1e-5 and exact["bayes"] > 0.3
    assert [r["pulls"] for r in exact["by_prefix"]] == [0, 10, 29]
    assert exact["by_prefix"][0]["bayes"] == pytest.approx(np.log(4), abs=1e-5)
    assert bayes_floor(_PosteriorModel(env, 30, ahead=1), env, h, 20, [10])["gap"] < -1e-3
    short = bayes_floor(_PosteriorModel(env, 12), env, h, 20, [50])  # the model's context
    assert short["steps"] == 12 and [r["pulls"] for r in short["by_prefix"]] == [0, 11]
    assert "gap 0.000" in bayes_floor_text(exact)

    from training.rl2 import env_meta

    meta = env_meta(env)
    torch.manual_seed(0)
    model = build_model("dpt", meta, {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
                        max_context=30).eval()
    real = bayes_floor(model, env, h, 20, [10])
    batch = WindowDataset(h.head(20, 30), 30, target="optimal_actions",
                          queries=True).__getitems__(list(range(20)))
    with torch.no_grad():
        assert real["loss"] == pytest.approx(float(model(**batch).loss), abs=1e-5)
    assert real["gap"] == pytest.approx(real["loss"] - real["bayes"], abs=1e-9)
    assert bayes_floor(build_model("ad", meta, {"hidden_size": 8}, max_context=30), env, h,
                       20, [10]) is None  # AD predicts its source's actions, not the oracle's
