"""Vectorized raw features of snapshots: the last events before each cutoff and whole-history summaries.

Everything here reads only events on or before a snapshot's cutoff day through the lookups
of data/timeline.py, never a Python loop per user. Which features exist, in which order and
unit, is data/feature_table.py; this file holds their computations, keyed by entry name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS, Feature, summary_table
from seqchurn.data.timeline import EventIndex, window_sums

NS_PER_DAY = 86_400 * 10**9


@dataclass
class RaggedEvents:
    """The last events of each snapshot, oldest first, concatenated: snapshot i owns rows offsets[i]:offsets[i+1]."""

    event_type: np.ndarray  # (N_events,) object, raw type strings
    raw: np.ndarray  # (N_events, F) float64, SEQUENCE_CHANNELS in their own units
    numeric: np.ndarray  # (N_events, F) float32, log1p of raw: what the model reads
    offsets: np.ndarray  # (N_snapshots + 1,) int64


def _derived_channels(
    index: EventIndex, rows: np.ndarray, owner: np.ndarray, cutoffs: np.ndarray
) -> dict[str, np.ndarray]:
    """The sequence channels computed from the timestamps, by name, for the given event rows."""
    ts = index.ts[rows]
    is_first = rows == index.start[index.code[rows]]
    prev_ts = index.ts[np.maximum(rows - 1, 0)]
    cutoff_end_ns = (cutoffs[owner] + 1) * NS_PER_DAY  # a cutoff includes its whole day
    return {
        "seq_gap_prev_days": np.where(is_first, 0.0, (ts - prev_ts) / NS_PER_DAY),
        "seq_days_before_cutoff": (cutoff_end_ns - ts) / NS_PER_DAY,
    }


def last_events(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, max_len: int
) -> RaggedEvents:
    """The last `max_len` events on or before each cutoff, with their sequence channels."""
    end = index.end_index(codes, cutoffs)
    begin = np.maximum(index.start[codes], end - max_len)
    lengths = end - begin
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.repeat(begin - offsets[:-1], lengths) + np.arange(offsets[-1])
    owner = np.repeat(np.arange(len(codes)), lengths)
    derived = _derived_channels(index, rows=rows, owner=owner, cutoffs=cutoffs)
    raw = np.stack(
        [index.columns[f.column][rows] if f.column else derived[f.name] for f in SEQUENCE_CHANNELS],
        axis=1,
    )
    return RaggedEvents(
        event_type=index.event_type[rows],
        raw=raw,
        numeric=np.log1p(raw).astype(np.float32),
        offsets=offsets,
    )


class _History:
    """Each snapshot's history at its cutoff: the quantities the summary features share."""

    def __init__(self, index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray):
        self.index, self.codes, self.cutoffs = index, codes, cutoffs
        self.act_end = index.activity_end(codes, cutoffs)
        self.act_start = index.activity_start(codes)
        self.freq = self.act_end - self.act_start
        if (self.freq <= 0).any():
            raise ValueError(
                "summary_features needs users with at least one activity day on or before the cutoff"
            )
        self.last = index.act_day[self.act_end - 1]
        self.first = index.act_day[self.act_start]
        self.prev = np.where(
            self.freq > 1, index.act_day[np.maximum(self.act_end - 2, 0)], self.last
        )
        self.spend = window_sums(index.act_spend, self.act_start, self.act_end)
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._type_cum: dict[str, np.ndarray] = {}

    def window(self, days: int) -> tuple[np.ndarray, np.ndarray]:
        if days not in self._windows:
            self._windows[days] = self.index.window(self.codes, self.cutoffs, days)
        return self._windows[days]

    @cached_property
    def activity_amount(self) -> np.ndarray:
        return self.index.amount * self.index.activity

    def type_count(self, event_type: str, days: int) -> np.ndarray:
        # Integer prefix counts are exact, so a difference of them depends on no other user.
        if event_type not in self._type_cum:
            is_type = self.index.event_type == event_type
            self._type_cum[event_type] = np.concatenate([[0], np.cumsum(is_type)])
        cum = self._type_cum[event_type]
        begin, end = self.window(days)
        return cum[end] - cum[begin]

    def spend_in(self, days: int) -> np.ndarray:
        return window_sums(self.activity_amount, *self.window(days))


_WHOLE_HISTORY: dict[str, Callable[[_History], np.ndarray]] = {
    "recency_days": lambda h: h.cutoffs - h.last,
    "frequency_days": lambda h: h.freq,
    "monetary_mean": lambda h: h.spend / h.freq,
    "monetary_total": lambda h: h.spend,
    "tenure_days": lambda h: h.cutoffs - h.first,
    "mean_gap_days": lambda h: np.where(
        h.freq > 1, (h.last - h.first) / np.maximum(h.freq - 1, 1), 0.0
    ),
    "last_gap_days": lambda h: h.last - h.prev,
}


def _compute(history: _History, feature: Feature) -> np.ndarray:
    if feature.window_days is None:
        return _WHOLE_HISTORY[feature.name](history)
    if feature.event_type is not None:
        return history.type_count(feature.event_type, feature.window_days)
    return history.spend_in(feature.window_days)


def summary_features(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, count_types: Sequence[str]
) -> pd.DataFrame:
    """Whole-history and windowed aggregates at each cutoff, raw, one column per entry of
    `summary_table(count_types)` (log-scaling and standardizing happen in the Preprocessor)."""
    history = _History(index, codes, np.asarray(cutoffs, dtype=np.int64))
    return pd.DataFrame(
        {
            f.name: np.asarray(_compute(history, f), dtype=np.float64)
            for f in summary_table(count_types)
        }
    )
