"""Survival metrics of predicted curves S(t) = P(tau > t) against (tau, observed) (DESIGN section 8).

IPCW Brier score at a horizon and integrated over the finite bins, cumulative/dynamic
time-dependent AUC, and Uno's C. The censoring weights come from K(t) = P(C >= t), the
Kaplan-Meier estimate of the censoring distribution, read with DESIGN section 3's convention:
a row censored at c is known to survive through c (censored at m means tau > m), and a
censoring time tied with an event time holds for the event too (the snapshot's m censors
every row). So a test snapshot with one cutoff gets K = 1 up to its m and 0 beyond: a
horizon past m cannot be observed and gives NaN with a warning, never a number.

Why not torchsurv (MIT) itself: its C-index loops in Python over events with an (N,) mask
each, and its AUC builds (N, N) matrices, which the 23,570 CDNOW test rows and a bootstrap
cannot afford. The estimators here are numpy, vectorized over rows; the tests check them
against torchsurv and naive loops on small cases.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from seqchurn.errors import DataError
from seqchurn.metrics import UndefinedMetricWarning

HORIZONS = (30, 90, 180)
# The results table's survival columns; survival_scores returns these keys.
SURVIVAL_COLUMNS = ("ibs", "td_auc_30", "td_auc_90", "td_auc_180", "uno_c")


def _nan(name: str, why: str) -> float:
    warnings.warn(
        f"{name} is undefined here ({why}): reported as NaN", UndefinedMetricWarning, stacklevel=3
    )
    return math.nan


class Censoring:
    """K(t) = P(C >= t) from (tau, observed), and the longest time a row's status is known."""

    def __init__(self, tau: np.ndarray, observed: np.ndarray):
        tau, observed = _labels(tau, observed)
        self.times, inverse = np.unique(tau, return_inverse=True)
        events = np.bincount(inverse[observed], minlength=len(self.times))
        censored = np.bincount(inverse[~observed], minlength=len(self.times))
        at_risk = len(tau) - np.concatenate([[0], np.cumsum(events + censored)[:-1]])
        # Events at a time leave before its censorings: only rows still followed can be censored.
        followed = at_risk - events
        hazard = np.divide(censored, followed, out=np.zeros(len(followed)), where=followed > 0)
        self.after = np.cumprod(1.0 - hazard)  # K just after each distinct time
        zero = np.flatnonzero(self.after <= 0)
        # Past this time no row's status is known: the snapshot's maximum follow-up m.
        self.max_time = float(self.times[zero[0]]) if len(zero) else math.inf

    def at(self, t) -> np.ndarray:
        """K(t) = P(C >= t): the product over distinct times strictly before t."""
        k = np.searchsorted(self.times, np.asarray(t, np.float64), side="left")
        return np.where(k > 0, self.after[np.maximum(k - 1, 0)], 1.0)

    def inverse_at(self, t) -> np.ndarray:
        """1 / K(t), 0 where K(t) = 0 (such rows carry no information)."""
        k = self.at(t)
        return np.divide(1.0, k, out=np.zeros_like(k), where=k > 0)


def _labels(tau, observed) -> tuple[np.ndarray, np.ndarray]:
    tau = np.asarray(tau, np.float64)
    observed = np.asarray(observed)
    if tau.ndim != 1 or observed.shape != tau.shape:
        raise DataError(f"tau {tau.shape} and observed {observed.shape} must be equal 1-d shapes")
    if not np.isfinite(tau).all() or (tau < 0).any():
        raise DataError("tau must be finite and >= 0 (days to churn or to the censoring edge)")
    return tau, observed.astype(bool)


def _curves(surv, times, n: int) -> tuple[np.ndarray, np.ndarray]:
    surv = np.asarray(surv, np.float64)
    times = np.asarray(times, np.float64).ravel()
    if surv.ndim != 2 or surv.shape != (n, len(times)):
        raise DataError(f"surv has shape {surv.shape}, expected ({n}, {len(times)}): rows x times")
    if not len(times) or times[0] != 0 or (np.diff(times) <= 0).any():
        raise DataError(f"times must start at 0 and increase strictly, got {times.tolist()}")
    if not np.isfinite(surv).all() or (surv < 0).any() or (surv > 1).any():
        raise DataError("surv must hold probabilities P(tau > t) in [0, 1], no NaN")
    return surv, times


def interpolate(surv: np.ndarray, times: np.ndarray, t) -> np.ndarray:
    """S at days t, linear between the given times as the head's curve is: (N, K) -> (N, len(t))."""
    t = np.atleast_1d(np.asarray(t, np.float64))
    hi = np.clip(np.searchsorted(times, t, side="left"), 0, len(times) - 1)
    lo = np.maximum(hi - 1, 0)
    width = np.where(hi > lo, times[hi] - times[lo], 1.0)
    w = np.where(hi > lo, (t - times[lo]) / width, 1.0)
    return surv[:, lo] * (1 - w) + surv[:, hi] * w


def _status(tau, observed, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(churned by t, known to be active after t) per row; a row censored before t is neither."""
    churned = observed & (tau <= t)
    active = (tau > t) | (~observed & (tau == t))
    return churned, active


def _horizon_ok(name: str, t: float, times: np.ndarray, cens: Censoring) -> bool:
    if t > cens.max_time:
        _nan(name, f"{t:g} days is beyond the observable follow-up of {cens.max_time:g} days")
        return False
    if t > times[-1] or t < 0:
        _nan(name, f"{t:g} days is outside the predicted curve's 0-{times[-1]:g} days")
        return False
    return True


def brier_at(surv, times, tau, observed, t: float) -> float:
    """IPCW Brier score of S(t): churned rows weigh 1/K(tau), active ones 1/K(t) (Graf 1999)."""
    tau, observed = _labels(tau, observed)
    surv, times = _curves(surv, times, len(tau))
    cens = Censoring(tau, observed)
    if not _horizon_ok(f"Brier at {t:g} days", t, times, cens):
        return math.nan
    s = interpolate(surv, times, t)[:, 0]
    churned, active = _status(tau, observed, t)
    err = churned * s**2 * cens.inverse_at(tau) + active * (1 - s) ** 2 * cens.inverse_at(t)
    return float(err.mean())


def ibs_rows(surv, times, tau, observed) -> tuple[np.ndarray, float]:
    """Each row's share of the integrated Brier score over [0, t_max], and t_max.

    t_max is the last finite time, or the observable follow-up where that is shorter: the
    integral covers only what the snapshot can confirm. Between consecutive grid points
    (the curve's times and the distinct tau) a row's status and K are constant and S is
    linear, so each piece integrates exactly. The IBS is the mean of the rows (NaN rows
    when t_max is 0); the bootstrap reweights these rows, holding K at the full sample's.
    """
    tau, observed = _labels(tau, observed)
    surv, times = _curves(surv, times, len(tau))
    cens = Censoring(tau, observed)
    t_max = float(min(times[-1], cens.max_time))
    if t_max <= 0:
        return np.full(len(tau), math.nan), t_max
    grid = np.union1d(times[times <= t_max], tau[tau <= t_max])
    grid = np.union1d(grid, [0.0, t_max])  # (G,)
    s = interpolate(surv, times, grid)  # (N, G)
    a, b = s[:, :-1], s[:, 1:]  # S at each piece's ends, (N, G-1)
    width = np.diff(grid)
    sq_s = width * (a * a + a * b + b * b) / 3  # integral of S^2 over each piece
    sq_1s = width * ((1 - a) ** 2 + (1 - a) * (1 - b) + (1 - b) ** 2) / 3
    lo, hi = grid[:-1], grid[1:]
    churned = observed[:, None] & (tau[:, None] <= lo)  # (N, G-1)
    active = tau[:, None] >= hi
    # K inside a piece is K just after its left end.
    inv_k = cens.inverse_at(np.nextafter(lo, np.inf))
    per_row = (churned * sq_s).sum(1) * cens.inverse_at(tau) + (active * sq_1s) @ inv_k
    return per_row / t_max, t_max


def integrated_brier(surv, times, tau, observed) -> float:
    """IPCW integrated Brier score over [0, t_max] (see ibs_rows); NaN with a warning if empty."""
    rows, t_max = ibs_rows(surv, times, tau, observed)
    if t_max <= 0:
        return _nan("integrated Brier", "no observable time past 0 on the curve")
    return float(rows.mean())


def td_auc(surv, times, tau, observed, t: float) -> float:
    """Cumulative/dynamic AUC at t of the risk 1 - S(t) (Uno 2007): churned by t vs active after t.

    Cases weigh 1/K(tau), controls 1; ties of the risk count half.
    """
    tau, observed = _labels(tau, observed)
    surv, times = _curves(surv, times, len(tau))
    cens = Censoring(tau, observed)
    name = f"AUC at {t:g} days"
    if not _horizon_ok(name, t, times, cens):
        return math.nan
    risk = 1.0 - interpolate(surv, times, t)[:, 0]
    case, control = _status(tau, observed, t)
    if not case.any() or not control.any():
        return _nan(name, "no churned or no active row at this horizon")
    ctrl = np.sort(risk[control])
    below = np.searchsorted(ctrl, risk[case], side="left")
    ties = np.searchsorted(ctrl, risk[case], side="right") - below
    w = cens.inverse_at(tau[case])
    return float(w @ (below + 0.5 * ties) / (w.sum() * len(ctrl)))


def uno_c(later, tau, observed, max_time: float | None = None) -> float:
    """Uno's C of a score where higher means later churn: Harrell's pairs weighted by 1/K(tau_i)^2.

    A pair (i, j) is admissible when i churned at tau_i <= max_time and j left later (tau_j >
    tau_i, or tau_j = tau_i and j censored), as lifelines counts Harrell's C; concordant when
    later_j > later_i, half on ties. The loop runs over distinct churn times (a few hundred
    days at most on day-level data), each step vectorized over rows.
    """
    tau, observed = _labels(tau, observed)
    later = np.asarray(later, np.float64)
    if later.shape != tau.shape or not np.isfinite(later).all():
        raise DataError(f"later has shape {later.shape}, expected {tau.shape}, and no NaN")
    cens = Censoring(tau, observed)
    limit = cens.max_time if max_time is None else min(max_time, cens.max_time)
    _, rank = np.unique(later, return_inverse=True)
    n_rank = int(rank.max(initial=-1)) + 1
    w = cens.inverse_at(tau) ** 2
    num = den = 0.0
    for s in np.unique(tau[observed & (tau <= limit)]):
        rows = np.flatnonzero(observed & (tau == s))
        later_rows = (tau > s) | (~observed & (tau == s))
        counts = np.bincount(rank[later_rows], minlength=n_rank)
        above = counts.sum() - np.cumsum(counts)  # rows ranked strictly higher than each rank
        r = rank[rows]
        num += w[rows] @ (above[r] + 0.5 * counts[r])
        den += w[rows].sum() * counts.sum()
    if den == 0:
        return _nan("Uno's C", "no admissible pair")
    return float(num / den)


def restricted_mean(surv: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Integral of the piecewise-linear S over [0, times[-1]]: (N, K) -> (N,), higher = later."""
    return ((surv[:, 1:] + surv[:, :-1]) / 2 * np.diff(times)).sum(1)


def survival_scores(
    surv, times: Sequence[float], tau, observed, horizons: Sequence[float] = HORIZONS
) -> dict[str, float]:
    """Every survival metric of one method on one snapshot, NaN (with a warning) where undefined.

    Args:
        surv: (N, K) predicted P(tau > times[k]), linear in between.
        times: (K,) days, times[0] = 0 (the head's finite bin edges).
        tau, observed: (N,) days to churn or to the censoring edge, and whether it was seen.
        horizons: the days of the time-dependent AUC.

    Returns:
        ibs (over the finite bins the snapshot observes), td_auc_<d> per horizon and uno_c of
        the restricted mean of S (the head's tau_mean_days).
    """
    tau, observed = _labels(tau, observed)
    surv, times = _curves(surv, times, len(tau))
    out = {"ibs": integrated_brier(surv, times, tau, observed)}
    for d in horizons:
        out[f"td_auc_{d:g}"] = td_auc(surv, times, tau, observed, float(d))
    out["uno_c"] = uno_c(restricted_mean(surv, times), tau, observed)
    return out
