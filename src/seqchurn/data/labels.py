"""Snapshots at cutoffs with churn label, time to churn and censoring (DESIGN section 3).

All dates are whole days since 1970-01-01 (int64). A snapshot row is one eligible
user at one cutoff C with labels looked at only up to the observation end E.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from seqchurn.data.timeline import EventIndex
from seqchurn.errors import DataError

DEFAULT_BIN_EDGES = (
    0,
    30,
    60,
    90,
    180,
    365,
)  # finite upper edges; bin 0 = {tau = 0}, last bin open


def to_day(value) -> int:
    """A date-like value (str, Timestamp, date, or an int already in days) -> days since 1970-01-01."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read {value!r} as a date (use YYYY-MM-DD)") from err
    if ts is pd.NaT:
        raise DataError(f"cannot read {value!r} as a date (use YYYY-MM-DD)")
    return int(np.datetime64(ts.date(), "D").astype(np.int64))


def to_date(day: int) -> str:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'."""
    return str(np.datetime64(int(day), "D"))


def activity_mask(events: pd.DataFrame, activity_event_types: Sequence[str] | None) -> np.ndarray:
    """Rows that count as activity: all of them by default, else those of the listed types."""
    if not activity_event_types:
        return np.ones(len(events), dtype=bool)
    types = list(activity_event_types)
    present = set(events["event_type"].unique())
    if not present & set(types):
        raise DataError(
            f"none of data.activity_event_types {types} occurs in the data; its types are {sorted(present)}"
        )
    return events["event_type"].isin(types).to_numpy()


def merge_bins(
    bin_edges: Sequence[int], train_cutoffs: Iterable[int], obs_end: int, horizon: int
) -> list[int]:
    """Drop finite edges that no training snapshot can observe, merging their bins into the open last bin."""
    reach = max(obs_end - horizon - c for c in train_cutoffs)
    if reach < 0:
        raise DataError(
            "no training cutoff has its label window inside the training period (C + H > test cutoff)"
        )
    edges = [int(e) for e in bin_edges if e <= reach]
    if not edges or edges[0] != 0 or list(bin_edges)[0] != 0:
        raise DataError(f"bin edges must start at 0 (the churn bin), got {list(bin_edges)}")
    return edges


def tau_bin_of(tau: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bin index of each tau: 0 for tau = 0, k for edges[k-1] < tau <= edges[k], len(edges) for the open bin."""
    return np.searchsorted(np.asarray(edges), tau, side="left").astype(np.int64)


def censor_edge(cutoff: np.ndarray, obs_end: int, horizon: int, edges: Sequence[int]) -> np.ndarray:
    """m: the largest bin upper edge <= E - H - C, i.e. the longest tau this snapshot can confirm."""
    room = obs_end - horizon - np.asarray(cutoff)
    idx = np.searchsorted(np.asarray(edges), room, side="right") - 1
    return np.asarray(edges)[np.clip(idx, 0, None)]


def month_end_cutoffs(
    first_day: int, test_cutoff: int, horizon: int, skip_months: int = 2
) -> list[int]:
    """Month ends from the third month of the log on, each with C + H <= the test cutoff."""
    first = pd.Timestamp(to_date(first_day)).to_period("M") + skip_months
    last = pd.Timestamp(to_date(test_cutoff - horizon)).to_period("M")
    ends = [to_day(p.to_timestamp(how="end")) for p in pd.period_range(first, last, freq="M")]
    return [c for c in ends if c + horizon <= test_cutoff]


def aligned_cutoffs(
    first_day: int, test_cutoff: int, horizon: int, step_days: int, skip_months: int = 2
) -> list[int]:
    """T - H, T - H - step, ... back to the third month of the log: the latest training labels
    end exactly at the test cutoff T, whatever day of the month T falls on."""
    first = to_day((pd.Timestamp(to_date(first_day)).to_period("M") + skip_months).to_timestamp())
    latest = test_cutoff - horizon
    return sorted(range(latest, first - 1, -int(step_days)))


def make_snapshots(
    events: pd.DataFrame,
    cutoffs: Sequence[int],
    horizon: int,
    obs_end: int | None,
    bin_edges: Sequence[int] = DEFAULT_BIN_EDGES,
    activity_event_types: Sequence[str] | None = None,
    *,
    index: EventIndex | None = None,
) -> pd.DataFrame:
    """One row per (eligible user, cutoff) with labels y, tau, observed, tau_bin.

    Args:
        events: cleaned events (see data/events.py).
        cutoffs: cutoff days (days since epoch); each includes all of its day.
        horizon: H in days.
        obs_end: E, the last day labels may look at; None gives unlabeled snapshots (prediction).
        bin_edges: finite upper edges of the tau bins, already merged (section 3).
        activity_event_types: which types count as activity (None = all).
        index: the EventIndex of `events` with this activity, when the caller has one already.

    Returns:
        Frame with `user_id`, `cutoff`, and when labeled `y` (int8), `tau` (observed tau, or
        the censoring edge m when censored), `observed` (bool) and `tau_bin` (int64).
    """
    cutoffs = np.asarray(sorted({int(c) for c in cutoffs}), dtype=np.int64)
    if obs_end is not None and (cutoffs + horizon > obs_end).any():
        bad = to_date(int(cutoffs[cutoffs + horizon > obs_end][0]))
        raise DataError(
            f"cutoff {bad} + {horizon} days passes the observation end {to_date(obs_end)}: its labels are unknown"
        )
    if index is None:
        index = EventIndex(events, activity_mask(events, activity_event_types))

    # One query per (user, cutoff): the first activity day after C, in the activity-day arrays.
    n_users = len(index.users)
    q_user = np.repeat(np.arange(n_users), len(cutoffs))
    q_cut = np.tile(cutoffs, n_users)
    nxt = index.activity_end(q_user, q_cut)
    eligible = nxt > index.activity_start(q_user)
    q_user, q_cut, nxt = q_user[eligible], q_cut[eligible], nxt[eligible]
    out = pd.DataFrame({"user_id": index.users[q_user], "cutoff": q_cut}, copy=False)
    if obs_end is None:
        return out

    # Labels see activity days up to E only: `end` is one past each user's last one.
    day, never = index.act_day, np.iinfo(np.int64).max
    end = index.activity_end(q_user, obs_end)
    has_next = nxt < end
    nxt_day = np.where(has_next, day[np.minimum(nxt, len(day) - 1)], never)
    y = ~(has_next & (nxt_day <= q_cut + horizon))

    # The onset is the first activity day after C followed by more than H silent days; each
    # user's last day up to E always qualifies, so the lookup stays inside the user's rows.
    rows = np.arange(len(day))
    row_end = index.activity_end(index.act_code, obs_end)
    gap = np.full(len(day), never)
    gap[:-1] = np.where(rows[1:] < row_end[:-1], day[1:] - day[:-1], never)
    onset_rows = np.flatnonzero(gap > horizon)
    onset_row = onset_rows[np.searchsorted(onset_rows, np.minimum(nxt, len(day) - 1))]
    tau = np.where(y, 0, day[onset_row] - q_cut)

    m = censor_edge(q_cut, obs_end=obs_end, horizon=horizon, edges=bin_edges)
    observed = tau <= m
    tau_bin = np.where(observed, tau_bin_of(tau, bin_edges), tau_bin_of(m, bin_edges))
    out["y"] = y.astype(np.int8)
    out["tau"] = np.where(observed, tau, m).astype(np.int64)
    out["observed"] = observed
    out["tau_bin"] = tau_bin
    return out


def check_cutoff_in_data(events: pd.DataFrame, cutoff: int, what: str = "cutoff") -> None:
    """Refuse a cutoff before the first or after the last day of the log."""
    first, last = int(events["day"].min()), int(events["day"].max())
    if not first <= cutoff <= last:
        raise DataError(
            f"{what} {to_date(cutoff)} is outside the data ({to_date(first)} .. {to_date(last)})"
        )
