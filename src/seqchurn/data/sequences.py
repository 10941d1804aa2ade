"""Per-user tensors: batch keys, vocabularies and scalers, vectorized tensorization (batches of
them: data/batches.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqchurn.data.ablation import check_ablation
from seqchurn.data.feature_table import (
    SEQUENCE_CHANNELS,
    Feature,
    input_table,
    summary_table,
    time_channel,
)
from seqchurn.data.features import SUMMARY_CHUNK, summary_chunks, summary_features
from seqchurn.data.ranges import (
    SequenceInputs,
    TimeChannel,
    channel_stats,
    merge_moments,
    scale_of,
    sequence_inputs,
)
from seqchurn.data.timeline import EventIndex
from seqchurn.errors import DataError

EVENT_TYPE = "event_type"  # (B, T) long, 0 = pad, 1 = out of vocabulary
NUMERIC = "numeric"  # (B, T, F) float, F = feature_table.SEQUENCE_CHANNELS, standardized log1p
MASK = "mask"  # (B, T) bool, True on real events
SUMMARY = "summary"  # (B, S) float, standardized
STATIC = "static"  # (B, A) long, 0 = unknown
Y = "y"  # (B,) float, 1 = churned
TAU_BIN = "tau_bin"  # (B,) long
TAU = "tau"  # (B,) float, days: observed tau, or the censoring edge m when censored
OBSERVED = "observed"  # (B,) bool
USER_ID = "user_id"  # list[str]
CUTOFF = "cutoff"  # (B,) long, days since 1970-01-01

PAD_ID = 0
OOV_ID = 1

INDEX = "index"  # (B,) long, row of the snapshot table, to put predictions back in order
LABEL_KEYS = (Y, TAU, TAU_BIN, OBSERVED)


@dataclass
class Preprocessor:
    """Vocabularies and scalers fitted on training snapshots only; saved in the checkpoint."""

    vocab: dict[str, int]
    summary_names: list[str]
    summary_mean: list[float]
    summary_std: list[float]
    numeric_mean: list[float]
    numeric_std: list[float]
    static_columns: list[str] = field(default_factory=list)
    static_vocab: dict[str, dict[str, int]] = field(default_factory=dict)
    max_len: int = 256
    activity_event_types: list[str] | None = None
    ablate: str | None = None  # data/ablation.py: applied to every split and at prediction

    @property
    def count_types(self) -> list[str]:
        return sorted(self.vocab, key=self.vocab.get)

    @property
    def inputs(self) -> tuple[Feature, ...]:
        """The feature table of this model's inputs (data/feature_table.input_table)."""
        return input_table(self.count_types, self.static_columns)

    @property
    def sizes(self) -> dict:
        """Sizes learned from the data, passed to the model when it is built."""
        return {
            "n_event_types": len(self.vocab) + 2,
            "n_numeric": len(SEQUENCE_CHANNELS),
            "n_summary": len(self.summary_names),
            "static_cardinalities": [len(self.static_vocab[c]) + 1 for c in self.static_columns],
        }

    @classmethod
    def fit(cls, *args, **kwargs) -> "Preprocessor":
        """Fit vocabularies and scalers on the training snapshots' inputs (`fit_transform`'s
        arguments), without keeping their tensors."""
        return cls.fit_transform(*args, **kwargs)[0]

    @classmethod
    def fit_transform(
        cls,
        index: EventIndex,
        snapshots: pd.DataFrame,
        users: pd.DataFrame | None = None,
        max_len: int = 256,
        max_event_types: int = 50,
        activity_event_types: Sequence[str] | None = None,
        ablate: str | None = None,
    ) -> tuple["Preprocessor", "SnapshotDataset"]:
        """`fit` and then `transform` of the same snapshots, their inputs gathered once."""
        codes, cutoffs = _codes_and_cutoffs(index, snapshots)
        user_ids = snapshots["user_id"].to_numpy(object)
        seq = sequence_inputs(
            index, codes, cutoffs, max_len, False, check_ablation(ablate), user_ids
        )
        counts = np.bincount(seq.type_code, weights=seq.weights, minlength=len(seq.type_names))
        types = seq.type_names.astype(str)
        seen = counts > 0
        types, counts = types[seen], counts[seen]
        top = types[np.lexsort((types, -counts))][:max_event_types]
        vocab = {str(t): i + 2 for i, t in enumerate(top)}
        # the statistics' temporaries come and go before the summary tensor takes its memory
        numeric_mean, numeric_std = channel_stats(seq, cutoffs)
        table = summary_table(list(vocab))
        chunks = summary_chunks(index, codes, cutoffs, list(vocab))
        summary, summary_mean, summary_std = _summary_tensor(chunks, len(codes), len(table))
        static_columns = [c for c in (users.columns if users is not None else []) if c != "user_id"]
        static_vocab = {}
        if static_columns:
            seen = users[users["user_id"].isin(snapshots["user_id"].unique())]
            static_vocab = {
                c: {str(v): i + 1 for i, v in enumerate(sorted(seen[c].unique()))}
                for c in static_columns
            }
        pre = cls(
            vocab=vocab,
            summary_names=[f.name for f in table],
            summary_mean=summary_mean,
            summary_std=summary_std,
            numeric_mean=numeric_mean,
            numeric_std=numeric_std,
            static_columns=static_columns,
            static_vocab=static_vocab,
            max_len=max_len,
            activity_event_types=list(activity_event_types) if activity_event_types else None,
            ablate=ablate,
        )
        return pre, pre._dataset(seq, summary, None, snapshots, users)

    def transform(
        self,
        index: EventIndex,
        snapshots: pd.DataFrame,
        users: pd.DataFrame | None = None,
        keep_raw: bool = False,
    ) -> "SnapshotDataset":
        """Snapshots -> tensors; labels are carried over when the snapshots have them.

        With `keep_raw` the dataset also keeps the unscaled inputs (`SnapshotDataset.raw`),
        which reason sentences quote and prediction reports, at the cost of their memory.
        """
        missing = [c for c in self.static_columns if users is None or c not in users.columns]
        if missing:
            raise DataError(
                f"the model was trained with user attribute(s) {missing} that the data lacks"
            )
        codes, cutoffs = _codes_and_cutoffs(index, snapshots)
        user_ids = snapshots["user_id"].to_numpy(object)
        seq = sequence_inputs(index, codes, cutoffs, self.max_len, keep_raw, self.ablate, user_ids)
        if keep_raw:
            raw = summary_features(index, codes, cutoffs, self.count_types)
            chunks = [(slice(None), [raw[c].to_numpy() for c in raw.columns])]
        else:
            raw, chunks = None, summary_chunks(index, codes, cutoffs, self.count_types)
        stats = (self.summary_mean, self.summary_std)
        summary, *_ = _summary_tensor(chunks, len(codes), len(self.summary_names), stats)
        return self._dataset(seq, summary, raw, snapshots, users)

    def _dataset(
        self,
        seq: SequenceInputs,
        summary: np.ndarray,
        raw: pd.DataFrame | None,
        snapshots: pd.DataFrame,
        users: pd.DataFrame | None,
    ) -> "SnapshotDataset":
        cutoffs = snapshots["cutoff"].to_numpy(np.int64)
        lookup = np.array([self.vocab.get(str(t), OOV_ID) for t in seq.type_names], np.int64)
        ids = lookup[seq.type_code] if len(lookup) else np.zeros(len(seq.type_code), np.int64)
        numeric = seq.numeric  # standardized in place: no second copy of the largest array
        numeric -= np.float32(self.numeric_mean)
        numeric /= np.float32(self.numeric_std)
        time = None
        if seq.ts is not None:
            j = time_channel()
            mean, std = np.float32(self.numeric_mean[j]), np.float32(self.numeric_std[j])
            time = TimeChannel(seq.ts, j, mean, std)
        static = np.zeros((len(snapshots), len(self.static_columns)), dtype=np.int64)
        if self.static_columns:
            attrs = snapshots[["user_id"]].merge(users, on="user_id", how="left")
            for j, col in enumerate(self.static_columns):
                static[:, j] = attrs[col].map(self.static_vocab[col]).fillna(0).to_numpy(np.int64)
        labels = None
        if Y in snapshots.columns:
            labels = {
                Y: torch.as_tensor(snapshots[Y].to_numpy(np.float32)),
                TAU: torch.as_tensor(snapshots[TAU].to_numpy(np.float32)),
                TAU_BIN: torch.as_tensor(snapshots[TAU_BIN].to_numpy(np.int64)),
                OBSERVED: torch.as_tensor(snapshots[OBSERVED].to_numpy(bool)),
            }
        return SnapshotDataset(
            event_type=torch.as_tensor(ids),
            numeric=torch.as_tensor(numeric, dtype=torch.float32),
            offsets=None,
            summary=torch.as_tensor(summary),
            static=torch.as_tensor(static),
            user_id=snapshots["user_id"].to_numpy(dtype=object),
            cutoff=torch.as_tensor(cutoffs),
            labels=labels,
            raw_summary=raw,
            raw_numeric=torch.as_tensor(seq.raw) if seq.raw is not None else None,
            begin=seq.begin,
            lengths=seq.lengths,
            time=time,
        )

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "Preprocessor":
        return cls(**state)


def _codes_and_cutoffs(index: EventIndex, snapshots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    codes, known = index.find_users(snapshots["user_id"].to_numpy(dtype=object))
    if not known.all():
        raise ValueError("snapshots name users that are not in the event log")
    return codes, snapshots["cutoff"].to_numpy(np.int64)


def _summary_tensor(
    chunks: Iterable[tuple[slice, list[np.ndarray]]],
    n: int,
    width: int,
    stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[np.ndarray, list[float], list[float]]:
    """(N, S) float32 standardized summary features from their raw columns, a chunk of rows
    at a time (`features.summary_chunks`), with the means and standard deviations used:
    `stats`, or fitted on these rows (in float64).

    The model reads log1p of each raw feature (negatives clipped to 0), standardized in
    float32; fitting and transforming take the same steps, so a snapshot's tensor does not
    depend on which of them built it.
    """
    out = np.empty((n, width), np.float32)
    moments = [(0, 0.0, 0.0)] * width
    for rows, columns in chunks:
        block = out[rows]
        for j, values in enumerate(columns):
            x = np.maximum(values, 0, dtype=np.float64)
            block[:, j] = np.log1p(x, out=x)
            if stats is None:
                moments[j] = merge_moments(*moments[j], x)
        if stats is not None:
            _standardize(block, *stats)
    if stats is None:
        stats = (
            [float(mean) for _, mean, _ in moments],
            [scale_of(np.sqrt(m2 / max(k, 1))) for k, _, m2 in moments],
        )
        for start in range(0, n, SUMMARY_CHUNK):
            _standardize(out[start : start + SUMMARY_CHUNK], *stats)
    return out, *stats


def _standardize(block: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
    # in place and in float32: a float64 copy of the block costs ten times as much
    np.subtract(block, np.asarray(mean, np.float32), out=block)
    np.divide(block, np.asarray(std, np.float32), out=block)


@dataclass
class RawInputs:
    """The unscaled inputs of a batch, aligned with it: the numbers reason sentences quote."""

    summary: pd.DataFrame  # (B, S) raw summary features, columns named as in the feature table
    numeric: np.ndarray  # (B, T, F) float64 raw SEQUENCE_CHANNELS in their units, 0 on padding


class SnapshotDataset(Dataset):
    """Ragged per-snapshot tensors; indexing with a list of rows returns a padded batch dict."""

    def __init__(
        self,
        event_type,
        numeric,
        offsets,
        summary,
        static,
        user_id,
        cutoff,
        labels=None,
        raw_summary: pd.DataFrame | None = None,
        raw_numeric: torch.Tensor | None = None,
        begin=None,
        lengths=None,
        time: TimeChannel | None = None,
    ):
        """Snapshot i's events are rows begin[i]:begin[i] + lengths[i] of `event_type` and
        `numeric`: give `offsets` (S + 1,) for back-to-back rows, or `begin` and `lengths`."""
        if begin is None:
            begin, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
        self.event_type, self.numeric = event_type, numeric
        self.begin = torch.as_tensor(np.asarray(begin), dtype=torch.long)
        self._lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.lengths = self._lengths.numpy()
        self.summary, self.static, self.user_id, self.cutoff = summary, static, user_id, cutoff
        self.labels, self.time = labels, time
        self.raw_summary, self.raw_numeric = raw_summary, raw_numeric

    def __len__(self) -> int:
        return len(self.cutoff)

    def _gather(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(np.atleast_1d(np.asarray(rows, dtype=np.int64)))
        lengths = self._lengths[rows]
        steps = torch.arange(int(lengths.max()))
        mask = steps[None, :] < lengths[:, None]  # (B, T), real events left-aligned
        src = torch.where(mask, self.begin[rows][:, None] + steps[None, :], 0)  # (B, T)
        return rows, mask, src

    def raw(self, rows) -> RawInputs:
        """The unscaled inputs of `self[rows]`, in the same order and padding."""
        if self.raw_summary is None:
            raise ValueError("this dataset keeps no raw inputs: transform it with keep_raw=True")
        rows, mask, src = self._gather(rows)
        return RawInputs(
            summary=self.raw_summary.iloc[rows.numpy()].reset_index(drop=True),
            numeric=(self.raw_numeric[src] * mask[..., None]).numpy(),
        )

    def __getitem__(self, rows) -> dict:
        rows, mask, src = self._gather(rows)
        numeric = self.numeric[src]  # (B, T, F)
        if self.time is not None:
            self.time.fill(numeric, src, mask, self.cutoff[rows])
        batch = {
            EVENT_TYPE: torch.where(mask, self.event_type[src], PAD_ID),
            NUMERIC: numeric.mul_(mask[..., None]),  # a fresh gather: zeroed in place
            MASK: mask,
            SUMMARY: self.summary[rows],
            STATIC: self.static[rows],
            CUTOFF: self.cutoff[rows],
            INDEX: rows,
            USER_ID: self.user_id[rows.numpy()].tolist(),
        }
        if self.labels is not None:
            batch.update({k: v[rows] for k, v in self.labels.items()})
        return batch
