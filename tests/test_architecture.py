"""The seams hold: no stage imports another, and a model family defined outside the library
goes through train, save/reload through AutoModel and eval with no edit elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from icl_rl.errors import IclRlError
from icl_rl.models import (
    FamilyConfig,
    FamilyModel,
    FamilyOutput,
    StepOutput,
    load_model,
    register_family,
    unregister_family,
)
from icl_rl.policy import ModelAgent
from icl_rl.transitions import Transitions, token_features
from training.train import TrainConfig
from training.train import main as train

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("data_gen", "training", "eval")


def imported_modules(path: Path) -> set[str]:
    """Top-level package of every module `path` imports (at any depth in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_stage_imports_another():
    """data_gen, training and eval import the library, never each other (nor the pipeline);
    only pipeline/ chains them."""
    offences = []
    for stage in STAGES:
        for path in sorted((ROOT / stage).rglob("*.py")):
            for other in imported_modules(path) & {*STAGES, "pipeline"} - {stage}:
                offences.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not offences, offences
    # and the library imports no stage at all
    lib = [f"{p.relative_to(ROOT)} imports {m}" for p in sorted((ROOT / "icl_rl").rglob("*.py"))
           for m in imported_modules(p) & {*STAGES, "pipeline"}]
    assert not lib, lib


def test_the_walk_would_catch_a_cross_stage_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from training.train import main\n")
    assert "training" in imported_modules(bad)


# -- a toy family, defined here only ----------------------------------------------------------


class ToyConfig(FamilyConfig):
    """An MLP over the current step's features: no memory at all."""

    model_type = "icl_rl_test_toy_mlp"

    def __init__(self, width: int = 16, **kwargs) -> None:
        self.width = width
        super().__init__(**kwargs)


class ToyModel(FamilyModel):
    """Logits from the current step only; its acting state is just a step count."""

    config_class = ToyConfig
    uses_window = False

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.net = nn.Sequential(nn.Linear(config.token_dim, config.width), nn.Tanh(),
                                 nn.Linear(config.width, config.num_actions))
        self.post_init()

    def _features(self, x: Transitions) -> torch.Tensor:
        return self.hide(token_features(x, self.config.num_actions, self.config.obs_levels))

    def forward(self, observations, prev_actions, prev_rewards, episode_starts, targets=None,
                attention_mask=None, **_):
        x = Transitions(observations, prev_actions, prev_rewards, episode_starts)
        logits = self.net(self._features(x))
        return FamilyOutput(loss=self.action_loss(logits, targets, attention_mask),
                            logits=logits)

    def init_state(self, n, window=None, **options):
        return 0

    def step(self, inputs, state, output_features=False):
        h = self.net[1](self.net[0](self._features(inputs)))
        return StepOutput(self.net[2](h), h[:, None] if output_features else None, state + 1)


@pytest.fixture
def toy_family():
    register_family("toy_mlp", ToyConfig, ToyModel)
    yield "toy_mlp"
    unregister_family("toy_mlp")


def test_a_new_family_trains_reloads_and_evaluates(toy_family, tmp_path):
    data = generate(GenerateConfig(out=str(tmp_path / "data"), env="bernoulli_bandit",
                                   num_arms=3, learner="ucb", num_histories=80, steps=20,
                                   shard_size=40, heldout_fraction=0.25))
    run = train(TrainConfig(dataset=str(data), out=str(tmp_path / "run"), model="toy_mlp",
                            model_kwargs={"width": 8}, context=20, batch_size=8, max_steps=6,
                            eval_every=3, save_every=0, progress=False))
    assert run["final_eval_loss"] is not None
    # saved and reloaded through the Auto classes, by nothing but the folder
    model = AutoModel.from_pretrained(run["model_dir"])
    assert isinstance(model, ToyModel) and model.config.width == 8
    assert isinstance(AutoConfig.from_pretrained(run["model_dir"]), ToyConfig)
    assert model.config.provenance["learner"]["name"] == "ucb"
    assert isinstance(load_model(tmp_path / "run"), ToyModel)
    res = evaluate(EvalConfig(model=run["model_dir"], out=str(tmp_path / "ev"), num_tasks=16,
                              episodes=20, baselines=["random"], progress=False))
    assert set(res["agents"]) == {"model", "random"}
    assert json.loads((tmp_path / "ev/results.json").read_text())["window"] is None
    with pytest.raises(IclRlError, match="constant-size state"):
        ModelAgent(model, window=8)
    with pytest.raises(IclRlError, match="does not take depth; it takes: width"):
        train(TrainConfig(dataset=str(data), out=str(tmp_path / "x"), model="toy_mlp",
                          model_kwargs='{"depth": 2}'))
    with pytest.raises(IclRlError, match="--model 'nope': unknown model family; choose one of: ad"):
        train(TrainConfig(dataset=str(data), out=str(tmp_path / "x"), model="nope"))
    assert not (tmp_path / "x").exists()


def test_rollout_extras_cost_nothing_unless_asked(toy_family):
    from icl_rl.envs import make_env
    from icl_rl.learners import make_learner
    from icl_rl.rollout import rollout

    env = make_env("bernoulli_bandit", num_arms=3)
    tasks = env.sample_tasks(6, torch.Generator().manual_seed(0))
    model = ToyModel(ToyConfig(obs_dim=1, num_actions=3, width=4))
    plain = rollout(env, ModelAgent(model), tasks, 10, torch.Generator().manual_seed(1),
                    torch.Generator().manual_seed(2))
    assert plain.extras == {}
    h = rollout(env, ModelAgent(model), tasks, 10, torch.Generator().manual_seed(1),
                torch.Generator().manual_seed(2), extras=("action_probs", "features"))
    assert torch.equal(h.actions, plain.actions)  # recording changes nothing
    assert h.extras["action_probs"].shape == (6, 10, 3)
    assert torch.allclose(h.extras["action_probs"].sum(-1), torch.ones(6, 10))
    assert h.extras["features"].shape == (6, 10, 1, 4)
    eps = rollout(env, make_learner("epsilon_greedy", env), tasks, 10,
                  extras=("action_probs",)).extras["action_probs"]
    assert torch.allclose(eps.sum(-1), torch.ones(6, 10))
    with pytest.raises(IclRlError, match="UCB1 does not record features"):
        rollout(env, make_learner("ucb", env), tasks, 5, extras=("features",))
    with pytest.raises(IclRlError, match="unknown rollout extra 'logits'"):
        rollout(env, ModelAgent(model), tasks, 5, extras=("logits",))
