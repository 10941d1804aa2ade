"""Per-group report of a churn model: does it rank, calibrate and flag customers alike across groups?

Most shops hold no protected attributes, so the default groups are derived from the
events themselves (how long a customer has been with the shop, how much they spent):
a model that flags every new or low-spending customer would target retention offers
unevenly. Static attributes join in when the caller passes a user table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import roc_auc_score

from seqchurn.data.timeline import EventIndex, window_sums
from seqchurn.metrics import calibration_error

TERTILES = ("low", "mid", "high")
UNKNOWN = "unknown"
REPORT_METRICS = ("churn_rate", "mean_p", "auroc", "ece", "flagged_share", "tpr")


def _tertile(values: pd.Series, cutoff: pd.Series) -> np.ndarray:
    """Tertile of each value among the rows of its own cutoff; ties share a tertile (average ranks)."""
    by_cutoff = values.groupby(cutoff.to_numpy())
    rank = by_cutoff.rank(method="average").to_numpy()
    n = by_cutoff.transform("count").to_numpy(np.float64)
    known = ~np.isnan(rank)
    # floor(3 (r - 1) / n): exact for whole ranks, so a boundary never flips on rounding
    idx = np.floor(3 * (rank[known] - 1) / n[known]).astype(np.int64).clip(0, 2)
    out = np.full(len(values), UNKNOWN, dtype=object)
    out[known] = np.asarray(TERTILES, dtype=object)[idx]
    return out


def derived_groups(
    events: pd.DataFrame, snaps: pd.DataFrame, users: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Group labels of each snapshot row from the customer's history up to its cutoff.

    Tertiles rather than fixed bands (e.g. < 6 months) because they fit any shop's age and
    price level: fixed bands put every CDNOW customer at 1997-12-31 into one band.

    Args:
        events: cleaned events (data/events.py); every event type counts.
        snaps: (N,) rows with user_id and cutoff (int days since 1970-01-01).
        users: optional static table, user_id plus attribute columns; missing values -> "unknown".

    Returns:
        (N,) frame aligned with `snaps` (fresh index): `tenure_tertile` (days since the first event
        on or before the cutoff) and `spend_tertile` (total amount on or before the cutoff), each
        "low" / "mid" / "high" within its cutoff ("unknown" without history), then the attributes.
    """
    if len(events) == 0:
        raise ValueError("derived_groups needs a non-empty event log")
    index = EventIndex(events)
    snap_users = snaps["user_id"].to_numpy(dtype=object)
    cutoff = snaps["cutoff"].to_numpy(np.int64)
    codes, known = index.find_users(snap_users)
    begin, end = index.start[codes], index.end_index(codes, cutoff)
    has_history = known & (end > begin)

    first = index.day[begin]
    tenure = pd.Series(np.where(has_history, cutoff - first, np.nan))
    spend = pd.Series(np.where(has_history, window_sums(index.amount, begin, end), np.nan))
    cut = pd.Series(cutoff)
    out = pd.DataFrame(
        {"tenure_tertile": _tertile(tenure, cut), "spend_tertile": _tertile(spend, cut)}
    )
    if users is not None:
        attrs = [c for c in users.columns if c != "user_id"]
        table = users.drop_duplicates("user_id").set_index("user_id")[attrs]
        joined = table.reindex(pd.Index(snap_users, dtype=object))
        for col in attrs:
            out[col] = (
                joined[col]
                .astype(object)
                .where(joined[col].notna(), UNKNOWN)
                .astype(str)
                .to_numpy()
            )
    return out


def _auroc(y_true, p) -> float:
    y_true = np.asarray(y_true)
    return float(roc_auc_score(y_true, p)) if len(np.unique(y_true)) == 2 else math.nan


def fairness_report(
    y: np.ndarray, p: np.ndarray, groups: pd.DataFrame, threshold: float
) -> pd.DataFrame:
    """Per group column and value: size, churn rate, AUROC, calibration error, share flagged, TPR.

    Args:
        y: (N,) 0/1 churn labels; p: (N,) p_churn; groups: (N,) rows, one column per grouping.
        threshold: customers with p >= threshold are flagged for a retention action.

    Returns:
        One row per (group_column, group): n, churn_rate, mean_p, auroc (NaN for a single-class
        group), ece (15 bins, as the test metric), flagged_share, tpr (share of the group's
        churners flagged; NaN without churners).
    """
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) != len(p) or len(groups) != len(y):
        raise ValueError(
            f"y ({len(y)}), p ({len(p)}) and groups ({len(groups)}) must have one row per customer"
        )
    if np.isnan(p).any():
        raise ValueError(f"p has {int(np.isnan(p).sum())} NaN value(s): score every customer first")
    flag = float(threshold)
    metrics = {
        "n": lambda t, s: len(t),
        "churn_rate": lambda t, s: float(np.mean(t)),
        "mean_p": lambda t, s: float(np.mean(s)),
        "auroc": _auroc,
        "ece": lambda t, s: calibration_error(s, t),
        "flagged_share": lambda t, s: float(np.mean(np.asarray(s) >= flag)),
        "tpr": lambda t, s: (
            float(np.mean(np.asarray(s)[np.asarray(t) == 1] >= flag))
            if np.any(np.asarray(t) == 1)
            else math.nan
        ),
    }
    frames = []
    for col in groups.columns:
        sensitive = (
            groups[col].astype(object).where(groups[col].notna(), UNKNOWN).astype(str).to_numpy()
        )
        frame = MetricFrame(
            metrics=metrics, y_true=y, y_pred=p, sensitive_features=pd.Series(sensitive, name=col)
        )
        by = frame.by_group.reset_index().rename(columns={col: "group"})
        by.insert(0, "group_column", col)
        frames.append(by)
    columns = ["group_column", "group", "n", *REPORT_METRICS]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)[columns]
    out["n"] = out["n"].astype(np.int64)
    return out


def largest_gaps(report: pd.DataFrame) -> pd.DataFrame:
    """Per group column and metric, the largest difference between two of its groups (max - min, NaN skipped).

    Returns:
        group_column, metric, gap, low_group, low_value, high_group, high_value; empty for an empty report.
    """
    columns = [
        "group_column",
        "metric",
        "gap",
        "low_group",
        "low_value",
        "high_group",
        "high_value",
    ]
    if report is None or report.empty or "group_column" not in report.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for col, part in report.groupby("group_column", sort=False):
        for metric in (m for m in REPORT_METRICS if m in part.columns):
            values = pd.to_numeric(part[metric], errors="coerce")
            if values.notna().sum() == 0:
                rows.append([col, metric, math.nan, None, math.nan, None, math.nan])
                continue
            lo, hi = values.idxmin(), values.idxmax()
            rows.append(
                [
                    col,
                    metric,
                    float(values[hi] - values[lo]),
                    part.at[lo, "group"],
                    float(values[lo]),
                    part.at[hi, "group"],
                    float(values[hi]),
                ]
            )
    return pd.DataFrame(rows, columns=columns)
