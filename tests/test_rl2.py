"""The RL² trainer: GAE against a plain loop, memory across episodes but not trials, hidden
inputs without a gradient path, resume, refusals, and a saved model that `eval` evaluates."""

from __future__ import annotations

import json
import math

import pytest
import torch

from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from icl_rl.errors import IclRlError
from icl_rl.models import build_model, load_model
from icl_rl.transitions import Transitions, sequences
from tests.launch import accelerate_launch
from training.rl2 import RL2Config, gae, main, returns_to_go, validate

BANDIT = {"name": "bernoulli_bandit", "params": {"num_arms": 3},
          "spec": {"obs_dim": 1, "num_actions": 3, "obs_levels": None}}
ROOM = {"name": "dark_room", "params": {"size": 9, "episode_len": 20},
        "spec": {"obs_dim": 2, "num_actions": 5, "obs_levels": [9, 9]}}
TINY = dict(env="bernoulli_bandit", env_kwargs='{"num_arms": 3}', trial_episodes=10,
            num_envs=16, minibatches=2, epochs=2, model_kwargs='{"hidden_size": 16}',
            log_every=1, progress=False)


def test_gae_and_returns_against_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(3, 12, generator=g), torch.randn(3, 12, generator=g)
    gamma, lam = 0.9, 0.7
    adv, ret = gae(rewards, values, gamma, lam)
    for i in range(3):
        for t in range(12):  # the definition: sum of (gamma lam)^k delta_{t+k} to the trial end
            total = 0.0
            for k in range(t, 12):
                next_v = float(values[i, k + 1]) if k + 1 < 12 else 0.0
                delta = float(rewards[i, k]) + gamma * next_v - float(values[i, k])
                total += (gamma * lam) ** (k - t) * delta
            assert abs(float(adv[i, t]) - total) < 1e-5
            assert abs(float(ret[i, t]) - (total + float(values[i, t]))) < 1e-5
            mc = sum(gamma ** (k - t) * float(rewards[i, k]) for k in range(t, 12))
            assert abs(float(returns_to_go(rewards, gamma)[i, t]) - mc) < 1e-5
    # lambda = 1: Monte Carlo returns whatever the values
    assert torch.allclose(gae(rewards, values, gamma, 1.0)[1], returns_to_go(rewards, gamma),
                          atol=1e-5)


def _room_trial(b=2, episodes=3, seed=1) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    t = 20 * episodes
    return sequences(torch.randint(0, 9, (b, t, 2), generator=g).float(),
                     torch.randint(0, 5, (b, t), generator=g),
                     (torch.rand(b, t, generator=g) > 0.7).float(),
                     (torch.arange(t) % 20 == 19).expand(b, t))


def _logits(model, x: Transitions) -> torch.Tensor:
    with torch.no_grad():
        return model(**x.as_dict()).logits


@pytest.mark.parametrize("memory", ["history", "episode", "none"])
def test_memory_spans_episodes_of_a_trial_only_when_asked(memory):
    torch.manual_seed(0)
    model = build_model("gru", ROOM, {"hidden_size": 16, "memory": memory, "value_head": True},
                        max_context=60).eval()
    x = _room_trial()
    y = _room_trial()
    y.prev_rewards[:, 5] += 5.0  # a different reward in episode 1 (seen at step 5)
    a, b = _logits(model, x), _logits(model, y)
    same_episode = (a[:, 6:20] - b[:, 6:20]).abs().max()
    later_episode = (a[:, 20:] - b[:, 20:]).abs().max()
    next_step = (a[:, 6] - b[:, 6]).abs().max()
    if memory == "history":  # remembered in the episodes that follow (an untrained state
        # fades, so only exact zeros below are told apart from small differences here)
        assert later_episode > 0 and same_episode > 1e-4
    elif memory == "episode":  # remembered until the episode ends, forgotten after
        assert same_episode > 1e-4 and later_episode == 0
    else:  # no memory at all: a feedforward policy
        assert next_step == 0 and later_episode == 0
    # acting one step at a time (what eval and the rollouts do) equals the training forward
    state = model.init_state(2)
    steps = []
    for i in range(60):
        out = model.step(Transitions(*(v[:, i] for v in x.as_dict().values())), state)
        state, _ = out.state, steps.append(out.logits)
    assert (torch.stack(steps, 1) - a).abs().max() < 1e-5


def test_memory_starts_empty_at_every_trial(tmp_path, monkeypatch):
    """Each iteration's trials start from a zero state: the rollout resets the agent."""
    import training.rl2 as rl2

    seen = []
    real = rl2.BehaviourAgent

    class Spy(real):
        def reset(self, n, generator=None):
            super().reset(n, generator)
            seen.append(float(self.state.h.abs().sum()))

    monkeypatch.setattr(rl2, "BehaviourAgent", Spy)
    main(RL2Config(out=str(tmp_path / "run"), iterations=3, **TINY))
    assert len(seen) == 3 and seen == [0.0, 0.0, 0.0]


def test_a_hidden_input_gets_no_gradient_path():
    g = torch.Generator().manual_seed(2)
    x = sequences(torch.rand(2, 30, 1, generator=g), torch.randint(0, 3, (2, 30), generator=g),
                  torch.rand(2, 30, generator=g), torch.ones(2, 30, dtype=torch.bool))
    for hidden, part in ((["reward"], "prev_rewards"), (["observation"], "observations")):
        for hide in (hidden, []):
            torch.manual_seed(0)
            model = build_model("gru", BANDIT, {"hidden_size": 16, "value_head": True},
                                max_context=30, hidden_inputs=hide)
            inputs = x.as_dict()
            inputs[part] = inputs[part].clone().requires_grad_(True)
            out = model(**inputs)
            (out.logits.sum() + out.values.sum()).backward()
            grad = inputs[part].grad.abs().sum()
            assert (grad == 0) if hide else (grad > 0), (hide, part)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole = main(RL2Config(out=str(tmp_path / "a"), iterations=4, save_every=2, **TINY))
    cut = RL2Config(out=str(tmp_path / "b"), iterations=4, save_every=2, **TINY)
    main(cut)
    # the run "dies" after its step-2 checkpoint: drop what came later, then resume
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000004")
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = main(RL2Config(**{**cut.__dict__, "resume_from_checkpoint": "latest"}))
    a, b = load_model(whole["model_dir"]), load_model(resumed["model_dir"])
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    def returns(rows):
        return [r["train/trial_return"] for r in rows if "train/trial_return" in r]

    assert returns(whole["metrics"])[2:] == returns(resumed["metrics"])


@pytest.mark.parametrize("overrides, words", [
    ({"trial_episodes": 0}, "--trial-episodes"),
    ({"memory": "forever"}, "--memory"),
    ({"hide_inputs": "rewards"}, "--hide-inputs"),
    ({"train_tasks": 0}, "--train-tasks"),
    ({"num_envs": 0}, "--num-envs"),
    ({"minibatches": 64}, "--minibatches"),
    ({"gamma": 1.5}, "--gamma"),
    ({"model": "dpt"}, "value head"),
    ({"model": "ad", "memory": "none"}, "--memory none"),
    ({"model_kwargs": '{"memory": "none"}'}, "--memory"),
    ({"env": "dark_room", "env_kwargs": None, "train_tasks": 500}, "--train-tasks 500"),
])
def test_bad_settings_are_refused_in_one_line(overrides, words):
    with pytest.raises(IclRlError) as e:
        validate(RL2Config(**{**TINY, **overrides}))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_cli_trains_a_model_that_eval_evaluates_on_the_held_out_goals(tmp_path):
    from icl_rl.cli import main as cli_main

    cli_main(["generate", "--env", "bernoulli_bandit", "--learner", "ucb", "--num-histories",
              "8", "--steps", "10", "--out", str(tmp_path / "bandit")])

    out = tmp_path / "room"
    cli_main(["rl2", "--env", "dark_room", "--out", str(out), "--iterations", "2",
              "--trial-episodes", "2", "--num-envs", "8", "--train-tasks", "5",
              "--model-kwargs", '{"hidden_size": 16}', "--progress", "false"])
    model = load_model(out)
    split = model.config.provenance["task_split"]
    assert model.config.provenance["trainer"] == "rl2" and len(split["train"]) == 5
    assert not set(split["train"]) & set(split["test"])
    assert "RL²" in (out / "model" / "README.md").read_text()
    results = evaluate(EvalConfig(model=str(out), out=str(tmp_path / "eval"), num_tasks=8,
                                  episodes=2, baselines=["random", "oracle"], progress=False))
    assert results["tasks_from"].endswith("held-out task split")
    assert {"model", "random", "oracle"} <= set(results["agents"])
    goals = json.loads((tmp_path / "eval" / "results.json").read_text())["num_tasks"]
    assert goals == 8
    # probe holds out the same goals (it used to take a split of its own without a dataset)
    from eval.probe import ProbeConfig
    from eval.probe import main as probe

    held = probe(ProbeConfig(model=str(out), out=str(tmp_path / "probe"), num_tasks=8,
                             episodes=2, steps_per_task=8, folds=2, progress=False))
    assert held["tasks_from"].endswith("held-out task split")
    from icl_rl.envs import make_env
    from icl_rl.tasks import eval_tasks, model_task_meta

    tasks, _ = eval_tasks(make_env("dark_room"), model_task_meta(model.config, None), 8, 0)
    cells = make_env("dark_room").task_set().tolist()
    assert {cells.index(t) for t in tasks.tolist()} <= set(split["test"])
    with pytest.raises(IclRlError, match="is bernoulli_bandit data but the model was trained "
                                         "for dark_room"):
        probe(ProbeConfig(model=str(out), dataset=str(tmp_path / "bandit"), num_tasks=8,
                          progress=False))


def test_two_processes_train_with_averaged_gradients(tmp_path):
    """`accelerate launch` with 2 CPU processes: each its own tasks, one set of weights."""
    log = accelerate_launch(["training.rl2", "--out", str(tmp_path / "two"), "--iterations",
                             "2", "--env-kwargs", '{"num_arms": 3}', "--trial-episodes", "10",
                             "--num-envs", "16", "--minibatches", "2",
                             "--model-kwargs", '{"hidden_size": 16}', "--progress", "false"])
    assert "training with 2 process(es)" in log.stdout
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").open()]
    assert [r["train/env_steps"] for r in rows if "train/env_steps" in r][-1] == 2 * 2 * 16 * 10
    sums = rows[-1]["ranks/param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # one set of weights
    assert len(load_model(tmp_path / "two").config.provenance) > 0


def test_a_transformer_policy_through_the_acting_interface(tmp_path):
    """--model ad: the trial is the context; acting goes through the KV cache, training
    through the full forward, and eval loads it as an AD model."""
    result = main(RL2Config(out=str(tmp_path / "ad"), iterations=2, model="ad",
                            **{**TINY, "model_kwargs": '{"hidden_size": 16, "num_layers": 1, '
                               '"num_heads": 2}'}))
    model = load_model(result["model_dir"])
    assert model.config.model_type == "icl_rl_ad" and model.config.max_context == 10
    last = [r for r in result["metrics"] if "losses/approx_kl" in r][-1]
    assert all(math.isfinite(v) for v in last.values())
    results = evaluate(EvalConfig(model=result["model_dir"], out=str(tmp_path / "eval"),
                                  num_tasks=8, episodes=10, baselines=["random"],
                                  progress=False))
    assert results["window"] == 10



@pytest.mark.parametrize(("env_name", "episodes", "model", "model_kwargs", "memory"), [
    ("bernoulli_bandit", 20, "gru", '{"hidden_size": 16}', "history"),
    ("dark_room", 2, "gru", '{"hidden_size": 16}', "episode"),
    ("dark_room", 2, "gru", '{"hidden_size": 16}', "none"),
    ("dark_room", 2, "gru", '{"hidden_size": 16, "cell": "lstm", "num_layers": 2}', "history"),
    ("dark_room", 2, "ad", '{"hidden_size": 16, "num_layers": 2, "num_heads": 2}', "history"),
])
def test_behaviour_logprobs_and_values_are_the_training_forwards(env_name, episodes, model,
                                                                 model_kwargs, memory):
    """collect keeps the acting steps' logits and hidden states instead of running a second
    forward over the trials: for the recurrent family they equal the training forward's bit
    for bit (so are the log-probabilities and values PPO starts from); for the transformer
    (cached decoding) to rounding."""
    from icl_rl.rollout import rollout
    from training.rl2 import BehaviourAgent, TaskSampler, collect, env_meta, generators

    config = RL2Config(env=env_name, trial_episodes=episodes, num_envs=12, model=model,
                       model_kwargs=model_kwargs, memory=memory)
    env = validate(config)
    torch.manual_seed(0)
    steps = episodes * env.spec.episode_len
    policy = build_model(model, env_meta(env), config.model_options(), max_context=steps)
    gens = generators(0, 0, 0)
    agent = BehaviourAgent(policy)
    h = rollout(env, agent, TaskSampler(env, config).sample(12, gens[0]), steps,
                env_generator=gens[1], agent_generator=gens[2], record_optimal=False)
    with torch.no_grad():
        out = policy(**sequences(h.observations, h.actions, h.rewards, h.dones).as_dict())
    logits, hidden = torch.stack(agent.logits, 1), torch.stack(agent.hidden, 1)
    assert logits.shape == out.logits.shape and hidden.shape == out.last_hidden_state.shape
    if model == "gru":
        assert torch.equal(logits, out.logits) and torch.equal(hidden, out.last_hidden_state)
    else:
        torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
    batch = collect(policy, env, TaskSampler(env, config), config, generators(0, 0, 0), "cpu")
    assert torch.equal(batch["actions"], h.actions)  # the same trials as above
    logp = torch.log_softmax(out.logits, -1).gather(-1, h.actions[..., None])[..., 0]
    torch.testing.assert_close(batch["logp"], logp, atol=1e-5 if model == "ad" else 0, rtol=0)
