"""Aggregate features of snapshots for the tree reference: the entries of aggregate_table.

What the field's event-sequence libraries feed gradient boosting: per event type and window,
counts and amount statistics; per type, days since the last and first event and the gaps
between consecutive events. Vectorized like data/features.py (searchsorted bounds on the
EventIndex, integer prefix counts, sums over each snapshot's own rows), never a loop per user,
and nothing after a snapshot's cutoff day is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import Feature, Stat, aggregate_table
from seqchurn.data.timeline import NS_PER_DAY, EventIndex, window_sums


def _window_max(values: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """max(values[begin[i]:end[i]]) for each i over the window's own rows; NaN if empty."""
    out = np.full(len(begin), np.nan)
    full = end > begin
    if full.any():
        padded = np.append(np.asarray(values, np.float64), 0.0)
        pairs = np.stack([begin[full], end[full]], axis=1).ravel()
        out[full] = np.maximum.reduceat(padded, pairs)[::2]
    return out


def _std(n: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Sample standard deviation from count, sum and sum of squares; NaN where n < 2."""
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (squares - total * total / n) / (n - 1)
    # Cancellation can leave a tiny negative variance for equal values.
    return np.where(n >= 2, np.sqrt(np.clip(var, 0.0, None)), np.nan)


class _TypeRows:
    """The sorted log's rows of one event type (every row for None) and each snapshot's bounds
    in them: rows [begin, end) are the snapshot's events of the type on or before C."""

    def __init__(self, index: EventIndex, event_type: str | None, start, end):
        if event_type is None:
            is_type = np.ones(len(index.ts), dtype=bool)
        else:
            is_type = index.type_code == index.type_id(event_type)
        # Prefix counts map a bound in the whole log to the same bound among the type's rows.
        self.cum = np.concatenate([[0], np.cumsum(is_type)])
        self.ts = index.ts[is_type]
        self.amount = index.amount[is_type]
        self.begin, self.end = self.cum[start], self.cum[end]

    def windowed(self, begin_all: np.ndarray) -> dict[Stat, np.ndarray]:
        """Count and amount statistics of the rows from `begin_all` (a bound in the whole log)
        to each snapshot's end."""
        begin = self.cum[begin_all]
        n = (self.end - begin).astype(np.float64)
        total = window_sums(self.amount, begin, self.end)
        squares = window_sums(self.amount * self.amount, begin, self.end)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, total / n, np.nan)
        return {
            Stat.COUNT: n,
            Stat.AMOUNT_SUM: total,
            Stat.AMOUNT_MEAN: mean,
            Stat.AMOUNT_STD: _std(n, total, squares),
        }

    def history(self, cutoff_end_ns: np.ndarray) -> dict[Stat, np.ndarray]:
        """Days since the last and first event, and gap statistics, over the whole history."""
        n = self.end - self.begin
        has = n > 0
        ts = self.ts if len(self.ts) else np.zeros(1, np.int64)  # a type the log lacks
        last = np.where(has, ts[np.clip(self.end - 1, 0, len(ts) - 1)], 0)
        first = np.where(has, ts[np.clip(self.begin, 0, len(ts) - 1)], 0)
        since_last = np.where(has, (cutoff_end_ns - last) / NS_PER_DAY, np.nan)
        since_first = np.where(has, (cutoff_end_ns - first) / NS_PER_DAY, np.nan)
        # gaps[i] = days from row i - 1 to row i; a snapshot's gaps are its rows after its first.
        gaps = np.diff(self.ts, prepend=self.ts[:1]) / NS_PER_DAY
        gap_n = np.maximum(n - 1, 0).astype(np.float64)
        gap_begin = np.minimum(self.begin + 1, self.end)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap_mean = np.where(gap_n > 0, (last - first) / NS_PER_DAY / gap_n, np.nan)
        gap_sum = window_sums(gaps, gap_begin, self.end)
        gap_squares = window_sums(gaps * gaps, gap_begin, self.end)
        return {
            Stat.DAYS_SINCE_LAST: since_last,
            Stat.DAYS_SINCE_FIRST: since_first,
            Stat.GAP_MEAN: gap_mean,
            Stat.GAP_STD: _std(gap_n, gap_sum, gap_squares),
            Stat.GAP_MAX: _window_max(gaps, gap_begin, self.end),
        }


def aggregate_features(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, event_types: Sequence[str]
) -> pd.DataFrame:
    """The entries of `aggregate_table(event_types)` at each (user, cutoff), raw, one column each.

    Args:
        index: the event log's EventIndex (every event type is read, not only activity).
        codes: (Q,) user codes in `index`; cutoffs: (Q,) cutoff days.
        event_types: the types with their own entries (a type absent from the log gives
            counts 0 and NaN statistics).

    Returns:
        (Q, n_features) float64 frame; NaN where a statistic is undefined (no events, too few
        gaps), which LightGBM treats as missing.
    """
    cutoffs = np.asarray(cutoffs, np.int64)
    start = index.start[np.asarray(codes, np.int64)]
    end = index.end_index(codes, cutoffs)
    cutoff_end_ns = (cutoffs + 1) * NS_PER_DAY  # C includes its whole day
    bounds = {None: start}  # where each window begins in the whole log, by window
    table = aggregate_table(event_types)
    values: dict[tuple, np.ndarray] = {}
    for t in dict.fromkeys(f.event_type for f in table):
        rows = _TypeRows(index, t, start, end)
        for w in dict.fromkeys(f.window_days for f in table if f.event_type == t):
            if w not in bounds:
                bounds[w] = index.end_index(codes, cutoffs - w)
            for stat, v in rows.windowed(bounds[w]).items():
                values[(t, w, stat)] = v
        for stat, v in rows.history(cutoff_end_ns).items():
            values[(t, None, stat)] = v
    return pd.DataFrame({f.name: _column(values, f) for f in table}, copy=False)


def _column(values: dict, feature: Feature) -> np.ndarray:
    return np.asarray(values[(feature.event_type, feature.window_days, feature.stat)], np.float64)
