"""Posterior sampling on Dark Key-to-Door and dark mazes: the learners, their per-step
references along recorded histories (icl_rl.bayes), and the divergence metric on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.metrics import Context, policy_divergence, replay_probs
from icl_rl.bayes import (
    darkroom_reference_probs,
    goal_posterior_action_probs,
    key_to_door_reference_probs,
    maze_known_walls,
    maze_posterior_action_probs,
    maze_reference_probs,
)
from icl_rl.envs import make_env
from icl_rl.envs.maze import seen_walls
from icl_rl.errors import IclRlError
from icl_rl.learners import (
    GoalPosteriorSampling,
    KeyDoorPosteriorSampling,
    MazePosteriorSampling,
    make_learner,
)
from icl_rl.rollout import rollout


def record(env, learner, n: int, steps: int, seed: int = 0, **kwargs):
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(seed))
    return rollout(env, learner, tasks, steps, torch.Generator().manual_seed(seed + 1),
                   torch.Generator().manual_seed(seed + 2), extras=("action_probs",), **kwargs)


def test_the_registry_picks_the_sampler_for_the_env():
    picks = {"dark_room": GoalPosteriorSampling, "dark_room_hard": GoalPosteriorSampling,
             "dark_key_to_door": KeyDoorPosteriorSampling, "dark_maze": MazePosteriorSampling}
    for name, cls in picks.items():
        learner = make_learner("posterior_sampling", make_env(name), epsilon=0.1)
        assert type(learner) is cls and learner.params.epsilon == 0.1
    with pytest.raises(IclRlError, match="thompson"):
        make_learner("posterior_sampling", make_env("bernoulli_bandit"))
    with pytest.raises(IclRlError, match="picks the sampler"):
        MazePosteriorSampling(make_env("dark_room"))
    with pytest.raises(IclRlError, match="epsilon"):
        make_learner("posterior_sampling", make_env("dark_maze"), epsilon=2.0)


class Recording:
    """Mixin: keeps `record(obs)` of the sampler's state after every act, in `log`."""

    def reset(self, n, generator=None):
        super().reset(n, generator)
        self.log = []

    def act(self, obs):
        action = super().act(obs)
        self.log.append(tuple(x.clone() for x in self.record(obs)))
        return action


class RecordingKeyDoor(Recording, KeyDoorPosteriorSampling):
    """The posterior of the phase it acted in, whether it drew a target, the door paid."""

    def record(self, obs):
        holding = obs[:, 2] > 0.5
        possible = torch.where(holding[:, None], self.door.possible, self.key.possible)
        return possible, self.resampled, self.opened


def test_key_to_door_reference_follows_the_learner():
    env = make_env("dark_key_to_door", size=4, episode_len=12)
    learner = RecordingKeyDoor(env, KeyDoorPosteriorSampling.Params(epsilon=0.3))
    h = record(env, learner, 64, 120, seed=3)
    ref = key_to_door_reference_probs(h.observations, h.actions, h.rewards, h.dones, env.size)
    assert ref.shape == (64, 120, 5)
    opened_any = False
    for t, (possible, resampled, opened) in enumerate(learner.log):
        want = goal_posterior_action_probs(possible, h.observations[:, t, :2].long(), env.size)
        want[opened] = torch.tensor([1.0, 0, 0, 0, 0])  # the door paid: stay
        opened_any |= bool(opened.any())
        assert torch.allclose(ref[:, t], want, atol=1e-6), t
        mixed = 0.7 * ref[resampled, t] + 0.3 / 5
        assert torch.allclose(h.extras["action_probs"][resampled, t], mixed, atol=1e-6), t
    assert opened_any and h.dones.any()
    # keys and doors are found: the second reward of an episode is the door's
    assert float(h.rewards.sum(1).mean()) > 2


def test_key_to_door_sampler_finds_both_and_then_acts_like_the_oracle():
    env = make_env("dark_key_to_door", size=5, episode_len=30)
    h = record(env, make_learner("posterior_sampling", env), 128, 30 * 12, seed=5)
    per_episode = h.rewards.view(128, 12, 30).sum(dim=2)
    assert float(per_episode[:, 0].mean()) < 1.9  # it has to search first
    assert float(per_episode[:, -3:].mean()) > 1.95  # then goes straight to both


def test_maze_oracle_rule_with_every_wall_seen():
    env = make_env("dark_maze", size=5, episode_len=24)
    tasks = env.sample_tasks(16, torch.Generator().manual_seed(1))
    env.reset(tasks, torch.Generator().manual_seed(2))
    n, s = 16, 25
    bits = tasks[:, 2:].reshape(n, s, 2) > 0.5
    goal = torch.nn.functional.one_hot(env.goal(), s).bool()
    for cell in range(s):
        env.pos = env.grid[torch.full((n,), cell)]
        probs = maze_posterior_action_probs(goal, env.pos, bits[..., 0], bits[..., 1], 5)
        assert torch.equal(probs.argmax(dim=1), env.optimal_action()), cell
        assert torch.equal(probs.max(dim=1).values, torch.ones(n))


def test_seen_walls_are_the_mazes_own():
    env = make_env("dark_maze", size=5, episode_len=24)
    h = record(env, make_learner("random", env), 8, 600, seed=4)
    right, up = maze_known_walls(h.observations, 5)
    true = env.tasks[:, 2:].reshape(8, 25, 2) > 0.5
    # what is seen is a wall of the maze, and a long random walk sees every interior wall
    assert not (right[:, -1] & ~true[..., 0]).any() and not (up[:, -1] & ~true[..., 1]).any()
    interior_r = torch.arange(25) < 20  # x < 4
    interior_u = torch.arange(25) % 5 < 4  # y < 4
    assert torch.equal(right[:, -1, interior_r], true[:, interior_r, 0])
    assert torch.equal(up[:, -1, interior_u], true[:, interior_u, 1])
    # knowledge only grows
    assert (right[:, 1:] >= right[:, :-1]).all()
    one_r, one_u = seen_walls(h.observations[:, 0], 5)
    assert torch.equal(one_r, right[:, 0]) and torch.equal(one_u, up[:, 0])


class RecordingMaze(Recording, MazePosteriorSampling):
    """The goal posterior, whether it drew a target, the walls seen."""

    def record(self, obs):
        return self.goal.possible, self.resampled, self.wall_right, self.wall_up


def test_maze_reference_follows_the_learner():
    env = make_env("dark_maze", size=4, episode_len=15)
    learner = RecordingMaze(env, MazePosteriorSampling.Params(epsilon=0.3))
    h = record(env, learner, 48, 90, seed=7)
    ref = maze_reference_probs(h.observations, h.actions, h.rewards, h.dones, env.size)
    assert ref.shape == (48, 90, 5)
    assert h.rewards.sum() > 0 and h.dones.any()
    right, up = maze_known_walls(h.observations, env.size)
    for t, (possible, resampled, wr, wu) in enumerate(learner.log):
        assert torch.equal(wr, right[:, t]) and torch.equal(wu, up[:, t]), t
        want = maze_posterior_action_probs(possible, h.observations[:, t, :2], wr, wu,
                                           env.size)
        assert torch.allclose(ref[:, t], want, atol=1e-6), t
        mixed = 0.7 * ref[resampled, t] + 0.3 / 5
        assert torch.allclose(h.extras["action_probs"][resampled, t], mixed, atol=1e-6), t


def test_maze_sampler_learns_the_maze_in_context():
    env = make_env("dark_maze", size=5, episode_len=24)
    h = record(env, make_learner("posterior_sampling", env), 128, 24 * 10, seed=9)
    per_episode = h.rewards.view(128, 10, 24).sum(dim=2)
    oracle = float(env.optimal_episode_return().mean())
    assert float(per_episode[:, 0].mean()) < 0.6 * oracle
    assert float(per_episode[:, -3:].mean()) > 0.85 * oracle


@pytest.mark.parametrize(("env_name", "params"), [
    ("dark_key_to_door", {"size": 5, "episode_len": 20}),
    ("dark_maze", {"size": 5, "episode_len": 24}),
])
def test_divergence_on_key_to_door_and_mazes(env_name, params):
    env = make_env(env_name, **params)
    assert env.has_tractable_posterior
    ctx = Context(env, np.ones(32), 5, 100)
    ps = policy_divergence(record(env, make_learner("posterior_sampling", env), 32, 100), ctx)
    rnd = policy_divergence(record(env, make_learner("random", env), 32, 100), ctx)
    assert len(ps["kl_to_ps_curve"]) == 100
    assert rnd["kl_to_ps"] > 1.0 and rnd["kl_to_ps"] > 5 * ps["kl_to_ps"]


def test_reference_shapes_are_checked():
    with pytest.raises(IclRlError, match=r"observations \[N, T, 6\]"):
        maze_reference_probs(torch.zeros(2, 5, 2), torch.zeros(2, 5, dtype=torch.long),
                             torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool), 4)
    with pytest.raises(IclRlError, match=r"observations \[N, T, 3\]"):
        key_to_door_reference_probs(torch.zeros(2, 5, 2), torch.zeros(2, 5, dtype=torch.long),
                                    torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool), 4)
    with pytest.raises(IclRlError, match="rules out every cell"):
        maze_posterior_action_probs(torch.zeros(1, 16, dtype=torch.bool), torch.zeros(1, 2),
                                    torch.zeros(1, 16, dtype=torch.bool),
                                    torch.zeros(1, 16, dtype=torch.bool), 4)


@pytest.mark.parametrize(("env_name", "params"), [
    ("dark_room", {"size": 5, "episode_len": 10}),
    ("dark_room_hard", {"size": 5, "episode_len": 10}),
    ("dark_key_to_door", {"size": 5, "episode_len": 20}),
    ("dark_maze", {"size": 5, "episode_len": 24}),
])
def test_per_step_sampler_is_the_reference(env_name, params):
    """Drawing a new cell at every step, the sampler acts with the reference's distribution."""
    env = make_env(env_name, **params)
    learner = make_learner("posterior_sampling", env, per_step=True)
    h = record(env, learner, 32, 120, seed=11)
    div = policy_divergence(h, Context(env, np.ones(32), 5, 120))
    assert div["kl_to_ps"] < 1e-4 and div["tv_to_ps"] < 1e-5
    kept = policy_divergence(record(env, make_learner("posterior_sampling", env), 32, 120,
                                    seed=11), Context(env, np.ones(32), 5, 120))
    assert kept["kl_to_ps"] > 0.01  # keeping a drawn cell is not the per-step reference


@pytest.mark.parametrize(("env_name", "params"), [
    ("dark_room", {"size": 5, "episode_len": 10}),
    ("dark_key_to_door", {"size": 5, "episode_len": 20}),
    ("dark_maze", {"size": 5, "episode_len": 24}),
])
def test_sampler_replayed_on_another_history_is_the_reference(env_name, params):
    """As an eval source, the sampler is replayed along the model's history (fed its
    transitions, never acting): every step is a fresh draw, the per-step reference's
    distribution, and the TV to the source is reported (a maze sampler used to fail here)."""
    env = make_env(env_name, **params)
    h = record(env, make_learner("random", env), 16, 90, seed=5, record_final_obs=True)
    src = replay_probs(make_learner("posterior_sampling", env), h)
    fn = {"dark_room": darkroom_reference_probs, "dark_key_to_door": key_to_door_reference_probs,
          "dark_maze": maze_reference_probs}[env_name]
    ref = fn(h.observations, h.actions, h.rewards, h.dones, params["size"])
    assert src.shape == ref.shape == (16, 90, 5)
    torch.testing.assert_close(src, ref.float(), atol=1e-5, rtol=0)
    ctx = Context(env, np.ones(16), 5, 90, source=make_learner("posterior_sampling", env))
    div = policy_divergence(h, ctx)
    assert div["tv_to_source"] > 0.3  # random against a sampler that walks to its goal


def test_context_episodes_is_dpts_deployment_rule():
    """context_episodes k: the belief is built from the last k finished episodes only and is
    fixed during an episode; with k at least the number of episodes it equals the whole
    history's belief at every episode start."""
    env = make_env("dark_room", size=5, episode_len=10)
    h = record(env, make_learner("random", env), 16, 60, seed=3, record_final_obs=True)
    whole = make_learner("posterior_sampling", env, per_step=True)
    last1 = make_learner("posterior_sampling", env, per_step=True, context_episodes=1)
    every = make_learner("posterior_sampling", env, per_step=True, context_episodes=6)
    for learner in (whole, last1, every):
        learner.reset(16)
    landed = env.obs_to_state(h.final_observations.reshape(-1, 2)).view(16, 60)
    for t in range(60):
        if t % 10 == 0:  # an episode starts: the belief of the finished episodes
            assert torch.equal(every.goal.possible, whole.goal.possible)
            start = last1.goal.possible.clone()
            if t >= 20:  # only the last episode's cells are ruled out
                lo = t - 10
                ruled = torch.ones(16, 25, dtype=torch.bool)
                for i in range(lo, t):
                    ruled[torch.arange(16), landed[:, i]] &= h.rewards[:, i] > 0
                found = (h.rewards[:, lo:t] > 0).any(1)
                assert torch.equal(start[~found], ruled[~found])
        else:
            assert torch.equal(last1.goal.possible, start)  # fixed during the episode
        for learner in (whole, last1, every):
            learner.observe(h.observations[:, t], h.actions[:, t], h.rewards[:, t],
                            h.final_observations[:, t], h.dones[:, t])
    with pytest.raises(IclRlError, match="set per_step: true"):
        make_learner("posterior_sampling", env, context_episodes=2)
    with pytest.raises(IclRlError, match="for dark_room and dark_room_hard"):
        make_learner("posterior_sampling", make_env("dark_maze", size=5, episode_len=24),
                     per_step=True, context_episodes=2)
    # the rule's cost in short episodes, measured: 20-step episodes with 5 of them in context
    # reach far less by episode 10 than 100-step episodes with 1
    room = make_env("dark_room", size=9, episode_len=20, start="center")
    long_room = make_env("dark_room", size=9, episode_len=100, start="center")
    fractions = []
    for e, k in ((room, 5), (long_room, 1)):
        tasks = e.task_set()[torch.arange(0, 81, 3).repeat(3)]
        hist = rollout(e, make_learner("posterior_sampling", e, per_step=True,
                                       context_episodes=k), tasks, 10 * e.spec.episode_len,
                       torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
        e.reset(tasks)
        last = hist.rewards.view(len(tasks), 10, -1)[:, -1].sum(1)
        fractions.append(float((last / e.optimal_episode_return()).mean()))
    assert fractions[0] < 0.5 < 0.6 < fractions[1]
