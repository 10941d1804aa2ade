"""Each snapshot's last events as a range of rows of event arrays (data/sequences.py reads them).

A snapshot's last events before its cutoff are one contiguous range of the index's log,
sorted by user and time. With many cutoffs per user the snapshots overlap, and copying each
one's events (`features.last_events`) would hold every event many times over; the dataset
then points into the log itself, and computes the one channel that depends on the snapshot,
the days before its cutoff, when a batch is gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqchurn.data.ablation import ablate_events
from seqchurn.data.feature_table import SEQUENCE_CHANNELS
from seqchurn.data.features import (
    days_before_cutoff,
    event_channels,
    event_windows,
    gather_events,
    ragged_rows,
)
from seqchurn.data.timeline import EventIndex


def scale_of(std: float) -> float:
    """A standard deviation as a divisor: 1 where the input is (nearly) constant."""
    return float(std) if std > 1e-8 else 1.0


@dataclass
class SequenceInputs:
    """Each snapshot's last events as the rows begin:begin + lengths of event arrays.

    Those arrays are either each snapshot's own copy (`last_events`), or, when the snapshots
    overlap (a user at many cutoffs), the index's sorted log itself, each event once: then
    `ts` carries the event times, from which the time channel, the one that depends on the
    snapshot, is computed when a batch is gathered, and `weights` counts the snapshots that
    hold each row, for the statistics of the training inputs.
    """

    type_code: np.ndarray  # (N,) codes into type_names
    type_names: np.ndarray
    numeric: np.ndarray  # (N, F) float32 log1p of the channels
    raw: np.ndarray | None  # (N, F) float64 channels in their units, when kept
    begin: np.ndarray  # (S,) int64
    lengths: np.ndarray  # (S,) int64
    ts: np.ndarray | None = None  # (N,) int64 ns, when shared
    weights: np.ndarray | None = None  # (N,) int64, when shared


def sequence_inputs(
    index: EventIndex,
    codes: np.ndarray,
    cutoffs: np.ndarray,
    max_len: int,
    keep_raw: bool,
    ablate: str | None,
    user_ids: np.ndarray,
    share: bool | None = None,
) -> SequenceInputs:
    """The snapshots' last events, shared with the log when that holds fewer rows than their
    copies would (`share=None`; True or False forces it); copies for raw inputs and
    ablations, which are per snapshot."""
    begin, lengths = event_windows(index, codes, cutoffs, max_len)
    if not keep_raw and ablate is None and share is not False:
        n = len(index.ts) + 1
        cover = np.bincount(begin, minlength=n)
        cover -= np.bincount(begin + lengths, minlength=n)
        np.cumsum(cover, out=cover)
        # rows some snapshot holds, not the log's: events after every cutoff must not even
        # choose the layout
        if share or lengths.sum() > np.count_nonzero(cover):
            return SequenceInputs(
                index.type_code, index.type_names, event_channels(index), None, begin, lengths,
                ts=index.ts, weights=cover[:-1],
            )  # fmt: skip
    ragged = ablate_events(
        gather_events(index, begin, lengths, cutoffs, keep_raw), ablate, user_ids, cutoffs
    )
    shape = (ragged.type_code, ragged.type_names, ragged.numeric, ragged.raw)
    return SequenceInputs(*shape, ragged.offsets[:-1], lengths)


def channel_stats(seq: SequenceInputs, cutoffs: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel over every snapshot's events (float64)."""
    if seq.weights is None:
        columns = seq.numeric.T
        means = [float(c.mean(dtype=np.float64)) for c in columns]
        return means, [scale_of(np.std(c, dtype=np.float64)) for c in columns]
    # Rows no snapshot holds are left out, not weighted 0: events after every cutoff must not
    # even regroup the sums (the leakage test asks for bit-identical scalers).
    held = seq.weights > 0
    w = seq.weights[held].astype(np.float64)
    means, stds = [], []
    for j, f in enumerate(SEQUENCE_CHANNELS):
        if f.is_time:
            mean, var = _time_moments(seq, cutoffs)
        else:
            x = seq.numeric[held, j].astype(np.float64)
            mean = float(np.dot(w, x) / w.sum())
            var = float(np.dot(w, (x - mean) ** 2) / w.sum())
        means.append(mean)
        stds.append(scale_of(np.sqrt(var)))
    return means, stds


def _time_moments(seq: SequenceInputs, cutoffs: np.ndarray, chunk: int = 1 << 20):
    """Mean and variance of the time channel over every snapshot's events, a chunk of
    snapshots at a time, so that no copy of them all exists."""
    ends = np.cumsum(seq.lengths)
    moments, start = (0, 0.0, 0.0), 0
    while start < len(ends):
        stop = max(int(np.searchsorted(ends, ends[start] + chunk, side="right")), start + 1)
        lengths = seq.lengths[start:stop]
        rows, _ = ragged_rows(seq.begin[start:stop], lengths)
        days = days_before_cutoff(seq.ts[rows], np.repeat(cutoffs[start:stop], lengths))
        moments = merge_moments(*moments, np.log1p(days).astype(np.float32).astype(np.float64))
        start = stop
    n, mean, m2 = moments
    return float(mean), float(m2) / max(n, 1)


def merge_moments(n: int, mean, m2, x: np.ndarray):
    """(count, mean, sum of squared deviations) updated with the values `x` (Chan et al.'s
    pairwise update): the moments of data seen a chunk at a time."""
    k = len(x)
    if not k:
        return n, mean, m2
    m = float(x.mean())
    delta, total = m - mean, n + k
    m2 = m2 + (float(((x - m) ** 2).sum()) + delta**2 * n * k / total)
    return total, mean + delta * k / total, m2


@dataclass
class TimeChannel:
    """The time channel of a dataset that shares the log among its snapshots: computed for a
    batch from its events' times and cutoffs, as `last_events` computes it, then scaled."""

    ts: np.ndarray  # (N,) int64 ns of each event row
    column: int  # in SEQUENCE_CHANNELS
    mean: np.float32
    std: np.float32

    def fill(self, numeric: torch.Tensor, src: torch.Tensor, mask: torch.Tensor, cutoffs):
        days = days_before_cutoff(self.ts[src.numpy()], cutoffs.numpy()[:, None])
        x = np.log1p(np.where(mask.numpy(), days, 0.0)).astype(np.float32)
        x -= self.mean
        x /= self.std
        numeric[..., self.column] = torch.from_numpy(x)
