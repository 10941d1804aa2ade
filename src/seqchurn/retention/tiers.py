"""Risk tiers and the cost-based warning threshold, fitted on validation predictions (DESIGN 7).

`fit_tiers` runs at train time on the validation split's (p_churn, y) and returns a plain
dict (lists, floats, strings: JSON- and pickle-able) that goes into the checkpoint;
`assign_tiers` applies it to new predictions. The keyword names of `fit_tiers` are the
keys of `retention.tiers` in conf/retention/default.yaml, so `fit_tiers(p, y, **cfg)` works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from seqchurn.errors import DataError

TIER_METHODS = ("quantile", "cutpoints")
# The keys of `retention.tiers` that say how to cut (the cost keys only set the threshold).
CUT_SETTINGS = ("method", "names", "top_shares", "cutpoints")


def _check_probs(p: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError(f"{what} must be probabilities in [0, 1] without NaN")
    return p


def tier_cutpoints(
    p: np.ndarray,
    method: str = "quantile",
    names: Sequence[str] = ("high", "medium", "low"),
    top_shares: Sequence[float] = (0.1, 0.3),
    cutpoints: Sequence[float] = (0.8, 0.5),
) -> list[float]:
    """Descending probability cut-points, one fewer than `names`: tier i is cut[i-1] > p >= cut[i].

    method "cutpoints" takes `cutpoints` as they are; "quantile" puts the top `top_shares`
    (cumulative shares of users, e.g. 0.1 and 0.3 = top 10% and the next 20%) of `p` in the
    first tiers, so the cut-points are quantiles of `p`.
    """
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"retention.tiers.names must list at least two distinct tiers, got {names}")
    if method == "cutpoints":
        cuts = [float(c) for c in cutpoints]
        if len(cuts) != len(names) - 1 or any(not 0 <= c <= 1 for c in cuts):
            raise DataError(
                f"retention.tiers.cutpoints needs {len(names) - 1} probabilities for tiers "
                f"{names}, got {cuts}"
            )
    elif method == "quantile":
        shares = [float(s) for s in top_shares]
        if len(shares) != len(names) - 1 or any(not 0 < s < 1 for s in shares):
            raise DataError(
                f"retention.tiers.top_shares needs {len(names) - 1} shares in (0, 1) for tiers "
                f"{names}, got {shares}"
            )
        if np.any(np.diff(shares) <= 0):
            raise DataError(
                f"retention.tiers.top_shares are cumulative and must increase, got {shares}"
            )
        p = _check_probs(p, "p_churn")
        if not len(p):
            raise DataError("no predictions to fit quantile tiers on")
        cuts = [float(np.quantile(p, 1.0 - s, method="higher")) for s in shares]
    else:
        raise DataError(
            f"unknown retention.tiers.method {method!r}: use {' or '.join(TIER_METHODS)}"
        )
    if np.any(np.diff(cuts) > 0):
        raise DataError(
            f"tier cut-points must not increase from the first tier to the last, got {cuts}"
        )
    return cuts


def tier_index(p: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Tier id per user, 0 = highest risk: the number of cut-points strictly above p."""
    neg = -np.asarray(cuts, dtype=np.float64)  # ascending
    return np.searchsorted(neg, -np.asarray(p, dtype=np.float64), side="left")


def cut_tiers(p: np.ndarray, names: Sequence[str] = ("high", "medium", "low"), **cut) -> np.ndarray:
    """Tier name of each probability, the cut-points taken from these `p` themselves.

    For predictions without fitted tiers; `cut` are the other `CUT_SETTINGS` of
    `retention.tiers` (method, top_shares, cutpoints: see `tier_cutpoints`). Returns (N,)
    object array of str.
    """
    cuts = tier_cutpoints(p, names=names, **cut)
    return np.asarray(list(names), dtype=object)[tier_index(p, cuts)]


def cost_threshold(p: np.ndarray, y: np.ndarray, cost_missed: float, cost_action: float) -> float:
    """The warning threshold t (act when p >= t) with the least validation cost.

    Cost = cost_missed x churners left below t + cost_action x users at or above t. For
    calibrated p it is close to the Bayes threshold cost_action / cost_missed.
    """
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # candidate: act on the first j users (j = 0..N); only cut between distinct p values
    missed = ys.sum() - np.concatenate([[0.0], np.cumsum(ys)])
    cost = cost_missed * missed + cost_action * np.arange(len(ps) + 1)
    valid = np.concatenate([[True], np.append(ps[1:] < ps[:-1], True)])
    j = int(np.flatnonzero(valid)[np.argmin(cost[valid])])
    if j == 0:  # acting on nobody is cheapest: a threshold just above every p
        return float(np.nextafter(ps[0], 2.0))
    return float(ps[j - 1])


def fit_tiers(
    p_val: np.ndarray,
    y_val: np.ndarray,
    method: str = "quantile",
    names: Sequence[str] = ("high", "medium", "low"),
    top_shares: Sequence[float] = (0.1, 0.3),
    cutpoints: Sequence[float] = (0.8, 0.5),
    cost_missed: float = 50.0,
    cost_action: float = 5.0,
) -> dict:
    """Tier cut-points and the cost threshold from validation predictions, with precision, recall.

    Args:
        p_val: (N,) validation p_churn.
        y_val: (N,) validation churn labels (0/1).
        method, names, top_shares, cutpoints: see `tier_cutpoints`; `names` run from the
            highest risk to the lowest.
        cost_missed: cost of a churner who gets no action.
        cost_action: cost of one action.

    Returns:
        A plain dict: `method`, `names`, `cutpoints` (descending), `cost_missed`,
        `cost_action`, `cost_threshold`, `bayes_threshold`, `base_rate`, `n_val`,
        `threshold_precision`, `threshold_recall`, `threshold_share`, and `tiers`: one dict
        per tier with `name`, `min_p`, `users`, `share`, `precision` (churn rate in the
        tier), `recall` (share of all churners in it), and `cum_precision`, `cum_recall`
        (this tier and the riskier ones together).
    """
    p = _check_probs(p_val, "p_val")
    y = np.asarray(y_val, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise DataError(f"p_val has {len(p)} rows but y_val has {len(y)}")
    if not len(p):
        raise DataError("no validation predictions to fit tiers on")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("y_val must be 0/1 churn labels")
    if cost_missed <= 0 or cost_action < 0:
        raise DataError(
            f"need cost_missed > 0 and cost_action >= 0, got {cost_missed} and {cost_action}"
        )
    names = [str(n) for n in names]
    cuts = tier_cutpoints(p, method, names, top_shares, cutpoints)
    tier = tier_index(p, cuts)
    churners = max(float(y.sum()), 1.0)
    tiers, cum_n, cum_pos = [], 0, 0.0
    for i, name in enumerate(names):
        sel = tier == i
        n_i, pos = int(sel.sum()), float(y[sel].sum())
        cum_n, cum_pos = cum_n + n_i, cum_pos + pos
        tiers.append(
            {
                "name": name,
                "min_p": float(cuts[i]) if i < len(cuts) else 0.0,
                "users": n_i,
                "share": n_i / len(p),
                "precision": pos / n_i if n_i else float("nan"),
                "recall": pos / churners,
                "cum_precision": cum_pos / cum_n if cum_n else float("nan"),
                "cum_recall": cum_pos / churners,
            }
        )
    t = cost_threshold(p, y, float(cost_missed), float(cost_action))
    flagged = p >= t
    return {
        "method": method,
        "names": names,
        "cutpoints": [float(c) for c in cuts],
        "cost_missed": float(cost_missed),
        "cost_action": float(cost_action),
        "cost_threshold": t,
        "bayes_threshold": float(min(cost_action / cost_missed, 1.0)),
        "threshold_precision": float(y[flagged].mean()) if flagged.any() else float("nan"),
        "threshold_recall": float(y[flagged].sum() / churners),
        "threshold_share": float(flagged.mean()),
        "base_rate": float(y.mean()),
        "n_val": len(p),
        "tiers": tiers,
    }


def assign_tiers(p: np.ndarray, state: Mapping) -> np.ndarray:
    """Tier name of each probability under a `fit_tiers` state; (N,) object array of str."""
    p = _check_probs(p, "p_churn")
    try:
        names = np.asarray(list(state["names"]), dtype=object)
        cuts = [float(c) for c in state["cutpoints"]]
    except (KeyError, TypeError) as err:
        raise DataError(
            "the tier state has no names/cutpoints: fit it with seqchurn.retention.tiers.fit_tiers"
        ) from err
    if len(cuts) != len(names) - 1:
        raise DataError(f"the tier state has {len(names)} names but {len(cuts)} cut-points")
    return names[tier_index(p, cuts)]
