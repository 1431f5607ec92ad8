"""Source learners (the RL algorithms whose learning is distilled) and their registry."""

from __future__ import annotations

import dataclasses

from icl_rl.agents import Agent
from icl_rl.envs.base import Env
from icl_rl.errors import IclRlError
from icl_rl.learners.bandits import UCB1, DirichletMix, EpsilonGreedy, Greedy, Thompson
from icl_rl.learners.base import Learner, RandomAgent
from icl_rl.learners.bayes import BayesOptimal
from icl_rl.learners.posterior import (
    GoalPosteriorSampling,
    KeyDoorPosteriorSampling,
    MazePosteriorSampling,
    PosteriorSampling,
)
from icl_rl.learners.ppo import PPO
from icl_rl.learners.route import RouteReplay
from icl_rl.learners.tabular import NoiseDistill, QLearning
from icl_rl.learners.two_step import TwoStepModelBased, TwoStepModelFree

LEARNERS: dict[str, type[Learner]] = {
    "random": RandomAgent,
    "epsilon_greedy": EpsilonGreedy,
    "greedy": Greedy,
    "ucb": UCB1,
    "thompson": Thompson,
    "dirichlet_mix": DirichletMix,
    "q_learning": QLearning,
    "noise_distill": NoiseDistill,
    "posterior_sampling": PosteriorSampling,
    "ppo": PPO,
    "bayes_optimal": BayesOptimal,
    "two_step_mf": TwoStepModelFree,
    "two_step_mb": TwoStepModelBased,
    "route_replay": RouteReplay,
}


def make_learner(name: str, env: Env, **params) -> Learner:
    """Build learner `name` for `env`; unknown names or hyperparameters raise IclRlError."""
    if name not in LEARNERS:
        raise IclRlError(f"unknown learner {name!r}; choose one of: {', '.join(sorted(LEARNERS))}")
    cls = LEARNERS[name]
    fields = [f.name for f in dataclasses.fields(cls.Params)]
    extra = sorted(set(params) - set(fields))
    if extra:
        raise IclRlError(
            f"learner {name!r} does not take {', '.join(extra)}; "
            f"it takes: {', '.join(fields) or 'no parameters'}"
        )
    try:
        return cls(env, cls.Params(**params))
    except IclRlError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a string where a number belongs
        raise IclRlError(f"learner {name!r}: bad hyperparameter value in {params}: {e}") \
            from None


def compatible_pairs() -> list[tuple[str, str]]:
    """Every (env, learner) pair of the registries that can run together, sorted."""
    from icl_rl.envs import ENVS, make_env

    pairs = []
    for env_name in sorted(ENVS):
        env = make_env(env_name)
        for name in sorted(LEARNERS):
            try:
                make_learner(name, env)
            except IclRlError:
                continue
            pairs.append((env_name, name))
    return pairs


__all__ = ["compatible_pairs", "Agent", "Learner", "LEARNERS", "make_learner", "RandomAgent",
           "EpsilonGreedy", "Greedy", "UCB1", "Thompson", "DirichletMix", "QLearning",
           "NoiseDistill", "PPO",
           "PosteriorSampling", "GoalPosteriorSampling", "KeyDoorPosteriorSampling",
           "MazePosteriorSampling", "BayesOptimal", "TwoStepModelFree", "TwoStepModelBased",
           "RouteReplay"]
