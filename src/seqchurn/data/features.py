"""Vectorized raw features of snapshots: the last events before each cutoff and whole-history summaries.

Everything here reads only events on or before a snapshot's cutoff day, with one
sort of the log and segment operations (searchsorted on a (user, day) key and
prefix sums), never a Python loop per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

NS_PER_DAY = 86_400 * 10**9
WINDOWS = (30, 90, 180)
BASE_SUMMARY = (
    "recency_days",
    "frequency_days",
    "monetary_mean",
    "monetary_total",
    "tenure_days",
    "mean_gap_days",
    "last_gap_days",
)


@dataclass
class RaggedEvents:
    """The last events of each snapshot, oldest first, concatenated: snapshot i owns rows offsets[i]:offsets[i+1]."""

    event_type: np.ndarray  # (N_events,) object, raw type strings
    numeric: np.ndarray  # (N_events, 4) float32, log1p channels of sequences.NUMERIC_CHANNELS
    offsets: np.ndarray  # (N_snapshots + 1,) int64


class EventIndex:
    """The log sorted once by user and time, with lookups of 'events on or before day C' per user."""

    def __init__(self, events: pd.DataFrame, activity: np.ndarray):
        users, code = np.unique(events["user_id"].to_numpy(dtype=object), return_inverse=True)
        ts = events["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
        order = np.lexsort((ts, code))
        self.users = users
        self.code = code[order]
        self.ts = ts[order]
        self.day = events["day"].to_numpy(np.int64)[order]
        self.event_type = events["event_type"].to_numpy(dtype=object)[order]
        self.amount = events["amount"].to_numpy(np.float64)[order]
        self.quantity = events["quantity"].to_numpy(np.float64)[order]
        self.activity = np.asarray(activity, dtype=bool)[order]
        self.start = np.searchsorted(self.code, np.arange(len(users)), side="left")
        self.base = int(self.day.min()) - 400  # room for windows reaching before the log
        self.span = int(self.day.max()) - self.base + 2
        self.key = self.code * self.span + (self.day - self.base)

        # Activity days: one row per (user, day) with the day's activity spend.
        act_key = self.key[self.activity]
        self.act_key, first = np.unique(act_key, return_index=True)
        self.act_day = self.act_key % self.span + self.base
        bounds = np.append(first, len(act_key))
        # Each activity day's spend is summed over that day's rows alone, so it never depends
        # on other users' events (a running sum over the whole log would, in its last bits).
        self.act_spend = window_sums(self.amount[self.activity], bounds[:-1], bounds[1:])
        self.act_code = self.act_key // self.span

    def user_codes(self, user_ids: np.ndarray) -> np.ndarray:
        """Codes of the given users (each must be in the log)."""
        return np.searchsorted(self.users, user_ids)

    def end_index(
        self, codes: np.ndarray, day: np.ndarray, keys: np.ndarray | None = None
    ) -> np.ndarray:
        """One past the last row with day <= `day` for each user, in the event array (or in `keys`)."""
        keys = self.key if keys is None else keys
        return np.searchsorted(
            keys, codes * self.span + (np.asarray(day) - self.base), side="right"
        )


def window_sums(values: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """sum(values[begin[i]:end[i]]) for each i, each window summed on its own rows only (0 if empty)."""
    begin, end = np.asarray(begin, np.int64), np.asarray(end, np.int64)
    out = np.zeros(len(begin))
    full = end > begin
    if full.any():
        padded = np.append(np.asarray(values, np.float64), 0.0)
        # reduceat sums each [start, next index) slice sequentially: pairs (begin, end) give windows.
        pairs = np.stack([begin[full], end[full]], axis=1).ravel()
        out[full] = np.add.reduceat(padded, pairs)[::2]
    return out


def last_events(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, max_len: int
) -> RaggedEvents:
    """The last `max_len` events on or before each cutoff, with their numeric channels."""
    end = index.end_index(codes, cutoffs)
    begin = np.maximum(index.start[codes], end - max_len)
    lengths = end - begin
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.repeat(begin - offsets[:-1], lengths) + np.arange(offsets[-1])
    owner = np.repeat(np.arange(len(codes)), lengths)

    ts = index.ts[rows]
    is_first = rows == index.start[index.code[rows]]
    prev_ts = index.ts[np.maximum(rows - 1, 0)]
    gap = np.where(is_first, 0.0, (ts - prev_ts) / NS_PER_DAY)
    cutoff_end_ns = (cutoffs[owner] + 1) * NS_PER_DAY  # a cutoff includes its whole day
    before = (cutoff_end_ns - ts) / NS_PER_DAY
    numeric = np.stack(
        [
            np.log1p(index.amount[rows]),
            np.log1p(index.quantity[rows]),
            np.log1p(gap),
            np.log1p(before),
        ],
        axis=1,
    ).astype(np.float32)
    return RaggedEvents(event_type=index.event_type[rows], numeric=numeric, offsets=offsets)


def summary_features(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, count_types: Sequence[str]
) -> pd.DataFrame:
    """Whole-history aggregates at each cutoff, raw (log-scaling and standardizing happen in the Preprocessor)."""
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    act_end = index.end_index(codes, cutoffs, index.act_key)
    act_start = np.searchsorted(index.act_code, codes, side="left")
    freq = act_end - act_start
    if (freq <= 0).any():
        raise ValueError(
            "summary_features needs users with at least one activity day on or before the cutoff"
        )
    last = index.act_day[act_end - 1]
    first = index.act_day[act_start]
    prev = np.where(freq > 1, index.act_day[np.maximum(act_end - 2, 0)], last)
    spend = window_sums(index.act_spend, act_start, act_end)
    out = {
        "recency_days": cutoffs - last,
        "frequency_days": freq,
        "monetary_mean": spend / freq,
        "monetary_total": spend,
        "tenure_days": cutoffs - first,
        "mean_gap_days": np.where(freq > 1, (last - first) / np.maximum(freq - 1, 1), 0.0),
        "last_gap_days": last - prev,
    }

    # Windowed counts per type (exact integer prefix sums) and spend (each window summed alone).
    end = index.end_index(codes, cutoffs)
    activity_amount = index.amount * index.activity
    type_cum = {t: np.concatenate([[0], np.cumsum(index.event_type == t)]) for t in count_types}
    for w in WINDOWS:
        begin = index.end_index(codes, cutoffs - w)
        for t in count_types:
            out[f"count_{t}_{w}d"] = type_cum[t][end] - type_cum[t][begin]
        out[f"spend_{w}d"] = window_sums(activity_amount, begin, end)
    return pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in out.items()})
