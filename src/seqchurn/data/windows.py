"""Which training cutoffs to stack, and how much each counts: chosen per run, never a constant.

Stacking every month end of a long log mixes base rates of long-gone periods into the model,
and most rows of a 15-year log are users who left years ago; stacking only the latest cutoff
starves a sequence model. Each run picks among a few candidate windows (the training cutoffs
within W days before the latest one) the one whose proxy, a logistic regression on the raw recency/frequency/spend summary,
has the lowest log loss on the validation users at the latest training cutoff: the period
closest to the one scored. Only training and validation snapshots take part, whose labels end
by the test cutoff, so nothing of the test period chooses the window. A window shorter than
the largest finite tau bin edge is never a candidate: its snapshots could not observe that bin,
and the hazard head would lose it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler

from seqchurn.data.features import summary_features
from seqchurn.data.timeline import EventIndex
from seqchurn.errors import DataError

log = logging.getLogger(__name__)

ALL = "all"


def parse_windows(spec: Sequence | None) -> list[int | None]:
    """Candidate windows from config: positive integers (days before the latest training
    cutoff, inclusive) or "all" (None).

    None or an empty list means no choice: every training cutoff is stacked.
    """
    if not spec:
        return []
    out: list[int | None] = []
    for item in spec:
        if isinstance(item, str) and item.strip().lower() == ALL:
            out.append(None)
        elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
            out.append(item)
        else:
            raise DataError(
                f"data.train_windows holds positive numbers of days or '{ALL}', got {item!r}"
            )
    return out


def check_halflife(halflife_days) -> None:
    """None or a positive number of days, else DataError."""
    ok = isinstance(halflife_days, (int, float)) and not isinstance(halflife_days, bool)
    if halflife_days is not None and not (ok and 0 < halflife_days < float("inf")):
        raise DataError(
            f"data.recency_halflife_days must be a positive number, got {halflife_days!r}"
        )


def recency_weights(cutoffs: np.ndarray, halflife_days: float | None) -> np.ndarray | None:
    """Sampling weight of each training row: halved for every `halflife_days` its cutoff lies
    before the latest one; None (uniform) without a half-life."""
    check_halflife(halflife_days)
    if halflife_days is None:
        return None
    age = cutoffs.max() - np.asarray(cutoffs, dtype=np.float64)
    return np.exp2(-age / float(halflife_days))


def _proxy_matrix(index: EventIndex, frame: pd.DataFrame) -> np.ndarray:
    codes, _ = index.find_users(frame["user_id"].to_numpy(dtype=object))
    raw = summary_features(index, codes, frame["cutoff"].to_numpy(np.int64), count_types=())
    return np.log1p(np.clip(raw.to_numpy(np.float64), 0, None))


def choose_window(
    index: EventIndex,
    train: pd.DataFrame,
    val: pd.DataFrame,
    windows: list[int | None],
    min_days: int = 0,
) -> tuple[list[int], dict]:
    """The training cutoffs of the candidate window with the lowest proxy validation log loss.

    Args:
        index: the events' index (features from events on or before each cutoff only).
        train, val: training and validation snapshots (user_id, cutoff, y) of every cutoff.
        windows: candidates from `parse_windows`.
        min_days: shorter candidates are skipped (the largest finite tau bin edge).

    Returns:
        (the chosen cutoffs, ascending; a report: candidate days -> log loss, chosen days,
        cutoffs kept and of). Candidates keeping the same cutoffs count once (the shortest
        name). With fewer than two distinct candidates, or one class among the validation
        users at the latest cutoff, every cutoff is kept and the report says why.
    """
    cutoffs = np.sort(train["cutoff"].unique())
    latest = int(cutoffs[-1])
    spans: dict[int, int | None] = {}  # cutoffs kept -> the shortest candidate keeping them
    for w in sorted(windows, key=lambda w: float("inf") if w is None else w):
        if w is not None and w < min_days:
            continue
        kept = len(cutoffs) if w is None else int((cutoffs >= latest - w).sum())
        spans.setdefault(kept, w)
    report: dict = {"candidates": {}, "chosen": ALL, "kept": len(cutoffs), "of": len(cutoffs)}
    everything = [int(c) for c in cutoffs]
    at_latest = val[val["cutoff"] == latest]
    y_val = at_latest["y"].to_numpy(np.int64)
    if len(spans) < 2:
        report["reason"] = "one distinct candidate"
        return everything, report
    if len(np.unique(y_val)) < 2:
        report["reason"] = "one class among the validation users at the latest cutoff"
        return everything, report
    x_train, x_val = _proxy_matrix(index, train), _proxy_matrix(index, at_latest)
    row_cutoff, y_train = train["cutoff"].to_numpy(), train["y"].to_numpy(np.int64)
    best = None
    for kept, days in spans.items():
        rows = row_cutoff >= cutoffs[-kept]
        if len(np.unique(y_train[rows])) < 2:
            continue
        scaler = StandardScaler().fit(x_train[rows])
        model = LogisticRegression(max_iter=1000)
        model.fit(scaler.transform(x_train[rows]), y_train[rows])
        p = model.predict_proba(scaler.transform(x_val))[:, 1]
        loss = float(log_loss(y_val, p, labels=[0, 1]))
        name = ALL if kept == len(cutoffs) else days
        report["candidates"][name] = loss
        if best is None or loss < best[0]:
            best = (loss, kept, name)
    if best is None:
        report["reason"] = "every candidate window holds one class"
        return everything, report
    _, kept, report["chosen"] = best
    report["kept"] = kept
    log.info(
        "training window: %s (the latest %d of %d cutoffs; proxy validation log loss %s)",
        report["chosen"] if report["chosen"] == ALL else f"{report['chosen']} days",
        kept,
        len(cutoffs),
        ", ".join(f"{k}: {v:.4f}" for k, v in report["candidates"].items()),
    )
    return everything[-kept:], report
