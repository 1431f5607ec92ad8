"""The two-step task's behavioural signature of planning (Daw et al. 2011): stay probabilities
and the model-based / model-free indices of a logistic regression of staying.

From each trial t to the next: did the agent repeat its first-stage choice (stay), given
whether trial t was rewarded and whether its transition was common or rare? Predictors coded
+1 / -1 (rewarded / not, common / rare); the regression (statsmodels Logit, standard errors
clustered by task) is

    logit P(stay) = b0 + b_R reward + b_T transition + b_RxT reward x transition

A model-free learner repeats what was rewarded whatever the transition: b_R > 0, b_RxT ~ 0. A
model-based learner repeats a rewarded choice after a common transition and switches after a
rare one (the reward says the *other* action leads to the good state more often): b_RxT > 0.
b_RxT is the model-based index, b_R the model-free index (Daw et al. 2011; Wang et al. 2018).
"""

from __future__ import annotations

import warnings

import numpy as np

CONDITIONS = (("rewarded", "common"), ("rewarded", "rare"), ("unrewarded", "common"),
              ("unrewarded", "rare"))
STAY_KEYS = tuple(f"stay_{r}_{c}" for r, c in CONDITIONS)  # results keys, in that order


def trials(actions: np.ndarray, states: np.ndarray, rewards: np.ndarray) -> dict:
    """Per-trial arrays from step-level histories [N, T] (T = 2 x trials): first-stage choice,
    common transition and payoff [N, E], and stay [N, E - 1] (trial t + 1 repeats trial t)."""
    first = actions[:, 0::2]
    common = states[:, 1::2] == first + 1  # action a leads to state a + 1 commonly
    reward = rewards[:, 1::2] > 0
    return {"first": first, "common": common, "reward": reward,
            "stay": first[:, 1:] == first[:, :-1]}


def stay_probabilities(t: dict) -> dict:
    """P(stay) in each condition of the previous trial: the mean over tasks of each task's
    stay rate, with the 95% CI half-width over tasks (tasks with no such trial left out)."""
    from eval.metrics import task_mean_ci

    out = {}
    reward, common, stay = t["reward"][:, :-1], t["common"][:, :-1], t["stay"]
    for (r, c), key in zip(CONDITIONS, STAY_KEYS, strict=True):
        mask = (reward == (r == "rewarded")) & (common == (c == "common"))
        counts = mask.sum(axis=1)
        rate = (stay & mask).sum(axis=1)[counts > 0] / counts[counts > 0]
        out[key], out[key + "_ci95"] = task_mean_ci(rate)
    return out


def stay_regression(t: dict) -> dict:
    """The logistic regression of staying: each coefficient with its 95% CI half-width
    (standard errors clustered by task); None where the fit fails (e.g. an agent that always
    stays: perfect separation)."""
    import statsmodels.api as sm

    n, e = t["stay"].shape
    r = np.where(t["reward"][:, :-1], 1.0, -1.0).ravel()
    c = np.where(t["common"][:, :-1], 1.0, -1.0).ravel()
    x = np.column_stack([np.ones_like(r), r, c, r * c])
    y = t["stay"].ravel().astype(float)
    groups = np.repeat(np.arange(n), e)
    names = ("intercept", "reward", "transition", "reward_x_transition")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = sm.Logit(y, x).fit(disp=0, cov_type="cluster", cov_kwds={"groups": groups})
        params, se = np.asarray(fit.params), np.asarray(fit.bse)
        if not np.all(np.isfinite(se)):
            raise ValueError("non-finite standard errors")
    except Exception:  # separation or a singular design: no estimate, said as None
        return {f"b_{k}": None for k in names} | {f"b_{k}_ci95": None for k in names}
    return ({f"b_{k}": float(v) for k, v in zip(names, params, strict=True)}
            | {f"b_{k}_ci95": float(1.96 * s) for k, s in zip(names, se, strict=True)})


def two_step_analysis(actions: np.ndarray, states: np.ndarray, rewards: np.ndarray) -> dict:
    """Stay probabilities and the regression, with the indices named: model_based_index =
    b_RxT, model_free_index = b_R (each with `_ci95`)."""
    t = trials(actions, states, rewards)
    res = stay_probabilities(t) | stay_regression(t)
    res["model_based_index"] = res["b_reward_x_transition"]
    res["model_based_index_ci95"] = res["b_reward_x_transition_ci95"]
    res["model_free_index"] = res["b_reward"]
    res["model_free_index_ci95"] = res["b_reward_ci95"]
    return res
