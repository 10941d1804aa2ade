"""BG/NBD baseline (Fader, Hardie and Lee 2005): maximum-likelihood fit, P(alive) and P(no activity in H).

Time is in weeks, as in the paper. From a day-level event log, a cutoff day C is
included whole, so the history ends at the midnight after C, the same alignment as
`seqchurn.simulate.bgnbd.bgnbd_oracle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from seqchurn.data.labels import activity_mask

DAYS_PER_WEEK = 7.0
# Start near typical published fits; the search runs over log-parameters, so it is not sensitive to this.
_DEFAULT_INIT = (0.5, 5.0, 1.0, 2.0)


@dataclass
class BGNBDParams:
    """Fitted BG/NBD parameters (weeks) and the maximised log-likelihood."""

    r: float
    alpha: float
    a: float
    b: float
    loglik: float = float("nan")


def _as_arrays(*cols) -> list[np.ndarray]:
    """Float64 copies of the summary columns."""
    return [np.asarray(c, dtype=np.float64) for c in cols]


def bgnbd_loglik_terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer log-likelihood of (x, t_x, T), FHL (2005) eq. 6, in log space."""
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    still_alive = -(r + x) * np.log(alpha + T)
    # B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1); the dropout branch exists only after a repeat purchase.
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return common + np.logaddexp(still_alive, dropped)


def fit_bgnbd(x, t_x, T, init: Sequence[float] | None = None) -> BGNBDParams:
    """Maximum-likelihood BG/NBD fit over log-parameters (L-BFGS-B, then a Nelder-Mead polish)."""
    x, t_x, T = _as_arrays(x, t_x, T)
    if not len(x):
        raise ValueError("fit_bgnbd needs at least one customer")
    if (x < 0).any() or (t_x < 0).any() or (T < t_x).any():
        raise ValueError("need x >= 0 and 0 <= t_x <= T for every customer")
    # Customers with equal summaries contribute equally: weight unique rows to cut the work.
    uniq, counts = np.unique(np.stack([x, t_x, T], axis=1), axis=0, return_counts=True)
    ux, ut, uT = uniq.T
    n = float(counts.sum())

    def negll(theta: np.ndarray) -> float:
        r, alpha, a, b = np.exp(np.clip(theta, -30.0, 30.0))
        ll = counts @ bgnbd_loglik_terms(r, alpha, a, b, ux, ut, uT)
        return -ll / n if np.isfinite(ll) else 1e10

    theta0 = np.log(np.asarray(init if init is not None else _DEFAULT_INIT, dtype=np.float64))
    res = minimize(negll, theta0, method="L-BFGS-B", options={"maxiter": 2000})
    # The gradient is numerical, so polish with a derivative-free search to tight tolerances.
    res = minimize(
        negll,
        res.x,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000, "maxfev": 40000},
    )
    r, alpha, a, b = np.exp(res.x)
    return BGNBDParams(float(r), float(alpha), float(a), float(b), loglik=float(-res.fun * n))


def p_alive(params: BGNBDParams, x, t_x, T) -> np.ndarray:
    """Posterior probability that a customer with summary (x, t_x, T) is still alive at T."""
    x, t_x, T = _as_arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds_dead = np.where(
            x > 0,
            np.log(a)
            - np.log(np.maximum(b + x - 1.0, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)),
            -np.inf,
        )
    # exp of a large positive log-odds overflows; the clip keeps p_alive at an exact-enough 0.
    return 1.0 / (1.0 + np.exp(np.minimum(log_odds_dead, 700.0)))


def p_no_activity(params: BGNBDParams, x, t_x, T, horizon_weeks: float) -> np.ndarray:
    """P(no transaction in (T, T + H]) = (1 - P_alive) + P_alive ((alpha+T)/(alpha+T+H))^(r+x)."""
    x, t_x, T = _as_arrays(x, t_x, T)
    alive = p_alive(params, x, t_x, T)
    silent_if_alive = np.exp(
        (params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + T + horizon_weeks))
    )
    return (1.0 - alive) + alive * silent_if_alive


def p_silent_window(
    params: BGNBDParams, x, t_x, T, start_weeks, horizon_weeks: float
) -> np.ndarray:
    """P(no transaction in (T + s, T + s + H]) per customer and start s: (N,), (S,) -> (N, S).

    Alive at T, lambda ~ Gamma(r + x, alpha + T) and p ~ Beta(a, b + x) independently; alive
    at T + s with probability E[exp(-lambda p s)], then silent for H with exp(-lambda H). The
    expectations over p are Gauss hypergeometric functions (Euler's integral):
    E_p[(1 + p z)^-(r+x)] = 2F1(r + x, a; a + b + x; -z).
    """
    x, t_x, T = (v[:, None] for v in _as_arrays(x, t_x, T))
    s = np.asarray(start_weeks, np.float64)[None, :]
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    alive = p_alive(params, x, t_x, T)
    shape, rate = r + x, alpha + T
    stays = hyp2f1(shape, a, a + b + x, -s / rate)  # E[exp(-lambda p s)]
    silent = np.exp(shape * (np.log(rate) - np.log(rate + horizon_weeks)))
    stays_then_buys = stays - silent * hyp2f1(shape, a, a + b + x, -s / (rate + horizon_weeks))
    return np.clip(1.0 - alive * stays_then_buys, 0.0, 1.0)


def rfm_summary(
    events: pd.DataFrame, cutoff_day: int, activity_event_types: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-user (x, t_x, T) in weeks at cutoff day C from activity days on or before C, sorted by user.

    x = activity days after the first one; t_x = (last - first day) / 7; T = (C + 1 - first day) / 7,
    since the cutoff day is included whole and the history ends at the following midnight.
    """
    mask = activity_mask(events, activity_event_types) & (events["day"].to_numpy() <= cutoff_day)
    days = events.loc[mask, ["user_id", "day"]].drop_duplicates()  # BG/NBD counts purchase days
    g = days.groupby("user_id", sort=True)["day"].agg(["count", "min", "max"])
    first = g["min"].to_numpy(np.float64)
    return pd.DataFrame(
        {
            "user_id": g.index.to_numpy(),
            "x": g["count"].to_numpy(np.float64) - 1.0,
            "t_x": (g["max"].to_numpy(np.float64) - first) / DAYS_PER_WEEK,
            "T": (cutoff_day + 1 - first) / DAYS_PER_WEEK,
        }
    )


class BGNBDBaseline:
    """BG/NBD fitted without labels on the events up to a cutoff, scoring P(no activity in H days)."""

    def __init__(
        self, activity_event_types: Sequence[str] | None = None, init: Sequence[float] | None = None
    ):
        self.activity_event_types = activity_event_types
        self.init = init
        self.params: BGNBDParams | None = None

    def fit(self, events: pd.DataFrame, cutoff_day: int) -> "BGNBDBaseline":
        """Fit on every eligible user's summary at `cutoff_day` (uses no label, so no leakage)."""
        s = rfm_summary(events, cutoff_day, self.activity_event_types)
        self.params = fit_bgnbd(s["x"], s["t_x"], s["T"], init=self.init)
        return self

    def predict(self, events: pd.DataFrame, cutoff_day: int, horizon_days: int) -> pd.DataFrame:
        """p_churn = P(no activity on days C+1 .. C+H) for each user eligible at `cutoff_day`."""
        if self.params is None:
            raise RuntimeError("BGNBDBaseline.predict called before fit")
        s = rfm_summary(events, cutoff_day, self.activity_event_types)
        p = p_no_activity(self.params, s["x"], s["t_x"], s["T"], horizon_days / DAYS_PER_WEEK)
        return pd.DataFrame({"user_id": s["user_id"].to_numpy(), "p_churn": p})

    def predict_survival(
        self, events: pd.DataFrame, cutoff_day: int, horizon_days: int, days: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(user ids, (N, D) S(d)) at `cutoff_day`, S(d) = 1 - P(silent on days C+d+1 .. C+d+H).

        A silent H-window starting d days after C means the churn onset came by then, so this
        is exact at d = 0 (1 - p_churn) and above P(tau > d) after: it misses the silences
        that end in a return.
        """
        if self.params is None:
            raise RuntimeError("BGNBDBaseline.predict_survival called before fit")
        s = rfm_summary(events, cutoff_day, self.activity_event_types)
        start = np.asarray(days, np.float64) / DAYS_PER_WEEK
        silent = p_silent_window(
            self.params, s["x"], s["t_x"], s["T"], start, horizon_days / DAYS_PER_WEEK
        )
        return s["user_id"].to_numpy(), 1.0 - silent
