"""One per-user timeline of the event log, and the lookups labels, features and fairness share.

The log is sorted once by user and time. Every lookup "the user's events on or before day t"
or "within (t - w, t]" is a searchsorted on one (user, day) key, so it is vectorized over
(user, day) queries and never loops over users.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS


def window_sums(values: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """sum(values[begin[i]:end[i]]) for each i, each window summed on its own rows only (0 if empty).

    Never a difference of running sums over the whole log: that would make a user's sum
    depend, in its last bits, on other users' events (the leakage test checks bit-identity).
    """
    begin, end = np.asarray(begin, np.int64), np.asarray(end, np.int64)
    out = np.zeros(len(begin))
    full = end > begin
    if full.any():
        padded = np.append(np.asarray(values, np.float64), 0.0)
        # reduceat sums each [start, next index) slice sequentially: pairs (begin, end) give windows.
        pairs = np.stack([begin[full], end[full]], axis=1).ravel()
        out[full] = np.add.reduceat(padded, pairs)[::2]
    return out


class EventIndex:
    """The cleaned log (data/events.py) sorted by user and time, with per-user day lookups.

    Args:
        events: cleaned events: user_id, timestamp, day, event_type, amount and the columns
            of the sequence channels (data/feature_table.py); a missing timestamp orders by
            day, a missing channel column reads as 0.
        activity: (N,) bool, the rows that count as activity (data/labels.activity_mask);
            None = every row.
    """

    def __init__(self, events: pd.DataFrame, activity: np.ndarray | None = None):
        users, code = np.unique(events["user_id"].to_numpy(dtype=object), return_inverse=True)
        day = events["day"].to_numpy(np.int64)
        # Frames built by hand (retention outcomes, tests) may carry days only.
        ts = (
            events["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
            if "timestamp" in events
            else day
        )
        order = np.lexsort((ts, code))
        self.users = users
        self.code = code[order]
        self.ts = ts[order]
        self.day = day[order]
        self.event_type = events["event_type"].to_numpy(dtype=object)[order]
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
        act_key = self.key[self.activity]
        self.act_key, first = np.unique(act_key, return_index=True)
        self.act_day = self.act_key % self.span + self.base
        self.act_code = self.act_key // self.span
        bounds = np.append(first, len(act_key))
        self.act_spend = window_sums(self.amount[self.activity], bounds[:-1], bounds[1:])

    def user_codes(self, user_ids: np.ndarray) -> np.ndarray:
        """Codes of the given users (each must be in the log)."""
        return np.searchsorted(self.users, user_ids)

    def find_users(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, known): codes of the given users, and which of them are in the log at all."""
        user_ids = np.asarray(user_ids, dtype=object)
        if len(self.users) == 0:
            return np.zeros(len(user_ids), np.int64), np.zeros(len(user_ids), bool)
        codes = np.minimum(self.user_codes(user_ids), len(self.users) - 1)
        return codes, self.users[codes] == user_ids

    def end_index(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        """(Q,) one past each user's last event on or before `day`: events[start[code]:end]."""
        return np.searchsorted(self.key, self._query(codes, day), side="right")

    def activity_end(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        """(Q,) one past each user's last activity day on or before `day`, in the act_* arrays."""
        return np.searchsorted(self.act_key, self._query(codes, day), side="right")

    def activity_start(self, codes: np.ndarray) -> np.ndarray:
        """(Q,) each user's first activity day, in the act_* arrays."""
        return np.searchsorted(self.act_code, codes, side="left")

    def window(
        self, codes: np.ndarray, day: np.ndarray, days: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(begin, end): each user's events within (day - days, day], as event-array bounds."""
        day = np.asarray(day, np.int64)
        return self.end_index(codes, day - days), self.end_index(codes, day)

    def _query(self, codes: np.ndarray, day: np.ndarray) -> np.ndarray:
        # Days outside the log are clipped to just before or after it, so a query never reaches
        # into the key range of the neighbouring user (a chunk's last day may be long before C).
        offset = np.clip(np.asarray(day, np.int64) - self.base, 0, self.span - 1)
        return np.asarray(codes, np.int64) * self.span + offset
