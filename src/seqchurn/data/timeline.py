"""One per-user timeline of the event log, and the lookups labels, features and fairness share.

The log is sorted once by user and time. Every lookup "the user's events on or before day t"
or "within (t - w, t]" is a searchsorted on one (user, day) key, so it is vectorized over
(user, day) queries and never loops over users.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS

NS_PER_DAY = 86_400 * 10**9


def window_sums(
    values: np.ndarray, begin: np.ndarray, end: np.ndarray, padded: bool = False
) -> np.ndarray:
    """sum(values[begin[i]:end[i]]) for each i, each window summed on its own rows only (0 if empty).

    Never a difference of running sums over the whole log: that would make a user's sum
    depend, in its last bits, on other users' events (the leakage test checks bit-identity).
    `padded`: `values` already ends in one 0.0 past its last row (callers summing many
    window sets over one array pad it once, not per call).
    """
    begin, end = np.asarray(begin, np.intp), np.asarray(end, np.intp)
    if not len(begin):
        return np.zeros(0)
    if not padded:
        values = np.append(np.asarray(values, np.float64), 0.0)
    # reduceat sums each [indices[k], indices[k + 1]) slice sequentially (or gives the row at
    # indices[k] when that slice is empty): interleaved (begin, end) give the windows.
    pairs = np.empty(2 * len(begin), np.intp)
    pairs[0::2], pairs[1::2] = begin, end
    # the last slice runs to the array's end: cut it just past the furthest index
    out = np.add.reduceat(values[: int(pairs.max()) + 1], pairs)[::2].copy()
    out[end <= begin] = 0.0
    return out


def user_time_order(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The stable order by user key, then time: what np.lexsort((ts, user)) gives.

    A log in time order within each user (written user by user, or in time order overall)
    is put in order by the user key alone; the sort by two keys is three to four times
    slower and runs only when a user's events are out of time order.
    """
    order = np.argsort(user, kind="stable")
    return order if in_user_time_order(user, ts, order) else np.lexsort((ts, user))


def in_user_time_order(
    user: np.ndarray, ts: np.ndarray, order: np.ndarray | None = None, chunk: int = 1 << 20
) -> bool:
    """Whether the rows (taken in `order`, if given) are sorted by user key, then time;
    checked a chunk at a time, so no array of the whole log is made."""
    for start in range(0, len(user), chunk):
        rows = slice(max(start - 1, 0), start + chunk)
        if order is not None:
            rows = order[rows]
        u, t = user[rows], ts[rows]
        if not ((u[1:] > u[:-1]) | ((u[1:] == u[:-1]) & (t[1:] >= t[:-1]))).all():
            return False
    return True


def _sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True), by hashing first and sorting the distinct only."""
    codes, distinct = pd.factorize(values)
    if (codes < 0).any():
        raise ValueError("EventIndex needs non-null user ids and event types")
    order = np.argsort(np.asarray(distinct, dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return np.asarray(distinct, dtype=object)[order], rank[codes]


class EventIndex:
    """The cleaned log (data/events.py) sorted by user and time, with per-user day lookups.

    Args:
        events: cleaned events: user_id, timestamp, day, event_type, amount and the columns
            of the sequence channels (data/feature_table.py); a missing timestamp orders by
            day, a missing channel column reads as 0.
        activity: (N,) bool, the rows that count as activity (data/labels.activity_mask);
            None = every row.
    """

    @property
    def event_type(self) -> np.ndarray:
        """(N,) object, each sorted row's event type."""
        return self.type_names[self.type_code]

    def type_id(self, event_type: str) -> int:
        """The code of `event_type` in `type_names`, or -1 when the log has none of it."""
        at = int(np.searchsorted(self.type_names, event_type))
        return at if at < len(self.type_names) and self.type_names[at] == event_type else -1

    def __init__(self, events: pd.DataFrame, activity: np.ndarray | None = None):
        users, code = _sorted_codes(events["user_id"].to_numpy(dtype=object))
        day = events["day"].to_numpy(np.int64)
        # Frames built by hand (retention outcomes, tests) may carry days only.
        ts = (
            events["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
            if "timestamp" in events
            else day
        )
        # A cleaned log comes sorted by user and time: then the index keeps views of it.
        order = slice(None) if in_user_time_order(code, ts) else user_time_order(code, ts)
        self.users = users
        self.code = code[order]
        self.ts = ts[order]
        self.day = day[order]
        # Types as codes into a small table: gathering and counting ints beats object strings.
        self.type_names, type_code = _sorted_codes(events["event_type"].to_numpy(dtype=object))
        self.type_code = type_code.astype(np.int32)[order]
        # The numeric event columns the sequence channels carry, and amount for the spend.
        names = dict.fromkeys(["amount", *(f.column for f in SEQUENCE_CHANNELS if f.column)])
        zeros = np.zeros(len(events))
        self.columns = {
            c: (events[c].to_numpy(np.float64) if c in events else zeros)[order] for c in names
        }
        self.amount = self.columns["amount"]
        active = np.ones(len(events), bool) if activity is None else np.asarray(activity, bool)
        self.activity = active[order]
        self.start = np.searchsorted(self.code, np.arange(len(users)), side="left")
        self.base = int(self.day.min(initial=0)) - 1
        self.span = int(self.day.max(initial=0)) - self.base + 2
        self.key = self.code * self.span + (self.day - self.base)

        # Activity days: one row per (user, day) with the day's activity spend.
        act = slice(None) if self.activity.all() else self.activity  # all: views, no copies
        act_key = self.key[act]
        if len(act_key) and (act_key[1:] >= act_key[:-1]).all():  # sorted: runs, without a sort
            first = np.flatnonzero(np.r_[True, act_key[1:] != act_key[:-1]])
        else:
            first = np.unique(act_key, return_index=True)[1]
        self.act_key = act_key[first]
        self.act_day = self.day[act][first]
        self.act_code = self.code[act][first]
        # the activity rows of each (user, day) are one run: reduceat sums each run on its own
        spend = self.amount[act]
        self.act_spend = np.add.reduceat(spend, first) if len(first) else np.zeros(0)

    @cached_property
    def _user_lookup(self) -> pd.Index:
        # A hash lookup: a searchsorted over object ids compares strings in Python.
        return pd.Index(self.users)

    @cached_property
    def gap_prev_days(self) -> np.ndarray:
        """(N,) days since the user's previous event (0 on the first): a sequence channel."""
        gap = np.zeros(len(self.ts))
        later = np.ones(len(self.ts), dtype=bool)
        later[self.start] = False  # each user's first row
        gap[later] = (self.ts[later] - self.ts[np.flatnonzero(later) - 1]) / NS_PER_DAY
        return gap

    def user_codes(self, user_ids: np.ndarray) -> np.ndarray:
        """Codes of the given users (each must be in the log)."""
        codes, known = self.find_users(user_ids)
        if not known.all():
            raise ValueError("user_codes got users that are not in the event log")
        return codes

    def find_users(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, known): codes of the given users, and which of them are in the log at all."""
        codes = self._user_lookup.get_indexer(np.asarray(user_ids, dtype=object))
        known = codes >= 0
        return np.where(known, codes, 0).astype(np.int64), known

    def end_index(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        """(Q,) one past each user's last event on or before `day`: events[start[code]:end]."""
        return np.searchsorted(self.key, self._query(codes, day), side="right")

    def activity_end(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        """(Q,) one past each user's last activity day on or before `day`, in the act_* arrays."""
        return np.searchsorted(self.act_key, self._query(codes, day), side="right")

    def activity_start(self, codes: np.ndarray) -> np.ndarray:
        """(Q,) each user's first activity day, in the act_* arrays."""
        return np.searchsorted(self.act_code, codes, side="left")

    def _query(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        # Days outside the log are clipped to just before or after it, so a query never reaches
        # into the key range of the neighbouring user (a chunk's last day may be long before C).
        offset = np.clip(np.asarray(day, np.int64) - self.base, 0, self.span - 1)
        return np.asarray(codes, np.int64) * self.span + offset
