"""Bayesian reference computations: how Bayesian is a learned in-context learner?

- the exact Bayes-optimal policy of a finite-horizon Beta-Bernoulli bandit (backward induction
  over posterior counts) and the Gittins-index policy, its classic approximation;
- posterior sampling's action distribution, exactly: P(arm i has the highest mean) under
  independent Beta or Normal posteriors (quadrature), and the hidden-cell posteriors of Dark
  Room, Key-to-Door (key and door) and dark mazes (the goal; the maze planned optimistically);
- the same along recorded histories ([N, T] -> [N, T, A]), and the KL divergence / total
  variation that compare an agent's action distribution with them (Ortega et al. 2019).

Counting and quadrature are numpy / scipy in float64 (arrays in, arrays out); the functions over
histories take torch tensors and return float32 tensors on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from scipy import fft as sp_fft
from scipy import special
from torch import Tensor

from icl_rl.envs.gridworld import MOVES, GridWorld
from icl_rl.errors import IclRlError

TIE_TOL = 1e-9
"""Actions whose values are within this of the best are tied (the policy splits evenly)."""
TAIL = 1e-12
"""Posterior mass per arm left outside the quadrature interval of `prob_best_*`."""
NORMAL_Z = 7.5
"""Standard deviations either side of a Normal posterior's mean kept in the interval."""

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]


# -- posterior count states of K Beta-Bernoulli arms --------------------------------------------


def _binomials(n: int, r: int) -> np.ndarray:
    """C(b, j) for 0 <= b < n, 0 <= j < r: [n, r] int64 (exact)."""
    out = np.zeros((n, r), dtype=np.int64)
    for b in range(n):
        for j in range(min(b, r - 1) + 1):
            out[b, j] = math.comb(b, j)
    return out


def _colex_combinations(n: int, k: int) -> np.ndarray:
    """Every k-subset of range(n), increasing within a row, rows in colex order: [C(n, k), k].

    The subsets of range(m) come first for every m, so the table of a smaller n is a prefix.
    """
    dtype = np.int16 if n < 2**15 else np.int32
    table = np.arange(n, dtype=dtype)[:, None]
    for r in range(2, k + 1):
        tops = np.arange(r - 1, n)  # the largest element m, then any (r-1)-subset of range(m)
        lengths = np.array([math.comb(int(m), r - 1) for m in tops], dtype=np.int64)
        rows = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        table = np.concatenate([table[rows], np.repeat(tops.astype(dtype), lengths)[:, None]],
                               axis=1)
    return table


class _CountStates:
    """The posterior count states of K arms over H pulls, indexed layer by layer.

    A state after t pulls is c = (s_0, f_0, ..., s_{K-1}, f_{K-1}) with sum t, a composition of
    t into D = 2K parts. Its rank is the colex rank of the stars-and-bars positions
    b_j = c_0 + ... + c_j + j (j < D - 1): rank = sum_j C(b_j, j + 1). The rank ignores the last
    part, so layer t is the prefix [0, C(t + D - 1, D - 1)) of one table, and adding one to part
    j maps rank r to r + sum_{k >= j} C(b_k, k) in layer t + 1 (r itself for the last part).
    """

    def __init__(self, num_arms: int, horizon: int, max_states: int, owner: str) -> None:
        k, d = num_arms, 2 * num_arms
        self.num_arms, self.horizon, self.d = k, horizon, d
        self.sizes = [math.comb(t + d - 1, d - 1) for t in range(horizon)]  # states of layer t
        self.total = math.comb(horizon - 1 + d, d)  # sum of the sizes
        if self.total > max_states:
            need = self.total * 8 + self.sizes[-1] * (6 * d - 2)  # values + tables below
            raise IclRlError(
                f"{owner}: {k} arms over horizon {horizon} have {self.total:,} posterior states "
                f"(about {need / 2**30:.1f} GiB), above max_states={max_states:,}; raise "
                "max_states if the memory is there, or use the Gittins-index approximation "
                "(GittinsPolicy)")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])  # [H + 1]
        n = horizon + d - 2  # bar positions lie in range(n)
        self.binom = _binomials(n, d)  # [n, D]
        bars = _colex_combinations(n, d - 1)  # [M, D - 1], M = sizes[H - 1]
        m = bars.shape[0]
        # one column at a time: the tables are (D - 1) x M, the largest layer
        self.parts = np.empty((d - 1, m), dtype=bars.dtype)  # c_0 .. c_{D-2}
        self.parts[0] = bars[:, 0]
        for j in range(1, d - 1):
            np.subtract(bars[:, j], bars[:, j - 1] + 1, out=self.parts[j])
        # pulls of arms 0..K-2 (arm K-1's pulls are t minus these)
        self.others = (bars[:, -1].astype(np.int32) - (d - 2)) - self.parts[-1]  # [M]
        index_type = np.int32 if self.sizes[-1] < 2**31 else np.int64
        self.succ = np.empty((d - 1, m), dtype=index_type)
        shift = np.arange(m, dtype=np.int64)
        for j in range(d - 2, -1, -1):  # suffix sums of C(b_k, k)
            shift += self.binom[bars[:, j], j]
            self.succ[j] = shift

    def counts(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Successes and failures [M_t, K] (int64) of every state of layer t, in rank order."""
        size, k = self.sizes[t], self.num_arms
        parts = self.parts[:, :size].astype(np.int64)  # [D - 1, M_t]
        last = t - parts.sum(axis=0)
        full = np.concatenate([parts, last[None]]).T  # [M_t, D]
        return full[:, 0::2].reshape(size, k), full[:, 1::2].reshape(size, k)

    def rank(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ranks [N] of states c [N, D] in their layers, and [N, D] rank shifts of their
        successors (adding one to part j: rank + shift[:, j] in the next layer)."""
        d = self.d
        bars = np.cumsum(c[:, :-1], axis=1) + np.arange(d - 1)  # [N, D - 1]
        cols = np.arange(d - 1)
        rank = self.binom[bars, cols + 1].sum(axis=1)
        shift = np.zeros(c.shape, dtype=np.int64)
        shift[:, :-1] = np.cumsum(self.binom[bars, cols][:, ::-1], axis=1)[:, ::-1]
        return rank, shift


def _check_prior(prior, owner: str) -> tuple[float, float]:
    a, b = (float(x) for x in prior)
    if not (a > 0 and b > 0):
        raise IclRlError(f"{owner}: the Beta prior (a, b) must be positive, got {prior}")
    return a, b


def _check_counts(successes, failures, num_arms: int, owner: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Success and failure counts as int64 arrays [N, K], checked."""
    s = np.asarray(successes)
    f = np.asarray(failures)
    if s.ndim != 2 or s.shape != f.shape or s.shape[1] != num_arms:
        raise IclRlError(f"{owner}: successes and failures must both be [N, {num_arms}] arrays, "
                         f"got {s.shape} and {f.shape}")
    si, fi = np.rint(s).astype(np.int64), np.rint(f).astype(np.int64)
    if (si != s).any() or (fi != f).any() or (si < 0).any() or (fi < 0).any():
        raise IclRlError(f"{owner}: success and failure counts must be non-negative integers")
    return si, fi


def _tied_argmax(values: np.ndarray) -> np.ndarray:
    """Uniform distribution over the maximisers of each row (within TIE_TOL): [N, K]."""
    tied = values >= values.max(axis=1, keepdims=True) - TIE_TOL
    return tied / tied.sum(axis=1, keepdims=True)


class BernoulliBayesOptimal:
    """The exact Bayes-optimal policy of a K-armed Bernoulli bandit over a finite horizon.

    Arms have independent Beta(a, b) priors on their means; the policy maximises the expected
    total reward of `horizon` pulls. Backward induction over the posterior counts: the value of
    a state after t pulls is max_i m_i (1 + V(success on i)) + (1 - m_i) V(failure on i), with
    m_i = (a + s_i) / (a + b + s_i + f_i), from layer H - 1 (V = 0 after it) down to layer 0,
    one vectorised numpy pass per layer. Every layer's values are kept (one float64 per state),
    so the policy can be queried at any state: there are C(H - 1 + 2K, 2K) of them (2 arms:
    4.4 M at H = 100; 3 arms at H = 30: 1.6 M; 5 arms at H = 10: 0.09 M). The default budget
    of 5e7 states allows H <= 184 for 2 arms, 54 for 3, 31 for 4, 22 for 5; on top of the
    values, the index tables take ~(12K - 2) bytes per state of the last layer.
    """

    def __init__(self, num_arms: int, horizon: int, prior: tuple[float, float] = (1.0, 1.0),
                 max_states: int = 50_000_000) -> None:
        name = "BernoulliBayesOptimal"
        if not (isinstance(num_arms, int) and num_arms >= 1):
            raise IclRlError(f"{name}: num_arms must be a positive integer, got {num_arms!r}")
        if not (isinstance(horizon, int) and horizon >= 1):
            raise IclRlError(f"{name}: horizon must be a positive integer, got {horizon!r}")
        self.num_arms, self.horizon = num_arms, horizon
        self.prior = _check_prior(prior, name)
        self.states = _CountStates(num_arms, horizon, max_states, name)
        self.values = np.empty(self.states.total)  # layer t at offsets[t]: V_t by rank
        self._solve()

    def _solve(self, chunk: int = 2**20) -> None:
        """Backward induction, layer H - 1 down to 0 (in chunks of states: bounded buffers)."""
        st, (a, b), k = self.states, self.prior, self.num_arms
        ab = a + b
        parts = st.parts
        for t in range(self.horizon - 1, -1, -1):
            size, off = st.sizes[t], st.offsets[t]
            nxt = None
            if t + 1 < self.horizon:
                nxt = self.values[st.offsets[t + 1]:st.offsets[t + 1] + st.sizes[t + 1]]
            for start in range(0, size, chunk):
                part = slice(start, min(start + chunk, size))
                out = self.values[off + part.start:off + part.stop]
                for i in range(k):
                    s = parts[2 * i, part].astype(np.float64)
                    if i < k - 1:
                        n = s + parts[2 * i + 1, part]
                    else:
                        n = (t - st.others[part]).astype(np.float64)
                    m = (a + s) / (ab + n)
                    if nxt is None:
                        q = m
                    else:
                        win = nxt[st.succ[2 * i, part]]
                        lose = nxt[st.succ[2 * i + 1, part]] if i < k - 1 else nxt[part]
                        q = m * (1.0 + win) + (1.0 - m) * lose
                    if i == 0:
                        out[:] = q
                    else:
                        np.maximum(out, q, out=out)

    def value(self) -> float:
        """Expected total reward of the Bayes-optimal policy over the horizon, from the prior."""
        return float(self.values[0])

    def q_values(self, successes, failures) -> np.ndarray:
        """Expected reward-to-go [N, K] of pulling each arm, then acting optimally.

        `successes` and `failures` are [N, K] counts; a row's step is its total t < horizon
        (rows may be at different steps).
        """
        k, h, st = self.num_arms, self.horizon, self.states
        s, f = _check_counts(successes, failures, k, "BernoulliBayesOptimal.q_values")
        t = (s + f).sum(axis=1)
        if (t >= h).any():
            raise IclRlError(f"BernoulliBayesOptimal.q_values: a state after {int(t.max())} "
                             f"pulls, but the policy was solved for horizon {h}; solve it for a "
                             "longer horizon")
        c = np.stack([s, f], axis=2).reshape(len(s), 2 * k)
        rank, shift = st.rank(c)
        a, b = self.prior
        m = (a + s.astype(np.float64)) / ((a + b) + (s + f).astype(np.float64))
        more = (t + 1 < h)[:, None]
        base = st.offsets[np.minimum(t + 1, h - 1)] + rank  # [N]
        idx = np.minimum(base[:, None] + shift, st.total - 1)
        nxt = np.where(more, self.values[idx], 0.0)  # [N, D]
        return m * (1.0 + nxt[:, 0::2]) + (1.0 - m) * nxt[:, 1::2]

    def action_probs(self, successes, failures) -> np.ndarray:
        """The policy [N, K]: uniform over the arms of maximal Q-value (ties within 1e-9)."""
        return _tied_argmax(self.q_values(successes, failures))


def expected_total_reward(policy: Policy, num_arms: int, horizon: int,
                          prior: tuple[float, float] = (1.0, 1.0),
                          max_states: int = 50_000_000) -> float:
    """Exact expected total reward of any count-based policy over `horizon` pulls of a
    Beta-Bernoulli bandit (means drawn from the prior): backward policy evaluation over every
    posterior count state, two layers in memory at a time.

    `policy(successes, failures)` maps count arrays [M, K] (int64, all after the same number of
    pulls) to action distributions [M, K].
    """
    name = "expected_total_reward"
    a, b = _check_prior(prior, name)
    st = _CountStates(num_arms, horizon, max_states, name)
    nxt = np.zeros(0)
    for t in range(horizon - 1, -1, -1):
        s, f = st.counts(t)
        probs = np.asarray(policy(s, f), dtype=np.float64)
        if probs.shape != s.shape:
            raise IclRlError(f"{name}: the policy returned {probs.shape} for {s.shape} states; "
                             "return one distribution over the arms per state")
        m = (a + s) / (a + b + s + f)
        if t == horizon - 1:
            q = m
        else:
            size = st.sizes[t]
            succ = st.succ[:, :size]
            win = nxt[succ[0::2]].T  # [M, K]
            lose = np.concatenate([nxt[succ[1::2]], nxt[None, :size]]).T
            q = m * (1.0 + win) + (1.0 - m) * lose
        nxt = (probs * q).sum(axis=1)
    return float(nxt[0])


# -- Gittins indices -----------------------------------------------------------------------------


def _retirement_pass(a: np.ndarray, b: np.ndarray, lam: np.ndarray, discount: float,
                     depth: int, visit: Callable[[int, np.ndarray, np.ndarray], None]) -> None:
    """Backward induction of the retirement (calibration) problem, one column per (arm, lam).

    Column r is an arm with posterior Beta(a_r + s, b_r + k - s) after k more pulls (a, b [R] or
    [1]) that may retire for lam_r per step forever (lam [R]). Past `depth` pulls the posterior
    is frozen: the value is max(lam, mean) / (1 - discount) per state, a lower bound off by at
    most discount^depth / (1 - discount). At every layer k = depth - 1 .. 0, `visit(k, cont,
    dcont)` sees the value of pulling once then stopping optimally [k + 1, R] (row s: s
    successes) and its derivative in lam. In place on contiguous row blocks, no allocation.
    """
    g = discount
    retire = lam / (1.0 - g)  # [R]
    dretire = 1.0 / (1.0 - g)
    succ = np.arange(depth + 1, dtype=np.float64)[:, None]
    mean = (a + succ) / (a + b + depth)  # [depth + 1, R or 1]
    w = np.maximum(retire, mean / (1.0 - g))  # [depth + 1, R]: value at layer k + 1
    dw = np.where(retire >= mean / (1.0 - g), dretire, 0.0)
    cols = w.shape[1]
    cont, dcont, tmp = (np.empty((depth, cols)) for _ in range(3))
    mean = np.empty((depth, len(a)))
    stop = np.empty((depth, cols), dtype=bool)
    for k in range(depth - 1, -1, -1):
        n = k + 1
        m, c, dc, t, st = mean[:n], cont[:n], dcont[:n], tmp[:n], stop[:n]
        np.add(a, succ[:n], out=m)
        m /= a + b + k
        # cont = m (1 + g w[s + 1]) + (1 - m) g w[s] = g w[s] + m (1 + g (w[s + 1] - w[s]))
        np.subtract(w[1:n + 1], w[:n], out=t)
        t *= g
        t += 1.0
        t *= m
        np.multiply(w[:n], g, out=c)
        c += t
        np.subtract(dw[1:n + 1], dw[:n], out=t)
        t *= m
        np.add(dw[:n], t, out=dc)
        dc *= g
        visit(k, c, dc)
        np.greater_equal(retire, c, out=st)
        np.maximum(c, retire, out=w[:n])
        np.copyto(dw[:n], dc)
        np.copyto(dw[:n], dretire, where=st)


def _calibration_gap(a: np.ndarray, b: np.ndarray, lam: np.ndarray, discount: float,
                     depth: int) -> tuple[np.ndarray, np.ndarray]:
    """G(lam) [Q] = value of pulling Beta(a, b) once then stopping optimally (looking `depth`
    pulls ahead) minus retiring for lam per step, and dG/dlam (<= -1)."""
    out = {}

    def visit(k, cont, dcont):
        if k == 0:
            out["gap"] = cont[0] - lam / (1.0 - discount)
            out["slope"] = dcont[0] - 1.0 / (1.0 - discount)

    _retirement_pass(a, b, lam, discount, depth, visit)
    return out["gap"], out["slope"]


def _newton(a: np.ndarray, b: np.ndarray, lam: np.ndarray, discount: float, depth: int,
            tol: float, max_iter: int) -> np.ndarray:
    """Roots of the calibration gap by Newton's method from `lam` (any start: G is convex and
    decreasing, so after at most one step every iterate is a lower bound that climbs to the
    root, exactly once on the root's linear piece). Stops where a step is below `tol`."""
    lam = lam.astype(np.float64).copy()
    active = np.arange(len(lam))
    for _ in range(max_iter):
        if active.size == 0:
            break
        gap, slope = _calibration_gap(a[active], b[active], lam[active], discount, depth)
        step = gap / -slope
        lam[active] = np.clip(lam[active] + step, 0.0, 1.0)
        active = active[np.abs(step) > tol]
    return lam


def _default_truncation(discount: float) -> int:
    """Pulls the calibration looks ahead by default: discount^depth < 1e-6."""
    return math.ceil(math.log(1e-6) / math.log(discount))


def gittins_indices(alpha, beta, discount: float, truncation: int | None = None,
                    tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Gittins indices of Bernoulli arms with Beta(alpha, beta) posteriors (equal shapes).

    Calibration: the index is the retirement reward lam per step at which pulling once and then
    stopping optimally is worth exactly retiring now (discounted, infinite horizon). The gap
    G(lam) is convex and decreasing: Newton's method from the posterior mean, every evaluation
    a backward induction over `truncation` further pulls (default: discount^truncation < 1e-6),
    vectorised over the queries; exact in the limit of the truncation. Cost: queries x
    truncation^2 / 2 cells per Newton step (~6 steps); for a whole table use `GittinsPolicy`.
    """
    if not 0 < discount < 1:
        raise IclRlError(f"gittins_indices: discount must be in (0, 1), got {discount}")
    a, b = np.broadcast_arrays(np.asarray(alpha, dtype=np.float64),
                               np.asarray(beta, dtype=np.float64))
    if not ((a > 0).all() and (b > 0).all()):
        raise IclRlError("gittins_indices: Beta parameters must be positive")
    truncation = _default_truncation(discount) if truncation is None else truncation
    if truncation < 1:
        raise IclRlError(f"gittins_indices: truncation must be >= 1, got {truncation}")
    shape = a.shape
    a, b = a.ravel(), b.ravel()
    return _newton(a, b, a / (a + b), discount, truncation, tol, max_iter).reshape(shape)


def _gittins_grid(a0: float, b0: float, depth: int, discount: float, truncation: int,
                  levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds [depth, depth] on the indices of every Beta(a0 + s, b0 + f) with
    s + f < depth, all at once: one retirement pass over the whole grid (looking ahead to
    s + f = depth - 1 + truncation) per retirement level lam in linspace(0, 1, levels + 1),
    vectorised over the levels. A state's index lies between the last level where its gap is
    >= 0 and the next; the tangent there (G is convex) gives the lower bound, the chord the
    upper one."""
    lam = np.linspace(0.0, 1.0, levels + 1)
    lower = np.full((depth, depth), np.nan)
    upper = np.full((depth, depth), np.nan)
    retire, dretire = lam / (1.0 - discount), 1.0 / (1.0 - discount)

    def visit(k, cont, dcont):
        if k >= depth:
            return
        gap = cont - retire  # [k + 1, L + 1], decreasing along the levels
        j = np.minimum((gap >= 0).sum(axis=1) - 1, levels - 1)  # gap(0) > 0 > gap(1)
        row = np.arange(k + 1)
        left, right = gap[row, j], gap[row, j + 1]
        lower[row, k - row] = lam[j] - left / (dcont[row, j] - dretire)
        upper[row, k - row] = lam[j] + left * (lam[1] - lam[0]) / (left - right)

    _retirement_pass(np.array([a0]), np.array([b0]), lam, discount, depth - 1 + truncation,
                     visit)
    return lower, upper


class GittinsPolicy:
    """Pull the arm of highest Gittins index: an APPROXIMATION of the finite-horizon
    Bayes-optimal policy (`BernoulliBayesOptimal`), not the policy itself.

    Gittins indices are optimal for the infinite-horizon discounted bandit. Here a horizon H is
    approximated by one discount for every step (default 1 - 1/H, an effective horizon of H
    pulls), so the policy ignores how many pulls are left, and the calibration looks
    `truncation` pulls past the last state of the table (default H: no arm of an H-pull bandit
    is pulled more). The indices of every arm state reachable in H pulls (s + f < H) are
    bracketed at once on the state grid (`levels` retirement levels, vectorised: 0.1 s at
    H = 100, ~5 s at H = 500) and the bracket's midpoint is used; brackets wider than `tol` are
    closed by Newton's method per state (as in `gittins_indices`: cost ~(2H)^2 / 2 per state
    and step, so a small `tol` is affordable only for short horizons). `error` is the largest
    remaining half-width (a few 1e-4 with the defaults: it only matters for near-ties). Ties
    (within 1e-9) split evenly.
    """

    def __init__(self, num_arms: int, horizon: int, discount: float | None = None,
                 prior: tuple[float, float] = (1.0, 1.0), truncation: int | None = None,
                 tol: float = 1e-3, levels: int = 1024) -> None:
        if not (isinstance(horizon, int) and horizon >= 1):
            raise IclRlError(f"GittinsPolicy: horizon must be a positive integer, got {horizon!r}")
        self.num_arms, self.horizon = num_arms, horizon
        self.discount = 1.0 - 1.0 / max(horizon, 2) if discount is None else discount
        if not 0 < self.discount < 1:
            raise IclRlError(f"GittinsPolicy: discount must be in (0, 1), got {self.discount}")
        self.truncation = horizon if truncation is None else truncation
        if self.truncation < 1:
            raise IclRlError(f"GittinsPolicy: truncation must be >= 1, got {truncation}")
        a, b = self.prior = _check_prior(prior, "GittinsPolicy")
        lower, upper = _gittins_grid(a, b, horizon, self.discount, self.truncation, levels)
        self.table = (lower + upper) / 2  # [s, f] -> index (nan where s + f >= horizon)
        for k in range(horizon):  # Newton from the lower bound, layer by layer (one depth)
            s = np.arange(k + 1)
            wide = s[upper[s, k - s] - lower[s, k - s] > tol]
            if wide.size:
                self.table[wide, k - wide] = _newton(
                    a + wide.astype(np.float64), b + (k - wide).astype(np.float64),
                    lower[wide, k - wide], self.discount, horizon - 1 + self.truncation - k,
                    min(tol, 1e-10), 100)
                lower[wide, k - wide] = upper[wide, k - wide] = self.table[wide, k - wide]
        self.error = float(np.nanmax(upper - lower) / 2)

    def indices(self, successes, failures) -> np.ndarray:
        """The Gittins index of every arm [N, K] (counts [N, K] with s + f < horizon)."""
        s, f = _check_counts(successes, failures, self.num_arms, "GittinsPolicy")
        if (s + f >= self.horizon).any():
            raise IclRlError(f"GittinsPolicy: an arm pulled {int((s + f).max())} times, but the "
                             f"indices were tabulated for horizon {self.horizon}; build the "
                             "policy for a longer horizon")
        return self.table[s, f]

    def action_probs(self, successes, failures) -> np.ndarray:
        """The policy [N, K]: uniform over the arms of highest index (ties within 1e-9)."""
        return _tied_argmax(self.indices(successes, failures))


# -- P(arm i is best): quadrature on Chebyshev points ---------------------------------------------


@lru_cache(maxsize=16)
def _lobatto(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev points x_k = cos(pi k / n) (k = 0..n, from 1 down to -1) and their
    Clenshaw-Curtis weights (sum 2)."""
    x = np.cos(np.pi * np.arange(n + 1) / n)
    weights = _cumulative_integral(np.eye(n + 1))[:, 0]  # integral of each Lagrange basis
    return x, weights


def _cumulative_integral(values: np.ndarray) -> np.ndarray:
    """int_{-1}^{x_k} p for the polynomial p of degree n through values [..., n + 1] at the
    Chebyshev points x_k = cos(pi k / n) (n >= 2): spectral, exact up to degree n."""
    n = values.shape[-1] - 1
    c = sp_fft.dct(values, type=1, axis=-1)
    c /= n  # Chebyshev coefficients c_0..c_n (ends halved below)
    c[..., 0] /= 2
    c[..., n] /= 2
    # the antiderivative's coefficients (degree n + 1): F_1 = c_0 - c_2 / 2,
    # F_j = (c_{j-1} - c_{j+1}) / (2 j) for j >= 2 (c_{n+1} = 0)
    anti = np.empty(c.shape[:-1] + (n + 2,))
    anti[..., 1] = c[..., 0] - c[..., 2] / 2
    np.subtract(c[..., 1:n - 1], c[..., 3:n + 1], out=anti[..., 2:n])
    anti[..., 2:n] *= 0.5 / np.arange(2, n)
    anti[..., n] = c[..., n - 1] / (2 * n)
    anti[..., n + 1] = c[..., n] / (2 * (n + 1))
    anti[..., 0] = -(anti[..., 1:] @ (-1.0) ** np.arange(1, n + 2))  # zero at x = -1
    # values at the nodes: a DCT-I for degrees 0..n, plus T_{n+1}(x_k) = (-1)^k x_k
    top = anti[..., n + 1:].copy()
    head = anti[..., :n + 1]
    head[..., 1:n] /= 2
    out = sp_fft.dct(head, type=1, axis=-1)
    out += top * ((-1.0) ** np.arange(n + 1) * np.cos(np.pi * np.arange(n + 1) / n))
    return out


def _nodes_needed(width: np.ndarray, narrowest: np.ndarray) -> np.ndarray:
    """Chebyshev degree per row (a power of two, 32..4096) resolving a peak of std `narrowest`
    in an interval of `width` (widths in t: stretched by the map's slope): 3 points per std
    over the interval (errors ~1e-13)."""
    need = 3.0 * width / np.maximum(narrowest, 1e-300) + 16
    return 2 ** np.clip(np.ceil(np.log2(need)), 5, 12).astype(np.int64)


def _prob_best(degree: np.ndarray, group: np.ndarray, top: np.ndarray, tail: np.ndarray,
               density, num_arms: int, cdf_lo: np.ndarray | None = None) -> np.ndarray:
    """P(arm i is largest) = int f_i prod_{j != i} F_j, row by row [N, K]: quadrature in a
    variable t in [0, 1] (the caller maps it to the interval that matters), plus the mass
    `tail` [N] of arm `top` [N] above the interval (where every other arm's CDF is 1), then
    rows normalised.

    Rows are batched by `degree` [N] (Chebyshev degree) and `group` [N] (a caller's label);
    `density(rows, t)` gives f(x(t)) x'(t) and the CDFs at x(t), both [R, K, n + 1], for the
    nodes t [n + 1]; CDFs None: the spectral integrals of the former, plus `cdf_lo` [N, K].
    """
    k = num_arms
    out = np.zeros((len(degree), k))
    for n, label in sorted(set(zip(degree.tolist(), group.tolist(), strict=True))):
        x, weights = _lobatto(n)
        t = (x + 1.0) / 2
        batch = np.nonzero((degree == n) & (group == label))[0]
        chunk = max(1, 2**21 // (k * (n + 1)))
        for start in range(0, len(batch), chunk):
            rows = batch[start:start + chunk]
            dens, prob = density(rows, t)  # [R, K, n + 1]
            if prob is None:
                prob = _cumulative_integral(dens)
                prob *= 0.5
                prob += cdf_lo[rows, :, None]
            np.clip(prob, 0.0, 1.0, out=prob)
            # dens_i times the product of the other arms' CDFs (prefix and suffix products)
            acc = np.ones_like(prob[:, 0])
            for i in range(1, k):
                acc *= prob[:, i - 1]
                dens[:, i] *= acc
            acc.fill(1.0)
            for i in range(k - 2, -1, -1):
                acc *= prob[:, i + 1]
                dens[:, i] *= acc
            out[rows] = 0.5 * (dens @ weights)
    np.clip(out, 0.0, None, out=out)
    out[np.arange(len(out)), top] += tail
    return out / out.sum(axis=1, keepdims=True)


def _interval(q_lo: np.ndarray, q_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where P(arm i is best) needs quadrature, from each arm's low and high quantiles [N, K]:
    lo = the highest low quantile (below it some arm's CDF is ~0, so every integrand is ~0);
    above the second-highest high quantile only the arm with the highest one (`top`) has mass
    and every other CDF is ~1, so that arm's tail mass is added exactly. Returns lo, top, hi."""
    lo = q_lo.max(axis=1)
    top = q_hi.argmax(axis=1)
    second = np.partition(q_hi, -2, axis=1)[:, -2]
    return lo, top, np.maximum(second, lo)


def _as_rows(x, y, owner: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Two equal-shape [..., K] arrays as float64 [N, K], and the leading shape."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    if isinstance(y, Tensor):
        y = y.detach().cpu().double().numpy()
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 1 or x.shape[-1] < 1:
        raise IclRlError(f"{owner}: need two arrays of the same shape [..., K], got {x.shape} "
                         f"and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise IclRlError(f"{owner}: posterior parameters must be finite")
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), x.shape[:-1]


def prob_best_beta(alpha, beta) -> np.ndarray:
    """P(arm i has the highest mean) [..., K] for independent Beta(alpha, beta) posteriors
    [..., K]: Thompson sampling's exact action distribution.

    The integral of f_i prod_{j != i} F_j, by quadrature between the arms' highest lower
    1e-12-quantile and their second-highest upper one (the mass of the arm reaching highest is
    added exactly above it: `_interval`), at Chebyshev points sized to the narrowest posterior
    there (33..4097 per row); the CDFs are spectral integrals of the densities (plus one
    `betainc` per arm). Rows with a shape < 1 (densities that diverge at 0 or 1) integrate
    over all of [0, 1] in t with x = t^m / (t^m + (1 - t)^m), m = ceil(3 / smallest shape),
    which makes every integrand vanish smoothly at both ends. Agrees with adaptive quadrature
    to ~1e-12 (checked with shapes from 0.5 to 600). Rows sum to 1. Batched: 128 k rows of 5
    arms take a few seconds.
    """
    a, b, lead = _as_rows(alpha, beta, "prob_best_beta")
    if not ((a > 0).all() and (b > 0).all()):
        raise IclRlError("prob_best_beta: Beta parameters must be positive")
    k = a.shape[1]
    if k == 1:
        return np.ones(lead + (1,))
    # quantiles of the distinct (alpha, beta) pairs only: arms repeat across history steps
    pairs, inverse = np.unique(a.ravel() + 1j * b.ravel(), return_inverse=True)
    inverse = inverse.reshape(a.shape)
    q_lo = special.betaincinv(pairs.real, pairs.imag, TAIL)[inverse]
    q_hi = special.betaincinv(pairs.real, pairs.imag, 1.0 - TAIL)[inverse]
    lo, top, hi = _interval(q_lo, q_hi)
    std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    narrowest = np.where(q_hi > lo[:, None], std, np.inf).min(axis=1)
    smallest = np.minimum(a, b).min(axis=1)
    stretch = np.where(smallest < 1, np.ceil(3.0 / np.minimum(smallest, 1.0)), 1).astype(int)
    singular = stretch > 1
    lo[singular], hi[singular] = 0.0, 1.0  # the whole of [0, 1], mapped
    narrowest[singular] = std[singular].min(axis=1)
    width = np.where(singular, stretch, hi - lo)
    log_norm = special.betaln(a, b)  # [N, K]

    def density(rows, t):
        m = stretch[rows[0]]
        ar, br = a[rows, :, None], b[rows, :, None]
        if m == 1:  # x = lo + (hi - lo) t
            span = np.maximum(hi[rows] - lo[rows], 1e-300)[:, None]
            x = np.clip(lo[rows, None] + span * t, 1e-300, 1.0 - 2.0**-53)  # finite logs
            log_x, log_1mx = np.log(x)[:, None, :], np.log1p(-x)[:, None, :]
            dens = (ar - 1.0) * log_x
            dens += (br - 1.0) * log_1mx
            dens += np.log(span)[:, :, None] - log_norm[rows, :, None]
        else:  # x = t^m / d, d = t^m + (1 - t)^m: f(x) x' = t^(ma-1) (1-t)^(mb-1) m / (B d^(a+b))
            log_d = np.log(t**m + (1.0 - t) ** m)
            dens = special.xlogy(m * ar - 1.0, t) + special.xlog1py(m * br - 1.0, -t)
            dens -= (ar + br) * log_d
            dens += math.log(m) - log_norm[rows, :, None]
        return np.exp(dens, out=dens), None  # CDFs: spectral integrals

    cdf_lo = special.betainc(a, b, lo[:, None])
    row = np.arange(len(a))
    tail = special.betaincc(a[row, top], b[row, top], hi)
    out = _prob_best(_nodes_needed(width, narrowest), stretch, top, tail, density, k, cdf_lo)
    return out.reshape(lead + (k,))


def prob_best_normal(mean, std) -> np.ndarray:
    """P(arm i has the highest mean) [..., K] for independent Normal(mean, std^2) posteriors
    [..., K] (std > 0): Thompson sampling's exact action distribution for Gaussian bandits.

    Quadrature of f_i prod_{j != i} Phi_j as in `prob_best_beta`, the interval from the arms'
    mean +- 7.5 std, the CDFs exact (`ndtr`). Agrees with adaptive quadrature to ~1e-12; rows
    sum to 1.
    """
    mu, sd, lead = _as_rows(mean, std, "prob_best_normal")
    if not (sd > 0).all():
        raise IclRlError("prob_best_normal: standard deviations must be > 0")
    k = mu.shape[1]
    if k == 1:
        return np.ones(lead + (1,))
    lo, top, hi = _interval(mu - NORMAL_Z * sd, mu + NORMAL_Z * sd)
    row = np.arange(len(mu))
    tail = special.ndtr((mu[row, top] - hi) / sd[row, top])
    narrowest = np.where(mu + NORMAL_Z * sd > lo[:, None], sd, np.inf).min(axis=1)

    def density(rows, t):  # x = lo + (hi - lo) t
        span = (hi[rows] - lo[rows])[:, None, None]
        z = lo[rows, None, None] + span * t - mu[rows, :, None]
        z /= sd[rows, :, None]
        prob = special.ndtr(z)
        z *= z
        z *= -0.5
        dens = np.exp(z, out=z)
        dens *= span / (math.sqrt(2 * math.pi) * sd[rows, :, None])
        return dens, prob

    degree = _nodes_needed(hi - lo, narrowest)
    out = _prob_best(degree, np.zeros_like(degree), top, tail, density, k)
    return out.reshape(lead + (k,))


# -- references along recorded histories ---------------------------------------------------------


def prob_best_uniform_normal(counts, sums, noise_std: float, low: float = 0.0,
                             high: float = 1.0, grid_points: int = 2001,
                             chunk: int = 2048) -> np.ndarray:
    """P(arm is best | pulls) [..., K] for Gaussian rewards of known `noise_std` whose arm
    means are independent U[low, high] a priori (the DPT paper's bandits,
    `gaussian_bandit` with `means: uniform`): each arm's posterior is a normal truncated to
    [low, high] (the prior where an arm is unpulled). Exact but for the midpoint grid of
    `grid_points` values; rows are done `chunk` at a time ([chunk, K, grid] floats)."""
    counts, sums = np.asarray(counts, dtype=np.float64), np.asarray(sums, dtype=np.float64)
    if counts.shape != sums.shape or counts.ndim < 1:
        raise IclRlError(f"prob_best_uniform_normal: counts {counts.shape} and sums "
                         f"{sums.shape} must share a shape [..., K]")
    lead, k = counts.shape[:-1], counts.shape[-1]
    counts, sums = counts.reshape(-1, k), sums.reshape(-1, k)
    mu = low + (np.arange(grid_points) + 0.5) * (high - low) / grid_points  # [G]
    out = np.empty_like(counts)
    for s in range(0, len(counts), chunk):
        n, total = counts[s:s + chunk, :, None], sums[s:s + chunk, :, None]  # [B, K, 1]
        mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
        logf = -n * (mu - mean) ** 2 / (2 * noise_std**2)  # [B, K, G]
        f = np.exp(logf - logf.max(-1, keepdims=True))
        f /= f.sum(-1, keepdims=True)
        cdf = np.cumsum(f, -1) - f / 2  # P(mean_j < grid point), midpoint rule
        others = np.prod(cdf, axis=1, keepdims=True) / np.where(cdf > 0, cdf, 1)
        p = (f * np.where(cdf > 0, others, 0)).sum(-1)
        out[s:s + chunk] = p / p.sum(-1, keepdims=True)
    return out.reshape(*lead, k)


def _check_history(actions: Tensor, rewards: Tensor, num_arms: int, owner: str) -> None:
    if actions.ndim != 2 or rewards.shape != actions.shape:
        raise IclRlError(f"{owner}: actions and rewards must both be [N, T], got "
                         f"{tuple(actions.shape)} and {tuple(rewards.shape)}")
    if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= num_arms):
        raise IclRlError(f"{owner}: actions must be arms in [0, {num_arms})")


def _counts_before(actions: Tensor, rewards: Tensor, num_arms: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pulls and reward sums [N, T, K] (float64) of every arm over the steps before each t."""
    onehot = torch.nn.functional.one_hot(actions.long().cpu(), num_arms).double()
    paid = onehot * rewards.detach().cpu().double()[..., None]
    zero = torch.zeros_like(onehot[:, :1])
    counts = torch.cat([zero, onehot.cumsum(dim=1)[:, :-1]], dim=1)
    sums = torch.cat([zero, paid.cumsum(dim=1)[:, :-1]], dim=1)
    return counts.numpy(), sums.numpy()


def bandit_reference_probs(actions: Tensor, rewards: Tensor, num_arms: int,
                           kind: str = "bernoulli", prior_alpha: float = 1.0,
                           prior_beta: float = 1.0, prior_mean: float = 0.0,
                           prior_std: float = 1.0, noise_std: float = 1.0) -> Tensor:
    """Posterior sampling's action distribution [N, T, K] at every step of bandit histories
    (actions [N, T] int, rewards [N, T]), from the steps before it: P(arm i has the highest
    mean | history) (Ortega et al. 2019).

    kind "bernoulli": Beta(prior_alpha, prior_beta) priors, rewards 0 / 1; kind "gaussian":
    Normal(prior_mean, prior_std^2) priors on the means and Normal(mean, noise_std^2) rewards
    (the env's prior: (0, 1) for means ~ N(0, 1), (0.5, 12^-0.5) for means ~ U(0, 1)).
    """
    owner = "bandit_reference_probs"
    _check_history(actions, rewards, num_arms, owner)
    counts, sums = _counts_before(actions, rewards, num_arms)
    if kind == "bernoulli":
        if not torch.isin(rewards.detach().cpu(), torch.tensor([0.0, 1.0])).all():
            raise IclRlError(f"{owner}: kind 'bernoulli' needs 0 / 1 rewards; use kind "
                             "'gaussian' for real-valued ones")
        probs = prob_best_beta(prior_alpha + sums, prior_beta + counts - sums)
    elif kind == "gaussian":
        if not (prior_std > 0 and noise_std > 0):
            raise IclRlError(f"{owner}: prior_std and noise_std must be > 0")
        precision = 1.0 / prior_std**2 + counts / noise_std**2
        mean = (prior_mean / prior_std**2 + sums / noise_std**2) / precision
        probs = prob_best_normal(mean, precision**-0.5)
    else:
        raise IclRlError(f"{owner}: kind must be 'bernoulli' or 'gaussian', got {kind!r}")
    return torch.from_numpy(probs).float().to(actions.device)


def best_arm_posterior(env, actions: Tensor, rewards: Tensor) -> Tensor | None:
    """P(arm i is the best | the pulls before t) [N, T, K] under `env`'s own task prior,
    exactly: the Bayes-optimal prediction of the oracle's action from a bandit history, so the
    floor of a Decision-Pretrained Transformer's loss. None for an env without one (not a
    bandit). Bernoulli arms: Beta(1, 1) priors; Gaussian arms with means ~ N(0, 1): the
    conjugate normal posterior; with means ~ U(0, 1): normals truncated to [0, 1]."""
    from icl_rl.envs import BernoulliBandit, GaussianBandit

    k = env.spec.num_actions
    if isinstance(env, BernoulliBandit):
        return bandit_reference_probs(actions, rewards, k, "bernoulli")
    if not isinstance(env, GaussianBandit):
        return None
    if env.means == "normal":
        mean, std = env.prior
        return bandit_reference_probs(actions, rewards, k, "gaussian", prior_mean=mean,
                                      prior_std=std, noise_std=env.noise_std)
    _check_history(actions, rewards, k, "best_arm_posterior")
    counts, sums = _counts_before(actions, rewards, k)
    probs = prob_best_uniform_normal(counts, sums, env.noise_std)
    return torch.from_numpy(probs).float().to(actions.device)


def bayes_optimal_reference_probs(actions: Tensor, rewards: Tensor, policy) -> Tensor:
    """A count-based Bernoulli policy's action distribution [N, T, K] at every step of bandit
    histories (actions [N, T] int, 0 / 1 rewards [N, T]), from the counts before it.

    `policy` is a `BernoulliBayesOptimal` (or anything with `num_arms`, `horizon` and
    `action_probs(successes, failures)`, e.g. `GittinsPolicy`); T must not exceed its horizon.
    """
    owner = "bayes_optimal_reference_probs"
    k = policy.num_arms
    _check_history(actions, rewards, k, owner)
    n, t = actions.shape
    if t > policy.horizon:
        raise IclRlError(f"{owner}: histories of {t} steps, but the policy was built for "
                         f"horizon {policy.horizon}; build it for >= {t}")
    if not torch.isin(rewards.detach().cpu(), torch.tensor([0.0, 1.0])).all():
        raise IclRlError(f"{owner}: needs 0 / 1 rewards (a Bernoulli bandit)")
    counts, sums = _counts_before(actions, rewards, k)
    probs = policy.action_probs(sums.reshape(-1, k), (counts - sums).reshape(-1, k))
    return torch.from_numpy(np.asarray(probs).reshape(n, t, k)).float().to(actions.device)


def _uniform_weights(possible: Tensor, owner: str, families: str) -> tuple[Tensor, Tensor]:
    """(weights [N, S], their row sums [N, 1]) of a uniform posterior over the `possible` cells;
    a row that rules out every cell is refused (the history is not of one hidden cell)."""
    weight = possible.float()
    total = weight.sum(dim=1, keepdim=True)
    if (total == 0).any():
        raise IclRlError(f"{owner}: a row rules out every cell; the history is not one of a "
                         f"single hidden goal (use {families})")
    return weight, total


def goal_posterior_action_probs(possible: Tensor, pos: Tensor, size: int) -> Tensor:
    """Dark Room posterior sampling's action distribution [N, 5] where it draws a new goal:
    the goal uniform over the `possible` cells [N, S] (bool, cell x * size + y), then the
    shortest-path action of `GridWorld.toward` from `pos` [N, 2] (x, y) to it.

    This is the distribution of `GoalPosteriorSampling`'s action at a step where it resamples
    its target (epsilon = 0).
    """
    grid = GridWorld(size, 1)  # for its toward() rule only
    n, cells = possible.shape[0], grid.cells().to(possible.device)  # [S, 2]
    if possible.ndim != 2 or possible.shape[1] != len(cells) or pos.shape != (n, 2):
        raise IclRlError(f"goal_posterior_action_probs: need possible [N, {len(cells)}] and pos "
                         f"[N, 2] for size {size}, got {tuple(possible.shape)} and "
                         f"{tuple(pos.shape)}")
    weight, total = _uniform_weights(possible, "goal_posterior_action_probs",
                                     "dark_room / dark_room_hard")
    out = torch.zeros(n, 5, device=possible.device)
    s = len(cells)
    chunk = max(1, 2**20 // s)
    for start in range(0, n, chunk):
        p = pos[start:start + chunk].long()
        r = p.shape[0]
        act = grid.toward(p[:, None, :].expand(r, s, 2).reshape(-1, 2),
                          cells.repeat(r, 1)).view(r, s)
        out[start:start + r].scatter_add_(1, act, weight[start:start + r])
    return out / total


def _check_grid_history(owner: str, observations: Tensor, actions: Tensor, rewards: Tensor,
                        dones: Tensor, obs_dim: int) -> tuple[int, int]:
    n, t = actions.shape
    if (observations.ndim != 3 or observations.shape[:2] != (n, t)
            or observations.shape[2] < obs_dim or rewards.shape != (n, t)
            or dones.shape != (n, t)):
        raise IclRlError(f"{owner}: need observations [N, T, {obs_dim}] and actions, rewards, "
                         f"dones [N, T], got {tuple(observations.shape)}, {tuple(actions.shape)}, "
                         f"{tuple(rewards.shape)}, {tuple(dones.shape)}")
    return n, t


def _landed(pos: Tensor, moved: Tensor, dones: Tensor, size: int) -> Tensor:
    """The cell [N, T] each step ends on: the next observation's cell, except where the step
    ends an episode (or the history): there `moved` [N, T, 2], the move's own result."""
    landed = moved.clone()
    landed[:, :-1] = torch.where(dones[:, :-1, None], moved[:, :-1], pos[:, 1:])
    return landed[..., 0] * size + landed[..., 1]


class HiddenCellPosterior:
    """The posterior over one hidden cell along histories, uniform over the cells no
    informative step has ruled out: a step counts (`informative` [N, T]) where landing on the
    cell would have paid; it rules out the cell it ended on (`cell` [N, T]), or, paid
    (`paid` [N, T]), reveals it. possible(now) [N, C, S] and known(now) [N, C] are the posterior
    and whether the cell is revealed, before each step of `now` [C]."""

    def __init__(self, cell: Tensor, paid: Tensor, informative: Tensor, num_cells: int) -> None:
        n, t = cell.shape
        steps = torch.arange(t, device=cell.device).expand(n, t)
        self.first = torch.full((n, num_cells), t, dtype=torch.long, device=cell.device)
        self.first.scatter_reduce_(1, cell, torch.where(informative, steps, t), reduce="amin")
        hit = informative & paid
        self.first_paid = torch.where(hit.any(dim=1), hit.float().argmax(dim=1), t)  # [N]
        found = cell.gather(1, self.first_paid.clamp(max=t - 1)[:, None])[:, 0]
        self.found = torch.nn.functional.one_hot(found, num_cells).bool()  # [N, S]

    def known(self, now: Tensor) -> Tensor:
        """Whether a paid step revealed the cell before each step of `now` [N, C]."""
        return self.first_paid[:, None] < now[None, :]

    def possible(self, now: Tensor) -> Tensor:
        """The cells not ruled out before each step of `now` [N, C, S] (bool)."""
        unseen = self.first[:, None, :] >= now[None, :, None]
        return torch.where(self.known(now)[..., None], self.found[:, None, :], unseen)


def _by_chunks(n: int, t: int, s: int, fill: Callable[[Tensor], Tensor],
               device) -> Tensor:
    """[N, T, 5] from fill(now) [N, C, 5] over chunks of steps sized to ~4 M cells."""
    out = torch.empty(n, t, 5, device=device)
    chunk = max(1, 2**22 // max(1, n * s))
    for start in range(0, t, chunk):
        now = torch.arange(start, min(t, start + chunk), device=device)
        out[:, start:start + len(now)] = fill(now)
    return out


def darkroom_goal_posterior(observations: Tensor, actions: Tensor, rewards: Tensor,
                            dones: Tensor, size: int) -> HiddenCellPosterior:
    """The goal's posterior along Dark Room (Hard) histories: every step is informative."""
    n, t = actions.shape
    pos = observations[..., :2].long()
    moved = GridWorld(size, 1).move(pos.reshape(-1, 2), actions.reshape(-1)).view(n, t, 2)
    return HiddenCellPosterior(_landed(pos, moved, dones, size), rewards > 0,
                               torch.ones_like(dones), size * size)


def key_to_door_posteriors(observations: Tensor, actions: Tensor, rewards: Tensor,
                           dones: Tensor, size: int
                           ) -> tuple[HiddenCellPosterior, HiddenCellPosterior, Tensor, Tensor]:
    """(key's posterior, door's posterior, holds the key before each step [N, T], the door paid
    earlier in the step's episode [N, T]) along Dark Key-to-Door histories."""
    n, t = actions.shape
    dev = observations.device
    pos = observations[..., :2].long()
    holding = observations[..., 2] > 0.5  # before the step
    moved = GridWorld(size, 1).move(pos.reshape(-1, 2), actions.reshape(-1)).view(n, t, 2)
    cell, paid = _landed(pos, moved, dones, size), rewards > 0
    # Whether the door paid earlier in the step's episode: door payments so far, less those
    # made before the episode began.
    door_paid = (holding & paid).long()
    before = door_paid.cumsum(dim=1) - door_paid  # door payments before each step
    begins = torch.zeros_like(dones)
    begins[:, 1:] = dones[:, :-1]
    begins[:, 0] = True
    steps = torch.arange(t, device=dev).expand(n, t)
    episode_start = torch.where(begins, steps, 0).cummax(dim=1).values
    opened = before > before.gather(1, episode_start)
    s = size * size
    return (HiddenCellPosterior(cell, paid, ~holding, s),
            HiddenCellPosterior(cell, paid, holding & ~opened, s), holding, opened)


def maze_goal_posterior(observations: Tensor, actions: Tensor, rewards: Tensor, dones: Tensor,
                        size: int) -> HiddenCellPosterior:
    """The goal's posterior along dark-maze histories: every step is informative; a step's
    blocked moves are in its observation, so where it ended is known even at an episode's end."""
    pos = observations[..., :2].long()
    a = actions.long()
    blocked = observations[..., 2:6].gather(2, (a - 1).clamp(min=0)[..., None])[..., 0] > 0.5
    moved = torch.where(((a == 0) | blocked)[..., None], pos, pos + MOVES.to(pos.device)[a])
    return HiddenCellPosterior(_landed(pos, moved, dones, size), rewards > 0,
                               torch.ones_like(dones), size * size)


def hidden_cell_posteriors(env, tasks: Tensor, observations: Tensor, actions: Tensor,
                           rewards: Tensor, dones: Tensor
                           ) -> dict[str, tuple[HiddenCellPosterior, Tensor]]:
    """name -> (its posterior along the histories, the true cell (x, y) [N, 2]) for every
    hidden cell of a dark gridworld env (Dark Room / Hard: goal; Key-to-Door: key, door; mazes:
    goal), given the histories' tasks [N, ...]; {} for other envs."""
    from icl_rl.envs import DarkKeyToDoor, DarkMaze, DarkRoom

    history = (observations, actions, rewards, dones, getattr(env, "size", 0))
    if isinstance(env, DarkRoom):
        return {"goal": (darkroom_goal_posterior(*history), tasks[:, :2])}
    if isinstance(env, DarkKeyToDoor):
        key, door, _, _ = key_to_door_posteriors(*history)
        return {"key": (key, tasks[:, :2]), "door": (door, tasks[:, 2:4])}
    if isinstance(env, DarkMaze):
        return {"goal": (maze_goal_posterior(*history), tasks[:, :2])}
    return {}


def darkroom_reference_probs(observations: Tensor, actions: Tensor, rewards: Tensor,
                             dones: Tensor, size: int) -> Tensor:
    """Posterior sampling's action distribution [N, T, 5] at every step of Dark Room histories
    (observations [N, T, 2] agent x, y; actions, rewards, dones [N, T]).

    The goal posterior at step t is uniform over the cells not ruled out by steps < t: a step
    that ends on a cell without reward rules it out, a rewarded step reveals the goal (for Dark
    Room Hard too: its first arrival pays). A step ends at observations[t + 1] unless it ends an
    episode (or the history); there it ends at the clamped move of the action.
    """
    n, t = _check_grid_history("darkroom_reference_probs", observations, actions, rewards, dones,
                               2)
    s = size * size
    pos = observations[..., :2].long()  # [N, T, 2]
    goal = darkroom_goal_posterior(observations, actions, rewards, dones, size)

    def fill(now):
        c = len(now)
        return goal_posterior_action_probs(goal.possible(now).reshape(n * c, s),
                                           pos[:, now].reshape(n * c, 2), size).view(n, c, 5)

    return _by_chunks(n, t, s, fill, observations.device)


def key_to_door_reference_probs(observations: Tensor, actions: Tensor, rewards: Tensor,
                                dones: Tensor, size: int) -> Tensor:
    """Posterior sampling's action distribution [N, T, 5] at every step of Dark Key-to-Door
    histories (observations [N, T, 3]: x, y, holds the key; actions, rewards, dones [N, T]).

    Key and door are independent and uniform over the cells a priori, and stay so: a step taken
    without the key pays iff it ends on the key, a step taken with it, before the door paid in
    this episode, pays iff it ends on the door. So each has the posterior of Dark Room's goal,
    counting only those steps. The action at step t: toward the key (a draw from its posterior)
    without the key, toward the door with it, stay once the door has paid in the episode.
    """
    n, t = _check_grid_history("key_to_door_reference_probs", observations, actions, rewards,
                               dones, 3)
    s, dev = size * size, observations.device
    pos = observations[..., :2].long()
    key, door, holding, opened = key_to_door_posteriors(observations, actions, rewards, dones,
                                                        size)

    def fill(now):
        c = len(now)
        possible = torch.where(holding[:, now, None], door.possible(now), key.possible(now))
        probs = goal_posterior_action_probs(possible.reshape(n * c, s),
                                            pos[:, now].reshape(n * c, 2), size).view(n, c, 5)
        stay = torch.nn.functional.one_hot(torch.zeros_like(now), 5).float()  # STAY
        return torch.where(opened[:, now, None], stay, probs)

    return _by_chunks(n, t, s, fill, dev)


def maze_known_walls(observations: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The walls of a dark maze seen so far [N, T, S] x 2 (wall_right, wall_up per cell, as
    `grid_distances` takes them) from observations [N, T, 6] (x, y, then whether up, down,
    left, right are blocked): after step t's observation, every wall next to a cell observed at
    steps <= t. Unseen walls read open."""
    from icl_rl.envs.maze import seen_walls

    n, t = observations.shape[:2]
    right, up = seen_walls(observations[..., :6].reshape(n * t, 6), size)
    return (right.view(n, t, -1).cummax(dim=1).values, up.view(n, t, -1).cummax(dim=1).values)


def maze_posterior_action_probs(possible: Tensor, pos: Tensor, wall_right: Tensor,
                                wall_up: Tensor, size: int) -> Tensor:
    """The maze posterior sampler's action distribution [N, 5] where it draws a new goal: the
    goal uniform over the `possible` cells [N, S], then the env oracle's rule (the first open
    move one step closer; stay on the goal) in the maze of the walls seen so far
    (wall_right, wall_up [N, S]), unseen walls taken as open. pos [N, 2] (x, y)."""
    from icl_rl.envs.maze import grid_distances

    n, s = possible.shape[0], size * size
    if (possible.shape != (n, s) or pos.shape != (n, 2) or wall_right.shape != (n, s)
            or wall_up.shape != (n, s)):
        raise IclRlError(f"maze_posterior_action_probs: need possible, wall_right, wall_up "
                         f"[N, {size * size}] and pos [N, 2] for size {size}, got "
                         f"{tuple(possible.shape)}, {tuple(wall_right.shape)}, "
                         f"{tuple(wall_up.shape)}, {tuple(pos.shape)}")
    weight, total = _uniform_weights(possible, "maze_posterior_action_probs", "dark_maze")
    pos = pos.long()
    x, y = pos[:, 0], pos[:, 1]
    here = x * size + y
    # The cell each move leads to, walls seen around the agent applied [N, 5].
    def wall(walls, cell):
        return walls.gather(1, cell.clamp(min=0)[:, None])[:, 0]

    blocked = torch.stack([torch.zeros_like(x, dtype=torch.bool),
                           wall(wall_up, here) | (y == size - 1),
                           wall(wall_up, here - 1) | (y == 0),
                           wall(wall_right, here - size) | (x == 0),
                           wall(wall_right, here) | (x == size - 1)], dim=1)
    moves = MOVES.to(pos.device)
    step = moves[:, 0] * size + moves[:, 1]  # cell index change of each action [5]
    to = torch.where(blocked, here[:, None], here[:, None] + step)
    dist = grid_distances(wall_right, wall_up, size, to)  # [N, 5 sources, S goals]
    closer = dist[:, 1:] == dist[:, :1] - 1  # [N, 4, S]: the move brings the goal closer
    first = closer.float().argmax(dim=1) + 1  # first such move, per goal
    action = torch.where(dist[:, 0] == 0, 0, first)  # [N, S]; STAY on the goal
    out = torch.zeros(n, 5, device=possible.device).scatter_add_(1, action, weight)
    return out / total


def maze_reference_probs(observations: Tensor, actions: Tensor, rewards: Tensor,
                         dones: Tensor, size: int) -> Tensor:
    """Posterior sampling's action distribution [N, T, 5] at every step of dark-maze histories
    (observations [N, T, 6]; actions, rewards, dones [N, T]): the goal posterior exactly as in
    Dark Room (a step that ends on a cell without reward rules it out; the blocked moves of the
    step's cell are in its observation, so where it ended is known even at an episode's end),
    and for each possible goal the oracle's move in the maze seen so far, unseen walls open.

    The goal part is exact. The maze part is not a posterior sample: the randomized-Kruskal
    prior over mazes has no closed-form posterior given some seen walls, so the reference
    plans optimistically through what it has not seen (it equals the oracle's move once the
    walls on the way are seen).
    """
    n, t = _check_grid_history("maze_reference_probs", observations, actions, rewards, dones, 6)
    s = size * size
    pos = observations[..., :2].long()
    goal = maze_goal_posterior(observations, actions, rewards, dones, size)
    wall_right, wall_up = maze_known_walls(observations, size)

    def fill(now):
        c = len(now)
        return maze_posterior_action_probs(
            goal.possible(now).reshape(n * c, s), pos[:, now].reshape(n * c, 2),
            wall_right[:, now].reshape(n * c, s), wall_up[:, now].reshape(n * c, s),
            size).view(n, c, 5)

    # a chunk holds distances from 5 source cells and the goal posterior: ~6 x [N, C, S]
    return _by_chunks(n, t, 6 * s, fill, observations.device)


# -- comparing action distributions ---------------------------------------------------------------


# -- the two-step task -------------------------------------------------------------------
# The probabilities p[state, action] that pay the second stage are hidden and move between
# trials. Stage-1 transitions say nothing about them; a trial's stage-2 state, action and
# reward inform only that one of the four. The beliefs below are those before each step
# (the model's state at step t has seen the steps before it).


def _two_step_trials(observations: Tensor, actions: Tensor, rewards: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """(stage-2 state index 0/1, stage-2 action, reward) of each trial, each [N, K]; histories
    must start at a trial's first stage and hold whole trials."""
    if observations.dim() == 3:
        observations = observations[..., 0]
    n, t = actions.shape
    if t % 2 or observations.shape != (n, t) or rewards.shape != (n, t):
        raise IclRlError(f"two-step posterior: need whole trials of 2 steps, got observations "
                         f"{tuple(observations.shape)}, actions {tuple(actions.shape)}")
    first = observations[:, 0::2]
    if bool((first != 0).any()):
        raise IclRlError("two-step posterior: every trial must start at stage 1 "
                         "(observation 0 at even steps)")
    state = observations[:, 1::2].long() - 1  # [N, K] in {0, 1}
    return state, actions[:, 1::2].long(), rewards[:, 1::2].double()


def _reflected_kernel(grid: np.ndarray, sd: float, low: float, high: float) -> np.ndarray:
    """P(next grid point | grid point) [G, G] of a Gaussian step of sd `sd` reflected into
    [low, high], as the env moves each probability (every preimage of a point summed)."""
    from scipy.stats import norm

    if sd == 0:
        return np.eye(len(grid))
    span = high - low
    x, y = grid[:, None], grid[None, :]
    density = sum(norm.pdf(y + 2 * m * span - x, scale=sd)
                  + norm.pdf(2 * low - y + 2 * m * span - x, scale=sd) for m in (-1, 0, 1))
    return density / density.sum(1, keepdims=True)


def two_step_posteriors(env, observations: Tensor, actions: Tensor, rewards: Tensor,
                        grid_points: int = 201) -> dict[str, np.ndarray]:
    """The Bayesian observer's beliefs about a two-step task before every step.

    Always "reward_prob_mean" [N, T, 4]: the posterior means of p[state 1, action 0],
    p[1, 1], p[2, 0], p[2, 1] (the task layout). `switch` dynamics add "good_state" [N, T]:
    P(state 1 is the good one), exact (a two-state hidden Markov filter). `drift` dynamics: the
    four probabilities are independent a priori (uniform on [low, high]), move independently
    (reflected Gaussian steps) and each trial informs one of them, so the posterior is four
    one-dimensional filters, each on a grid of `grid_points` values (exact but for the grid).
    """
    state, action, reward = _two_step_trials(observations, actions, rewards)
    n, k = state.shape
    arm = (2 * state + action).numpy()  # [N, K] which of the four a trial informs
    state, r = state.numpy(), reward.numpy()
    out = np.empty((n, k, 4))  # belief before trial j
    if env.dynamics == "switch":
        good = np.full(n, 0.5)  # P(state 1 good)
        hi, q = env.high_p, env.switch_prob
        gs = np.empty((n, k))
        for j in range(k):
            gs[:, j] = good
            in_one = state[:, j] == 0
            p_if_one = np.where(in_one, hi, 1 - hi)  # P(pay | state 1 good) where it was
            like_one = np.where(r[:, j] > 0, p_if_one, 1 - p_if_one)
            like_two = np.where(r[:, j] > 0, 1 - p_if_one, p_if_one)
            good = good * like_one / (good * like_one + (1 - good) * like_two)
            good = good * (1 - q) + (1 - good) * q  # the swap after the trial
        mean_one = gs * hi + (1 - gs) * (1 - hi)
        out[..., 0] = out[..., 1] = mean_one
        out[..., 2] = out[..., 3] = 1 - mean_one
        result = {"good_state": np.repeat(gs, 2, axis=1)}
    else:
        span = env.high - env.low  # cell midpoints: the posterior mean by the midpoint rule
        grid = env.low + (np.arange(grid_points) + 0.5) * span / grid_points
        kernel = _reflected_kernel(grid, env.drift_sd, env.low, env.high)
        belief = np.full((n, 4, grid_points), 1 / grid_points)
        rows = np.arange(n)
        for j in range(k):
            out[:, j] = belief @ grid
            b = belief[rows, arm[:, j]]  # [N, G]
            b = b * np.where(r[:, j, None] > 0, grid, 1 - grid)
            belief[rows, arm[:, j]] = b / b.sum(1, keepdims=True)
            belief = belief @ kernel  # every probability moves after the trial
        result = {}
    result["reward_prob_mean"] = np.repeat(out, 2, axis=1)  # both steps of a trial
    return result


def kl_divergence(p: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """KL(p || q) in nats over the last axis (tensors [..., A] -> [...]).

    q is clipped to >= eps and renormalised so that the divergence stays finite where q gives an
    action (almost) no mass; entries of p that are 0 contribute 0. KL(p, p) is 0 for p >= eps
    everywhere and at most ~A * eps otherwise.
    """
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    q = q.clamp(min=eps)
    q = q / q.sum(dim=-1, keepdim=True)
    return (torch.special.xlogy(p, p) - p * torch.log(q)).sum(dim=-1)


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance 1/2 sum |p - q| over the last axis, in [0, 1]."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    return 0.5 * (p - q).abs().sum(dim=-1)
