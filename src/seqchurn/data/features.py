"""Vectorized raw features of snapshots: the last events before each cutoff and whole-history summaries.

Everything here reads only events on or before a snapshot's cutoff day through the lookups
of data/timeline.py, never a Python loop per user. Which features exist, in which order and
unit, is data/feature_table.py; this file holds their computations, keyed by entry name.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS, Feature, summary_table
from seqchurn.data.timeline import NS_PER_DAY, EventIndex, window_sums


@dataclass
class RaggedEvents:
    """The last events of each snapshot, oldest first, concatenated: snapshot i owns rows offsets[i]:offsets[i+1]."""

    type_code: np.ndarray  # (N_events,) int32, codes into type_names
    type_names: np.ndarray  # (n_types,) object, the log's sorted event types
    raw: np.ndarray | None  # (N_events, F) float64, SEQUENCE_CHANNELS in their units, if kept
    numeric: np.ndarray  # (N_events, F) float32, log1p of raw: what the model reads
    offsets: np.ndarray  # (N_snapshots + 1,) int64

    @property
    def event_type(self) -> np.ndarray:
        """(N_events,) object, the raw type strings."""
        return self.type_names[self.type_code]


def days_before_cutoff(ts: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Days from each event time (ns) to the end of its snapshot's cutoff day, which C
    includes whole: the time channel, the one channel that depends on the snapshot."""
    return ((cutoffs + 1) * NS_PER_DAY - ts) / NS_PER_DAY


def _channel(index: EventIndex, f: Feature, rows, lengths, cutoffs) -> np.ndarray:
    """Sequence channel `f` of the event rows `rows` (`lengths` and `cutoffs` place them in
    their snapshots, for the time channel): an event column, or computed from the timestamps."""
    if f.column:
        return index.columns[f.column][rows]
    if f.name == "seq_gap_prev_days":
        return index.gap_prev_days[rows]
    if f.name == "seq_days_before_cutoff":
        return days_before_cutoff(index.ts[rows], np.repeat(cutoffs, lengths))
    raise KeyError(f"no computation for the derived sequence channel {f.name!r}")


def event_windows(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(begin, lengths): the last `max_len` events on or before each cutoff are the index's
    rows begin:begin + lengths, one contiguous range, since its log is sorted by user and time."""
    end = index.end_index(codes, cutoffs)
    begin = np.maximum(index.start[codes], end - max_len)
    return begin, end - begin


def ragged_rows(begin: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, offsets): the ranges begin:begin + lengths, concatenated, and where each starts."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.repeat(begin - offsets[:-1], lengths) + np.arange(offsets[-1]), offsets


def event_channels(index: EventIndex) -> np.ndarray:
    """(N, F) float32: log1p of every event's sequence channels, in the index's order; the
    time channel's column is 0, as it depends on the snapshot (`days_before_cutoff`)."""
    numeric = np.zeros((len(index.ts), len(SEQUENCE_CHANNELS)), dtype=np.float32)
    for j, f in enumerate(SEQUENCE_CHANNELS):
        if not f.is_time:
            numeric[:, j] = np.log1p(_channel(index, f, slice(None), None, None))
    return numeric


def last_events(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, max_len: int, keep_raw: bool = True
) -> RaggedEvents:
    """The last `max_len` events on or before each cutoff, with their sequence channels."""
    begin, lengths = event_windows(index, codes, cutoffs, max_len)
    return gather_events(index, begin, lengths, cutoffs, keep_raw)


def gather_events(
    index: EventIndex, begin: np.ndarray, lengths: np.ndarray, cutoffs: np.ndarray, keep_raw: bool
) -> RaggedEvents:
    """A copy of the event rows begin:begin + lengths of each snapshot (`event_windows`).

    Channels are filled one at a time into the float32 array the model reads, so the
    float64 intermediates of only one channel exist at once; `raw` (float64) is kept only
    with `keep_raw` (reasons quote it), else it is None.
    """
    rows, offsets = ragged_rows(begin, lengths)
    numeric = np.empty((len(rows), len(SEQUENCE_CHANNELS)), dtype=np.float32)
    raw = np.empty(numeric.shape) if keep_raw else None
    for j, f in enumerate(SEQUENCE_CHANNELS):
        channel = _channel(index, f, rows, lengths, cutoffs)
        numeric[:, j] = np.log1p(channel)
        if raw is not None:
            raw[:, j] = channel
    return RaggedEvents(
        type_code=index.type_code[rows],
        type_names=index.type_names,
        raw=raw,
        numeric=numeric,
        offsets=offsets,
    )


class _LogSums:
    """Running counts and padded amounts over the whole log, computed once and then only
    read, by every chunk of snapshots (`window_sums` and `type_count` take windows of them)."""

    def __init__(self, index: EventIndex, event_types: Sequence[str]):
        self.index = index
        # each array ends in one 0.0 past its last row: `window_sums` pads
        self.activity_amount = np.append(index.amount * index.activity, 0.0)
        self.act_spend = np.append(index.act_spend, 0.0)
        # Integer prefix counts are exact, so a difference of them depends on no other user.
        self.type_cum: dict[str, np.ndarray] = {}
        for event_type in dict.fromkeys(event_types):
            is_type = index.type_code == index.type_id(event_type)
            cum = np.zeros(len(is_type) + 1, np.int32 if len(is_type) < 2**31 else np.int64)
            np.cumsum(is_type, out=cum[1:])
            self.type_cum[event_type] = cum


class _History:
    """Each snapshot's history at its cutoff: the quantities the summary features share."""

    def __init__(self, sums: _LogSums, codes: np.ndarray, cutoffs: np.ndarray):
        index = sums.index
        self.index, self.sums, self.codes, self.cutoffs = index, sums, codes, cutoffs
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
        self.spend = window_sums(sums.act_spend, self.act_start, self.act_end, padded=True)
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @cached_property
    def end(self) -> np.ndarray:
        """One past each snapshot's last event: the end of every window."""
        return self.index.end_index(self.codes, self.cutoffs)

    def window(self, days: int) -> tuple[np.ndarray, np.ndarray]:
        if days not in self._windows:
            begin = self.index.end_index(self.codes, self.cutoffs - days)
            self._windows[days] = begin, self.end
        return self._windows[days]

    def type_count(self, event_type: str, days: int) -> np.ndarray:
        cum = self.sums.type_cum[event_type]
        begin, end = self.window(days)
        return cum[end] - cum[begin]

    def spend_in(self, days: int) -> np.ndarray:
        return window_sums(self.sums.activity_amount, *self.window(days), padded=True)


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


# Snapshots summarized at once: a chunk's dozen intermediate arrays stay in the CPU's cache,
# and the whole table's would cost as much memory as the table itself.
SUMMARY_CHUNK = 1 << 16


def summary_chunks(
    index: EventIndex,
    codes: np.ndarray,
    cutoffs: np.ndarray,
    count_types: Sequence[str],
    chunk: int = SUMMARY_CHUNK,
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """`summary_features` a chunk of snapshots at a time: (rows, one raw float64 column per
    entry of `summary_table(count_types)`). A snapshot's features depend on it alone, so
    the chunks are the whole table's rows, whatever their size."""
    table = summary_table(count_types)
    sums = _LogSums(index, [f.event_type for f in table if f.event_type is not None])
    codes, cutoffs = np.asarray(codes, np.int64), np.asarray(cutoffs, np.int64)

    def one(start: int) -> tuple[slice, list[np.ndarray]]:
        rows = slice(start, min(start + chunk, len(codes)))
        history = _History(sums, codes[rows], cutoffs[rows])
        return rows, [_compute(history, f) for f in table]

    yield from ordered_map(one, range(0, len(codes), chunk))


def ordered_map(fn: Callable, items, workers: int | None = None, ahead: int = 2) -> Iterator:
    """fn(item) for each item, in order, computed by a few threads at most `ahead` items
    beyond the one the caller takes: numpy releases the interpreter in its array loops, so
    independent chunks run on several cores, and the results stay those of a plain loop."""
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a caller that stops early (an error) leaves no queued work to run
            for future in pending:
                future.cancel()


def summary_features(
    index: EventIndex, codes: np.ndarray, cutoffs: np.ndarray, count_types: Sequence[str]
) -> pd.DataFrame:
    """Whole-history and windowed aggregates at each cutoff, raw, one column per entry of
    `summary_table(count_types)` (log-scaling and standardizing happen in the Preprocessor)."""
    table = summary_table(count_types)
    # One block, a row per feature, that the frame takes as it is: a frame built from a
    # dict of columns copies them all into a block of its own.
    values = np.empty((len(table), len(codes)))
    for rows, columns in summary_chunks(index, codes, cutoffs, count_types):
        for j, column in enumerate(columns):
            values[j, rows] = column
    return pd.DataFrame(values.T, columns=[f.name for f in table], copy=False)
