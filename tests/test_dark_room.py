"""Dark Room specifics: oracle against brute force, learners that learn, every pair generates."""

from __future__ import annotations

import itertools

import pytest
import torch

from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from icl_rl.dataset import load_histories
from icl_rl.envs import make_env
from icl_rl.envs.base import EnvSpec
from icl_rl.errors import IclRlError
from icl_rl.learners import compatible_pairs, make_learner
from icl_rl.rng import TaskGenerators
from icl_rl.rollout import rollout
from tests.reference import reference_q_learning_dark_room


def brute_force_return(env, goal: tuple[int, int]) -> float:
    """Best return over every action sequence of a short episode (plain Python)."""
    best = 0.0
    for seq in itertools.product(range(5), repeat=env.episode_len):
        x, y = env.size // 2, env.size // 2
        total = 0.0
        for a in seq:
            dx, dy = [(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)][a]
            x, y = min(max(x + dx, 0), env.size - 1), min(max(y + dy, 0), env.size - 1)
            total += float((x, y) == goal)
        best = max(best, total)
    return best


@pytest.mark.parametrize("name", ["dark_room", "dark_room_hard"])
def test_oracle_is_optimal_against_brute_force(name):
    env = make_env(name, size=3, episode_len=4)
    tasks = env.task_set()
    env.reset(tasks)
    promised = env.optimal_episode_return()
    got = torch.zeros(len(tasks))
    for _ in range(env.episode_len):
        _, r, _ = env.step(env.optimal_action())
        got += r
    assert torch.equal(got, promised)
    if name == "dark_room":
        for i, goal in enumerate(tasks.long().tolist()):
            assert brute_force_return(env, tuple(goal)) == promised[i].item()


def test_split_is_disjoint_deterministic_and_covers_all_goals():
    env = make_env("dark_room")
    train, test = env.split(seed=3, heldout=0.2)
    assert len(test) == 16 and len(train) == 65
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(81))
    again = env.split(seed=3, heldout=0.2)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
    assert not torch.equal(env.split(seed=4, heldout=0.2)[1], test)


def test_generated_split_never_trains_on_heldout_goals(tmp_path):
    out = generate(GenerateConfig(out=str(tmp_path / "d"), env="dark_room", learner="random",
                                  num_histories=50, steps=40, shard_size=50,
                                  heldout_fraction=0.2))
    train, test = load_histories(out, "train"), load_histories(out, "test")
    split = train.meta["task_split"]
    assert set(train.task_ids.tolist()) <= set(split["train"])
    assert set(test.task_ids.tolist()) <= set(split["test"])
    goals = make_env("dark_room").task_set()
    assert torch.equal(train.history.tasks, goals[train.task_ids])


@pytest.mark.parametrize(("learner", "kw"), [
    ("q_learning", {}), ("noise_distill", {"decay_steps": 600}), ("posterior_sampling", {}),
    ("noise_distill", {"decay_steps": 600, "demonstrator": "posterior_sampling"})])
def test_learner_improves_on_dark_room(learner, kw):
    env = make_env("dark_room")
    tasks = env.sample_tasks(256, torch.Generator().manual_seed(0))
    h = rollout(env, make_learner(learner, env, **kw), tasks, 1600,
                torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    returns = h.episode_returns().mean(dim=0)  # [80]
    env.reset(tasks)
    oracle = float(env.optimal_episode_return().mean())
    assert returns[0] < 0.25 * oracle  # the first episode is a search
    assert returns[-10:].mean() > 0.6 * oracle


def test_greedy_q_learning_keeps_improving_through_time_limits():
    """Optimistic greedy Q-learning bootstraps through the 20-step time limit (no terminal
    states here), so once it has found a goal it stays on it: its learning curve keeps
    rising. Cutting the bootstrap at the time limit made this curve fall after episode 80."""
    env = make_env("dark_room")
    tasks = env.task_set().repeat(2, 1)  # every goal, twice
    learner = make_learner("q_learning", env, lr=0.9, gamma=0.95, init_q=1.0, epsilon=0.0)
    h = rollout(env, learner, tasks, 20 * 150, torch.Generator().manual_seed(1),
                torch.Generator().manual_seed(2))
    env.reset(tasks)
    frac = (h.episode_returns().mean(0) / env.optimal_episode_return().mean()).tolist()
    assert frac[0] < 0.1 and frac[49] > 0.7 and frac[-1] > 0.9
    assert min(frac[100:]) >= frac[79] - 0.02  # no decline late in learning


@pytest.mark.parametrize("kw", [{}, {"lr": 0.9, "gamma": 0.95, "init_q": 1.0, "epsilon": 0.0}])
def test_q_learning_matches_one_task_python_reference(kw):
    """The batched Q-learner (tie order table, reused Q-row indices) against plain Python on
    the same random stream: identical actions and rewards, also in the greedy optimistic
    setting where almost every choice is a tie."""
    env = make_env("dark_room")
    goals = env.task_set()[torch.tensor([0, 5, 40, 44, 80, 17, 63, 31])]
    h = rollout(env, make_learner("q_learning", env, **kw), goals, 300,
                torch.Generator().manual_seed(1), torch.Generator().manual_seed(7))
    actions, rewards = reference_q_learning_dark_room(kw, goals, 300, agent_seed=7)
    assert h.actions.tolist() == actions
    assert h.rewards.tolist() == rewards
    assert h.rewards.sum() > 0  # the goals were found, so the updates were exercised


@pytest.mark.parametrize("num_actions", [5, 8])
def test_q_learning_breaks_ties_uniformly_among_the_maxima(num_actions):
    """Greedy choice: uniform over the tied best actions, never another one (an order table
    up to 6 actions, one uniform per action beyond)."""
    class Grid:  # the parts of a gridworld Q-learning reads
        spec = EnvSpec("grid", 1, num_actions, 10, 1, 0.0, 1.0)
        num_states = 1

        def obs_to_state(self, obs):
            return obs[:, 0].long()

    learner = make_learner("q_learning", Grid(), epsilon=0.0, min_epsilon=0.0)
    n = 40000
    learner.reset(n, torch.Generator().manual_seed(0))
    learner.q[:, 0, 1] = 2.0  # actions 1 and 3 tie for the best
    learner.q[:, 0, 3] = 2.0
    learner.q[:, 0, 0] = 1.5
    counts = torch.bincount(learner.act(torch.zeros(n, 1)), minlength=num_actions)
    assert counts[1] + counts[3] == n
    assert abs(counts[1].item() / n - 0.5) < 0.01
    learner.q.fill_(0.0)  # every action ties
    counts = torch.bincount(learner.act(torch.zeros(n, 1)), minlength=num_actions)
    assert ((counts.float() / n - 1 / num_actions).abs() < 0.01).all()


def test_observe_sees_where_an_episode_ended_not_the_reset():
    """At a time limit, `observe` gets the episode's last observation (to bootstrap from);
    the next `act` gets the next episode's start."""
    env = make_env("dark_room", size=5, episode_len=6)
    seen = []

    class Spy:
        def reset(self, n, generator=None):
            pass

        def act(self, obs):
            seen.append(("act", obs.clone()))
            return torch.full((obs.shape[0],), 4)  # always right: ends the episode off-centre

        def observe(self, obs, action, reward, next_obs, done):
            seen.append(("observe", next_obs.clone(), bool(done[0])))

    rollout(env, Spy(), env.task_set()[:3], 7)
    end = next(i for i, e in enumerate(seen) if e[0] == "observe" and e[2])
    assert not torch.equal(seen[end][1], seen[0][1])  # where episode 1 ended ...
    assert torch.equal(seen[end + 1][1], seen[0][1])  # ... and episode 2 starts at the start


def paired_streams(pairs: int) -> TaskGenerators:
    """Agent random streams shared by rows 2i and 2i+1 (the same draws, different goals)."""
    return TaskGenerators([1000 + i for i in range(pairs) for _ in range(2)])


def test_posterior_sampling_explores_without_knowing_the_goal():
    """Before its first reward the explorer acts the same whatever the goal; then it exploits."""
    env = make_env("dark_room")
    tasks = env.task_set()[[0, 80]].repeat(64, 1)  # two far-apart goals, 64 times each
    agent = make_learner("posterior_sampling", env)
    h = rollout(env, agent, tasks, 200, None, paired_streams(64))
    first = (h.rewards > 0).float().argmax(dim=1)  # step of the first reward
    a, b = h.actions[0::2], h.actions[1::2]  # the same random stream, different goals
    both_searching = torch.arange(200) < torch.minimum(first[0::2], first[1::2])[:, None]
    assert both_searching.sum(dim=1).float().mean() > 20  # a real search, not one walk
    assert torch.equal(a[both_searching], b[both_searching])
    assert len({tuple(x) for x in h.actions[0::2, :3].tolist()}) > 3  # targets are sampled
    assert (h.rewards.sum(dim=1) > 0).all()
    returns = h.episode_returns()
    env.reset(tasks)
    assert (returns[:, -1] == env.optimal_episode_return()).all()  # exploits once found


def test_noise_distill_with_a_searching_demonstrator_does_not_leak_the_goal():
    """Noise injected into posterior sampling: before the first reward the actions do not
    depend on the goal (the oracle demonstrator's do), and the demonstrator learns from the
    noisy steps too, so it exploits once the noise is gone."""
    env = make_env("dark_room")
    tasks = env.task_set()[[0, 80]].repeat(64, 1)
    for demo, leaks in (("posterior_sampling", False), ("oracle", True)):
        agent = make_learner("noise_distill", env, demonstrator=demo, eps_start=0.5,
                             eps_end=0.0, decay_steps=200)
        h = rollout(env, agent, tasks, 400, None, paired_streams(64))
        first = (h.rewards > 0).float().argmax(dim=1)
        searching = torch.arange(400) < torch.minimum(first[0::2], first[1::2])[:, None]
        same = torch.equal(h.actions[0::2][searching], h.actions[1::2][searching])
        assert same != leaks, demo
        returns = h.episode_returns()
        env.reset(tasks)
        assert (returns[:, -1] == env.optimal_episode_return()).float().mean() > 0.9
    with pytest.raises(IclRlError, match="demonstrator 'nope'"):
        make_learner("noise_distill", env, demonstrator="nope")
    with pytest.raises(IclRlError, match="cannot be noise_distill"):
        make_learner("noise_distill", env, demonstrator="noise_distill")


def test_noise_distill_with_a_start_per_history():
    """eps_start_min: each history starts at its own noise level, uniform in [eps_start_min,
    eps_start], and anneals to eps_end; how often a history departs from the oracle follows
    its own level."""
    env = make_env("dark_room")
    tasks = env.sample_tasks(512, torch.Generator().manual_seed(0))
    agent = make_learner("noise_distill", env, eps_start_min=0.0, eps_start=1.0, eps_end=0.0,
                         decay_steps=4000)
    h = rollout(env, agent, tasks, 400, torch.Generator().manual_seed(1),
                TaskGenerators.for_tasks(0, 2, range(512)))
    start = agent.start
    assert start.shape == (512,) and 0 <= start.min() < 0.05 and 0.95 < start.max() <= 1
    assert abs(start.mean().item() - 0.5) < 0.05
    departs = (h.actions != h.optimal_actions).float().mean(dim=1)
    expected = start * (1 - 0.05) * 0.8  # mean noise over the 400 steps, 4 of 5 actions differ
    assert (departs - expected).abs().mean() < 0.05
    assert torch.corrcoef(torch.stack([departs, start]))[0, 1] > 0.9
    agent.steps = 4000
    assert torch.equal(agent.epsilon(), torch.zeros(512))
    fixed = make_learner("noise_distill", env, decay_steps=4000)
    fixed.reset(4)
    assert fixed.epsilon() == 1.0  # without eps_start_min one level for all, no extra draw
    with pytest.raises(IclRlError, match="eps_start_min <= eps_start"):
        make_learner("noise_distill", env, eps_start_min=0.8, eps_start=0.5)


def test_impossible_tasks_are_refused():
    with pytest.raises(IclRlError, match="raise episode_len to >= 8"):
        make_env("dark_room", size=9, episode_len=7)
    with pytest.raises(IclRlError, match="size must be an integer >= 2"):
        make_env("dark_room", size=1)
    with pytest.raises(IclRlError, match="needs a gridworld"):
        make_learner("q_learning", make_env("bernoulli_bandit"))


@pytest.mark.parametrize(("env_name", "learner"), compatible_pairs())
def test_every_pair_generates(env_name, learner, tmp_path):
    steps = 2 * make_env(env_name).spec.episode_len
    out = generate(GenerateConfig(out=str(tmp_path / "d"), env=env_name, learner=learner,
                                  num_histories=12, steps=steps, shard_size=8,
                                  heldout_fraction=0.25))
    h = load_histories(out, "train").history
    assert h.actions.shape == (9, steps)
