"""Dark Key-to-Door and dark mazes against plain-Python references and brute-force oracles."""

from __future__ import annotations

from collections import deque
from functools import cache

import pytest
import torch

from icl_rl.envs import DarkKeyToDoor, DarkMaze, make_env
from icl_rl.errors import IclRlError

MOVES = [(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)]  # stay, up, down, left, right


def clamp_move(x: int, y: int, a: int, size: int) -> tuple[int, int]:
    """The cell after action a on the open grid (the border stops the agent)."""
    dx, dy = MOVES[a]
    return min(max(x + dx, 0), size - 1), min(max(y + dy, 0), size - 1)


# -- Dark Key-to-Door -----------------------------------------------------------------------------
def ktd_step(state: tuple, a: int, key: tuple, door: tuple, size: int) -> tuple[tuple, int]:
    """Reference transition: ((x, y, has_key, opened), reward) after action a."""
    x, y, has_key, opened = state
    pos = clamp_move(x, y, a, size)
    if pos == key and not has_key:
        return (*pos, True, opened), 1
    if pos == door and has_key and not opened:
        return (*pos, has_key, True), 1
    return (*pos, has_key, opened), 0


def ktd_best_return(key: tuple, door: tuple, size: int, episode_len: int) -> int:
    """Exhaustive search over every action sequence (memoised on the state graph)."""

    @cache
    def best(state: tuple, steps_left: int) -> int:
        if steps_left == 0:
            return 0
        return max(r + best(s2, steps_left - 1)
                   for s2, r in (ktd_step(state, a, key, door, size) for a in range(5)))

    return best((size // 2, size // 2, False, False), episode_len)


@pytest.mark.parametrize(("size", "episode_len", "num"), [(3, 6, None), (3, 9, None), (4, 10, 40)])
def test_key_to_door_oracle_is_optimal(size, episode_len, num):
    env = DarkKeyToDoor(size, episode_len)
    tasks = env.task_set()
    if num is not None:
        tasks = tasks[torch.randperm(len(tasks), generator=torch.Generator().manual_seed(0))[:num]]
    env.reset(tasks)
    brute = [ktd_best_return((int(k[0]), int(k[1])), (int(k[2]), int(k[3])), size, episode_len)
             for k in tasks.long()]
    assert env.optimal_episode_return().tolist() == brute
    for _ in range(3):  # every episode of the same task pays the same, from the centre again
        total = torch.zeros(len(tasks))
        for _ in range(episode_len):
            _, reward, done = env.step(env.optimal_action())
            total += reward
        assert bool(done.all()) and total.tolist() == brute
        assert torch.equal(env.tasks, tasks)


def test_key_to_door_matches_reference_under_random_actions():
    size, episode_len = 4, 12
    env = DarkKeyToDoor(size, episode_len)
    tasks = env.sample_tasks(64, torch.Generator().manual_seed(1))
    # Make sure the corner cases are in: key on the start, door on the key, door on the start.
    c = size // 2
    tasks[:3] = torch.tensor([[c, c, 0, 0], [1, 3, 1, 3], [0, 0, c, c]], dtype=torch.float32)
    obs = env.reset(tasks.clone())
    keys = [tuple(k) for k in tasks[:, :2].long().tolist()]
    doors = [tuple(d) for d in tasks[:, 2:].long().tolist()]
    states = [(c, c, False, False)] * len(tasks)
    gen = torch.Generator().manual_seed(2)
    seen = set()
    for t in range(3 * episode_len):
        assert obs.tolist() == [[float(s[0]), float(s[1]), float(s[2])] for s in states]
        seen.update(env.obs_to_state(obs).tolist())
        action = torch.randint(0, 5, (len(tasks),), generator=gen)
        if t < episode_len:
            action[:3] = 0  # stay: key-on-start pays at step 1, door-on-key pays the next step
        obs, reward, done = env.step(action)
        out = [ktd_step(s, a, k, d, size) for s, a, k, d in
               zip(states, action.tolist(), keys, doors, strict=True)]
        assert reward.tolist() == [float(r) for _, r in out]
        if t < 2:
            assert reward[:2].tolist() == ([1.0, 0.0] if t == 0 else [0.0, 0.0])
        states = [(c, c, False, False)] * len(tasks) if bool(done.all()) else [s for s, _ in out]
    assert seen <= set(range(env.num_states)) and len(seen) > size * size  # key flag is seen


def test_key_to_door_split_disjoint_and_deterministic():
    env = make_env("dark_key_to_door")
    tasks = env.task_set()
    assert tasks.shape == (6561, 4) and env.spec.num_tasks == 6561
    assert len({tuple(t) for t in tasks.tolist()}) == 6561  # every (key, door) pair, once
    train, test = env.split(seed=3, heldout=0.2)
    assert len(test) == round(6561 * 0.2) and len(train) + len(test) == 6561
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(6561))
    train2, test2 = env.split(seed=3, heldout=0.2)
    assert torch.equal(train, train2) and torch.equal(test, test2)
    assert not torch.equal(test, env.split(seed=4, heldout=0.2)[1])


def test_key_to_door_bad_parameters():
    with pytest.raises(IclRlError, match="size must be an integer >= 2"):
        make_env("dark_key_to_door", size=1)
    with pytest.raises(IclRlError, match="episode_len must be a positive integer"):
        make_env("dark_key_to_door", episode_len=0)
    with pytest.raises(IclRlError, match="goal unreachable in the episode.*>= 24"):
        make_env("dark_key_to_door", size=9, episode_len=23)
    assert make_env("dark_key_to_door", size=9, episode_len=24).spec.episode_len == 24
    with pytest.raises(IclRlError, match=r"tasks must have shape \[N, 4\]"):
        make_env("dark_key_to_door").reset(torch.zeros(2, 2))


# -- Dark mazes -----------------------------------------------------------------------------------
def maze_walls(task: list[float], size: int) -> dict[tuple[int, int], list[bool]]:
    """Per cell, [up, down, left, right] blocked, read straight from the task's wall bits."""
    def bit(x: int, y: int, k: int) -> bool:
        return task[2 + 2 * (x * size + y) + k] > 0.5

    return {(x, y): [y == size - 1 or bit(x, y, 1), y == 0 or bit(x, y - 1, 1),
                     x == 0 or bit(x - 1, y, 0), x == size - 1 or bit(x, y, 0)]
            for x in range(size) for y in range(size)}


def maze_step(walls: dict, x: int, y: int, a: int, size: int) -> tuple[int, int]:
    """Reference move: a wall (or the border) leaves the agent where it is."""
    return (x, y) if a > 0 and walls[(x, y)][a - 1] else clamp_move(x, y, a, size)


def maze_bfs(walls: dict, goal: tuple, size: int) -> dict[tuple[int, int], int]:
    """Maze distance of every reachable cell to the goal."""
    dist, queue = {goal: 0}, deque([goal])
    while queue:
        x, y = queue.popleft()
        for a in range(1, 5):
            nxt = maze_step(walls, x, y, a, size)
            if nxt not in dist:
                dist[nxt] = dist[(x, y)] + 1
                queue.append(nxt)
    return dist


def kruskal_walls(weights: list[float], env: DarkMaze) -> list[float]:
    """Reference randomized Kruskal: edges by increasing weight, joined when in two trees."""
    parent = list(range(env.num_states))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    walls = [1.0] * (2 * env.num_states)
    for e in sorted(range(len(weights)), key=weights.__getitem__):
        a, b = root(int(env.edge_a[e])), root(int(env.edge_b[e]))
        if a != b:
            parent[a] = b
            walls[int(env.edge_bit[e])] = 0.0
    return walls


@pytest.mark.parametrize("size", [2, 5, 7])
def test_every_maze_is_perfect_and_kruskal(size):
    env = DarkMaze(size, size * size - 1)
    n, s = 100, size * size
    tasks = env.sample_tasks(n, torch.Generator().manual_seed(size))
    # The same draw as sample_tasks makes first: one weight per interior edge.
    weights = torch.rand(n, len(env.edge_a), generator=torch.Generator().manual_seed(size),
                         dtype=torch.float64)
    assert tasks.shape == (n, 2 + 2 * s)
    env.reset(tasks)
    for task, w, dist in zip(tasks.tolist(), weights.tolist(), env.dist.tolist(), strict=True):
        walls = maze_walls(task, size)
        bfs = maze_bfs(walls, (int(task[0]), int(task[1])), size)
        assert dist == [bfs[(x, y)] for x in range(size) for y in range(size)]  # the oracle's
        assert sum(1 for b in task[2:] if b == 0.0) == s - 1  # exactly s - 1 passages ...
        assert len(maze_bfs(walls, (0, 0), size)) == s  # ... that connect every cell: a tree
        assert all(task[2 + 2 * (x * size + size - 1) + 1] == 1.0 for x in range(size))  # top
        assert all(task[2 + 2 * ((size - 1) * size + y)] == 1.0 for y in range(size))  # right
        assert task[2:] == kruskal_walls(w, env)
    goals = {(int(t[0]), int(t[1])) for t in tasks}
    assert len(goals) > 1 and all(0 <= g < size for goal in goals for g in goal)
    if size == 7:  # random mazes differ
        assert len({tuple(t[2:]) for t in tasks.tolist()}) == n


def test_maze_walls_respected_and_visible():
    size = 5
    env = DarkMaze(size, 30)
    tasks = env.sample_tasks(64, torch.Generator().manual_seed(0))
    obs = env.reset(tasks.clone(), torch.Generator().manual_seed(1))
    walls = [maze_walls(t, size) for t in tasks.tolist()]
    goals = [(int(t[0]), int(t[1])) for t in tasks]
    gen = torch.Generator().manual_seed(2)
    blocked_moves = 0
    for _ in range(2 * env.spec.episode_len):
        pos = [(int(o[0]), int(o[1])) for o in obs]
        assert [o[2:] for o in obs.tolist()] == [[float(b) for b in w[p]]
                                                 for w, p in zip(walls, pos, strict=True)]
        action = torch.randint(0, 5, (len(tasks),), generator=gen)
        obs, reward, done = env.step(action)
        expected = [maze_step(w, *p, a, size)
                    for w, p, a in zip(walls, pos, action.tolist(), strict=True)]
        blocked_moves += sum(a > 0 and e == p for p, a, e in
                             zip(pos, action.tolist(), expected, strict=True))
        assert reward.tolist() == [float(e == g) for e, g in zip(expected, goals, strict=True)]
        if not bool(done.all()):
            assert [(int(o[0]), int(o[1])) for o in obs] == expected
        assert torch.equal(env.tasks, tasks)
    assert blocked_moves > 50


def test_maze_oracle_is_optimal():
    size, episode_len = 4, 15
    env = DarkMaze(size, episode_len)
    tasks = env.sample_tasks(24, torch.Generator().manual_seed(5))
    tasks[0, :2] = torch.tensor([0.0, 0.0])  # a corner goal
    obs = env.reset(tasks, torch.Generator().manual_seed(6))
    best = []  # exhaustive search over action sequences, per start cell
    for t in tasks.tolist():
        walls, goal = maze_walls(t, size), (int(t[0]), int(t[1]))

        @cache
        def value(x: int, y: int, steps_left: int, walls=walls, goal=goal) -> int:
            if steps_left == 0:
                return 0
            return max(int(nxt == goal) + value(*nxt, steps_left - 1)
                       for nxt in {maze_step(walls, x, y, a, size) for a in range(5)})

        best.append({(x, y): value(x, y, episode_len) for x in range(size) for y in range(size)})
        dist = maze_bfs(walls, goal, size)
        assert env.dist[len(best) - 1].tolist() == [dist[(x, y)] for x in range(size)
                                                    for y in range(size)]
    expected = [sum(b.values()) / len(b) for b in best]
    torch.testing.assert_close(env.optimal_episode_return(), torch.tensor(expected),
                               rtol=0, atol=1e-6)
    starts = set()
    for _ in range(12):  # oracle episodes from random starts each earn that start's optimum
        start = [(int(o[0]), int(o[1])) for o in obs]
        starts.update(enumerate(start))
        total = torch.zeros(len(tasks))
        for _ in range(episode_len):
            obs, reward, done = env.step(env.optimal_action())
            total += reward
        assert bool(done.all())
        assert total.tolist() == [float(b[s]) for b, s in zip(best, start, strict=True)]
    assert len(starts) > 6 * len(tasks)  # starts vary (12 draws of 16 cells: ~8.6 distinct)


def test_maze_bad_parameters_and_tasks():
    with pytest.raises(IclRlError, match="size must be an integer >= 2"):
        make_env("dark_maze", size=1)
    with pytest.raises(IclRlError, match="size must be an integer >= 2"):
        make_env("dark_maze", size=4.0)
    with pytest.raises(IclRlError, match="goal unreachable in the episode.*>= 48"):
        make_env("dark_maze", size=7, episode_len=47)
    with pytest.raises(IclRlError, match="goal unreachable in the episode.*>= 99"):
        make_env("dark_maze", size=10)
    env = make_env("dark_maze", size=7, episode_len=48)
    assert env.spec.num_tasks is None and env.spec.task_dim == 2 + 2 * 49
    with pytest.raises(IclRlError, match="no finite task set"):
        env.task_set()
    with pytest.raises(IclRlError, match="no finite task set"):
        env.split(0, 0.1)
    with pytest.raises(IclRlError, match=r"tasks must have shape \[N, 100\]"):
        env.reset(torch.zeros(2, 98))
    closed = env.sample_tasks(3, torch.Generator().manual_seed(0))
    closed[1, 2:] = 1.0  # every wall up: no cell reaches the goal but the goal itself
    with pytest.raises(IclRlError, match="task 1 is not a connected maze"):
        env.reset(closed)
