"""BG/NBD-process event generator and its closed-form churn oracle (DESIGN section 8).

Time inside the process is continuous and measured in weeks since `start`, as in
Fader, Hardie and Lee (2005); the parameter defaults are their CDNOW fit. Labels in
the project work in calendar days, so the oracle converts a cutoff day C and a
horizon of H days into the matching window of weeks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from seqchurn.data.labels import to_day

# Published CDNOW fit (Fader, Hardie and Lee 2005), in weeks.
CDNOW_PARAMS = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}

_NS_PER_WEEK = 7 * 86_400 * 10**9
_DEFAULT_LABELS = ("standard", "discounted", "gift")


def _weeks_to_timestamps(start: pd.Timestamp, weeks: np.ndarray) -> pd.Series:
    """Continuous weeks since start -> datetime64[ns], keeping the sub-day time."""
    ns = np.round(weeks * _NS_PER_WEEK).astype(np.int64)
    return pd.Series(start.value + ns).astype("datetime64[ns]")


def _timestamps_to_weeks(start: pd.Timestamp, ts: pd.Series) -> np.ndarray:
    """datetime64 -> continuous weeks since start (float64)."""
    ns = pd.to_datetime(ts).astype("datetime64[ns]").to_numpy().astype(np.int64) - start.value
    return ns / _NS_PER_WEEK


def simulate_bgnbd(
    n_users: int,
    seed: int = 0,
    r: float = CDNOW_PARAMS["r"],
    alpha: float = CDNOW_PARAMS["alpha"],
    a: float = CDNOW_PARAMS["a"],
    b: float = CDNOW_PARAMS["b"],
    acquisition_weeks: float = 12.0,
    horizon_weeks: float = 78.0,
    start: str | pd.Timestamp = "2020-01-01",
    event_labels: Sequence[str] = _DEFAULT_LABELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate purchases of `n_users` customers from a BG/NBD process.

    Args:
        n_users: number of customers.
        seed: seed of the numpy Generator; the same seed gives identical frames.
        r, alpha: gamma heterogeneity of the purchase rate lambda (shape r, rate alpha, per week).
        a, b: beta heterogeneity of the dropout probability p.
        acquisition_weeks: first purchases are uniform on [0, acquisition_weeks).
        horizon_weeks: the simulation ends here (weeks since start).
        start: calendar time of week 0.
        event_labels: values of the extra `event_label` column (a per-user mix); purely
            decorative inputs, every row keeps event_type="purchase".

    Returns:
        events: one row per purchase with `user_id`, `timestamp` (datetime64[ns]),
            `event_type`, `amount`, `quantity`, `event_label`, sorted by user and time.
        truth: one row per user with `user_id`, `T0_weeks`, `lam`, `p`, `death_week`
            (the time of the repeat purchase after which the user dropped out; inf if
            still alive at horizon_weeks).
    """
    if n_users <= 0:
        raise ValueError(f"n_users must be positive, got {n_users}")
    if not 0 < acquisition_weeks <= horizon_weeks:
        raise ValueError("need 0 < acquisition_weeks <= horizon_weeks")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start)

    lam = rng.gamma(shape=r, scale=1.0 / alpha, size=n_users)
    p = rng.beta(a, b, size=n_users)
    t0 = rng.uniform(0.0, acquisition_weeks, size=n_users)
    death = np.full(n_users, np.inf)

    # One round = the next purchase of every user still in play, so the loop runs
    # as many times as the busiest user buys, not once per user.
    users = [np.arange(n_users)]
    times = [t0]
    active = np.arange(n_users)
    t_last = t0.copy()
    while active.size:
        with np.errstate(divide="ignore"):  # lambda can underflow to 0: never buys again
            gap = rng.standard_exponential(active.size) / lam[active]
        t_next = t_last[active] + gap
        bought = t_next < horizon_weeks
        active, t_next = active[bought], t_next[bought]
        users.append(active)
        times.append(t_next)
        t_last[active] = t_next
        # Dropout is decided only after a repeat purchase, never after the first one.
        dies = rng.random(active.size) < p[active]
        death[active[dies]] = t_next[dies]
        active = active[~dies]

    user_idx = np.concatenate(users)
    t = np.concatenate(times)
    order = np.lexsort((t, user_idx))
    user_idx, t = user_idx[order], t[order]

    width = max(6, len(str(n_users)))
    ids = np.array([f"u{i + 1:0{width}d}" for i in range(n_users)], dtype=object)

    # Spend level and label mix are per-user traits so amounts carry a user signal.
    mu = rng.normal(3.0, 0.5, size=n_users)
    amount = np.exp(rng.normal(mu[user_idx], 0.5))
    quantity = 1.0 + rng.poisson(0.6, size=t.size).astype(np.float64)
    labels = np.asarray(event_labels, dtype=object)
    mix = rng.dirichlet(np.ones(len(labels)), size=n_users)
    cum = np.cumsum(mix[user_idx], axis=1)
    pick = (rng.random(t.size)[:, None] > cum).sum(axis=1).clip(max=len(labels) - 1)

    events = pd.DataFrame(
        {
            "user_id": ids[user_idx],
            "timestamp": _weeks_to_timestamps(start_ts, t),
            "event_type": np.full(t.size, "purchase", dtype=object),
            "amount": amount,
            "quantity": quantity,
            "event_label": labels[pick],
        }
    )
    truth = pd.DataFrame({"user_id": ids, "T0_weeks": t0, "lam": lam, "p": p, "death_week": death})
    return events, truth


def bgnbd_oracle(
    events: pd.DataFrame,
    cutoff,
    horizon_days: int,
    r: float = CDNOW_PARAMS["r"],
    alpha: float = CDNOW_PARAMS["alpha"],
    a: float = CDNOW_PARAMS["a"],
    b: float = CDNOW_PARAMS["b"],
    start: str | pd.Timestamp = "2020-01-01",
    activity_event_types: Sequence[str] | None = ("purchase",),
) -> pd.DataFrame:
    """Bayes-optimal P(no activity on days C+1..C+H | history up to day C) under BG/NBD.

    Args:
        events: event frame with `user_id`, `timestamp` (and `event_type` when filtering).
        cutoff: the day C (included whole); date-like or int days since 1970-01-01.
        horizon_days: H, the label window in days.
        r, alpha, a, b: BG/NBD parameters in weeks.
        start: week 0 of the process (any origin gives the same answer; kept for clarity).
        activity_event_types: event types that count as purchases; None = all.

    Returns:
        One row per user with a purchase on or before day C: `user_id`, `p_churn_oracle`,
        `p_alive` (posterior probability of being alive at the end of day C), sorted by user.
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    start_ts = pd.Timestamp(start)
    # The cutoff day is included whole, so the history ends at the next midnight.
    day_end = pd.Timestamp(np.datetime64(to_day(cutoff), "D")) + pd.Timedelta(days=1)
    t_c = (day_end - start_ts) / pd.Timedelta(weeks=1)
    h_weeks = horizon_days / 7.0

    ev = events
    if activity_event_types is not None and "event_type" in ev.columns:
        ev = ev[ev["event_type"].isin(list(activity_event_types))]
    t = _timestamps_to_weeks(start_ts, ev["timestamp"])
    seen = t < t_c
    hist = pd.DataFrame({"user_id": ev["user_id"].to_numpy()[seen], "t": t[seen]})
    g = hist.groupby("user_id", sort=True)["t"].agg(["count", "min", "max"])

    x = g["count"].to_numpy(np.float64) - 1.0  # repeat purchases only
    t_x = g["max"].to_numpy() - g["min"].to_numpy()
    big_t = t_c - g["min"].to_numpy()

    # Work in logs: (r + x) can be in the hundreds for heavy buyers.
    log_ratio = (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    with np.errstate(divide="ignore"):
        log_b = np.log(np.maximum(b + x - 1.0, 1e-300))  # x = 0 rows are masked below
        log_odds_dead = np.where(x > 0, np.log(a) - log_b + log_ratio, -np.inf)
    p_alive = 1.0 / (1.0 + np.exp(np.minimum(log_odds_dead, 700.0)))
    p_silent_if_alive = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + h_weeks)))
    p_churn = (1.0 - p_alive) + p_alive * p_silent_if_alive

    return pd.DataFrame(
        {"user_id": g.index.to_numpy(), "p_churn_oracle": p_churn, "p_alive": p_alive}
    )
