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
    # What depends on the user or the cutoff alone is looked up once per user or cutoff, and
    # the (user, cutoff) queries go a chunk of users at a time, in user order: a chunk's
    # arrays stay in the CPU's cache and no query array of the whole population exists.
    users = np.arange(len(index.users))
    user_start = index.activity_start(users)
    labels = None if obs_end is None else _Labels(index, cutoffs, horizon, obs_end, bin_edges)
    step = max(1, _QUERIES_PER_CHUNK // max(len(cutoffs), 1))
    parts = []
    for first in range(0, max(len(users), 1), step):  # one chunk at least: the columns' types
        chunk = users[first : first + step]
        q_user = np.repeat(chunk, len(cutoffs))
        q_which = np.tile(np.arange(len(cutoffs)), len(chunk))
        nxt = index.activity_end(q_user, cutoffs[q_which])
        eligible = nxt > np.repeat(user_start[chunk], len(cutoffs))
        q_user, q_which, nxt = q_user[eligible], q_which[eligible], nxt[eligible]
        part = {"user": q_user, "cutoff": cutoffs[q_which]}
        parts.append(part if labels is None else {**part, **labels.of(q_user, q_which, nxt)})
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    user = columns.pop("user")
    return pd.DataFrame({"user_id": index.users[user], **columns}, copy=False)


_QUERIES_PER_CHUNK = 1 << 18


class _Labels:
    """y, tau, observed and tau_bin of (user, cutoff) queries (`make_snapshots`), from what
    the queries share: each user's activity days up to E and each cutoff's censoring edge."""

    def __init__(self, index: EventIndex, cutoffs, horizon: int, obs_end: int, bin_edges):
        self.index, self.cutoffs, self.horizon, self.edges = index, cutoffs, horizon, bin_edges
        # Labels see activity days up to E only: `user_end` is one past each user's last one.
        users = np.arange(len(index.users))
        self.user_end = index.activity_end(users, np.full(len(users), obs_end))
        # The onset is the first activity day after C followed by more than H silent days;
        # each user's last day up to E always qualifies, so a lookup stays in the user's rows.
        day, never = index.act_day, np.iinfo(np.int64).max
        rows = np.arange(len(day))
        row_end = self.user_end[index.act_code]
        gap = np.full(len(day), never)
        gap[:-1] = np.where(rows[1:] < row_end[:-1], day[1:] - day[:-1], never)
        self.onset_rows = np.flatnonzero(gap > horizon)
        self.m = censor_edge(cutoffs, obs_end=obs_end, horizon=horizon, edges=bin_edges)
        self.censored_bin = tau_bin_of(self.m, bin_edges)

    def of(self, q_user: np.ndarray, q_which: np.ndarray, nxt: np.ndarray) -> dict:
        """Labels of users `q_user` at cutoffs[q_which], whose first activity day after the
        cutoff is act_day[nxt] (nxt past the user's rows: none)."""
        day, never = self.index.act_day, np.iinfo(np.int64).max
        q_cut = self.cutoffs[q_which]
        has_next = nxt < self.user_end[q_user]
        at = np.minimum(nxt, len(day) - 1)
        nxt_day = np.where(has_next, day[at], never)
        y = ~(has_next & (nxt_day <= q_cut + self.horizon))
        onset_row = self.onset_rows[np.searchsorted(self.onset_rows, at)]
        tau = np.where(y, 0, day[onset_row] - q_cut)
        m = self.m[q_which]
        observed = tau <= m
        tau_bin = np.where(observed, tau_bin_of(tau, self.edges), self.censored_bin[q_which])
        return {
            "y": y.astype(np.int8),
            "tau": np.where(observed, tau, m).astype(np.int64),
            "observed": observed,
            "tau_bin": tau_bin,
        }


def check_cutoff_in_data(events: pd.DataFrame, cutoff: int, what: str = "cutoff") -> None:
    """Refuse a cutoff before the first or after the last day of the log."""
    first, last = int(events["day"].min()), int(events["day"].max())
    if not first <= cutoff <= last:
        raise DataError(
            f"{what} {to_date(cutoff)} is outside the data ({to_date(first)} .. {to_date(last)})"
        )
