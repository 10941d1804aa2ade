"""The sequence ablations of the benchmark (`data.ablate`): what the order and the time channels buy.

- "order": within each snapshot's last events, the event type and the event columns (amount,
  quantity) are permuted across positions while the time channels stay in place, so the
  sequence still looks time-ordered and the encoder cannot re-sort it.
- "time": the time channels (days since the previous event, days before C) are zero.

Summary-only (no sequence encoder) is `model=logistic`: the LSTM's user vector without its
last state. The permutation of a snapshot is a hash of its user id, cutoff and positions, so
it depends on nothing else in the log (the leakage test's property holds under it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS
from seqchurn.data.features import RaggedEvents
from seqchurn.errors import DataError

ABLATIONS = ("order", "time")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def check_ablation(ablate: str | None) -> str | None:
    """`ablate` if it names an ablation or is None, else a DataError."""
    if ablate is not None and ablate not in ABLATIONS:
        raise DataError(f"data.ablate must be one of {ABLATIONS} or null, got {ablate!r}")
    return ablate


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-spread uint64 from each uint64."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) & _MASK64


def _within_snapshot_permutation(
    offsets: np.ndarray, user_ids: np.ndarray, cutoffs: np.ndarray
) -> np.ndarray:
    """(N_events,) rows that shuffle each snapshot's events among its own positions."""
    lengths = np.diff(offsets)
    snapshot = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    seeds = pd.util.hash_array(np.asarray(user_ids, dtype=object)) ^ _mix(
        np.asarray(cutoffs, np.int64).astype(np.uint64)
    )
    with np.errstate(over="ignore"):
        keys = _mix(seeds[snapshot] + position.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return np.lexsort((keys, snapshot))


def ablate_events(
    ragged: RaggedEvents, ablate: str | None, user_ids: np.ndarray, cutoffs: np.ndarray
) -> RaggedEvents:
    """Apply `ablate` ("order", "time" or None) to the last events of the snapshots, in place.

    Args:
        ragged: `last_events` of the snapshots (user_ids[i], cutoffs[i]).
        ablate: the ablation; None returns `ragged` unchanged.
    """
    if check_ablation(ablate) is None:
        return ragged
    arrays = [a for a in (ragged.numeric, ragged.raw) if a is not None]
    if ablate == "order":
        perm = _within_snapshot_permutation(ragged.offsets, user_ids, cutoffs)
        ragged.type_code = ragged.type_code[perm]
        for j, f in enumerate(SEQUENCE_CHANNELS):
            if f.column:  # event columns move with their event; time channels stay
                for a in arrays:
                    a[:, j] = a[perm, j]
    else:
        for j, f in enumerate(SEQUENCE_CHANNELS):
            if not f.column:
                for a in arrays:
                    a[:, j] = 0.0
    return ragged
