"""Every metric once: a torchmetrics collection for logging, numpy report metrics for the test
set, and the benchmark's score_table built on them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryCalibrationError

# One definition of the calibration error: the logged val/test ece and the benchmark table use it.
ECE_BINS = 15


class BrierScore(Metric):
    """Mean squared error of a probability against a 0/1 label."""

    higher_is_better = False
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("sse", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.sse += ((preds.double() - target.double()) ** 2).sum()
        self.n += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.sse / self.n.clamp(min=1)).float()


class ReturnerAP(BinaryAveragePrecision):
    """Average precision for the customers who come back (the minority class in CDNOW)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(1 - preds, 1 - target)


def churn_metrics() -> MetricCollection:
    """AUROC, AP for churners and for returners, Brier and calibration error of p_churn vs y."""
    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "ap": BinaryAveragePrecision(),
            "ap_returners": ReturnerAP(),
            "brier": BrierScore(),
            "ece": BinaryCalibrationError(n_bins=ECE_BINS),
        }
    )


def log_loss(p: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities p against labels y."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def lift_at(p: np.ndarray, y: np.ndarray, top: float = 0.1) -> float:
    """Churn rate among the top `top` share by p, divided by the overall churn rate."""
    p, y = np.asarray(p), np.asarray(y, dtype=np.float64)
    k = max(1, int(np.ceil(top * len(p))))
    order = np.argsort(-p, kind="stable")[:k]
    return float(y[order].mean() / max(y.mean(), 1e-12))


def cindex(score_later: np.ndarray, tau: np.ndarray, observed: np.ndarray) -> float:
    """Harrell's C of a score where higher means later churn, against (tau, observed).

    NaN with a warning when no pair is admissible (no observed churn, or a single row).
    """
    tau, observed = np.asarray(tau, float), np.asarray(observed, bool)
    try:
        return float(concordance_index(tau, np.asarray(score_later, float), observed))
    except ZeroDivisionError:  # lifelines' answer when no pair is admissible
        return _undefined("C-index", "no admissible pair")


def oracle_ratio(auroc: float, auroc_oracle: float) -> float:
    """(AUROC - 0.5) / (AUROC_oracle - 0.5): the share of the attainable lift over chance."""
    return float((auroc - 0.5) / (auroc_oracle - 0.5))


def calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error in equal-width bins, as torchmetrics' BinaryCalibrationError (l1).

    Bins are [k/n, (k+1)/n) and p = 1 has a bin of its own, as torch.bucketize(right=True) puts it.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if len(p) == 0:
        return _undefined("ece", "no rows")
    idx = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1), p, side="right") - 1
    gap = np.bincount(idx, weights=y - p, minlength=n_bins + 1)
    return float(np.abs(gap).sum() / len(p))


def _undefined(name: str, why: str) -> float:
    warnings.warn(
        f"{name} is undefined here ({why}): reported as NaN", UndefinedMetricWarning, stacklevel=3
    )
    return math.nan


class UndefinedMetricWarning(UserWarning):
    """A metric asked of a subset where it has no meaning (one class, no admissible pair)."""


def auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of p against 0/1 labels; NaN with a warning on one class."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return _undefined("auroc", "one class only")
    return float(roc_auc_score(y, p))


def average_precision(p: np.ndarray, y: np.ndarray) -> float:
    """Average precision of p for the positive class; NaN with a warning on one class."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return _undefined("average precision", "one class only")
    return float(average_precision_score(y, p))


def report_metrics(
    y: np.ndarray,
    p: np.ndarray,
    tau: np.ndarray,
    observed: np.ndarray,
    later: np.ndarray | None = None,
) -> dict[str, float]:
    """Every report metric of one method on one snapshot (DESIGN section 8), NaN where undefined.

    Args:
        y: (N,) 0/1 churn labels; p: (N,) p_churn.
        tau, observed: (N,) days to churn (or the censoring edge) and whether it was seen.
        later: (N,) score where higher means later churn, for the C-index; None ranks by -p_churn.

    Returns:
        auroc, ap (churners), ap_returners (returners positive, scored by 1 - p), brier,
        log_loss, ece (ECE_BINS equal-width bins), calib_large (mean p - churn rate),
        lift_top10 and cindex.
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    return {
        "auroc": auroc(p, y),
        "ap": average_precision(p, y),
        "ap_returners": average_precision(1 - p, 1 - y),
        "brier": float(np.mean((p - y) ** 2)) if len(y) else _undefined("brier", "no rows"),
        "log_loss": log_loss(p, y) if len(y) else _undefined("log loss", "no rows"),
        "ece": calibration_error(p, y),
        # calibration in the large: the mean prediction minus the churn rate
        "calib_large": float(p.mean() - y.mean()) if len(y) else _undefined("mean p", "no rows"),
        "lift_top10": lift_at(p, y, 0.1) if len(y) else _undefined("lift", "no rows"),
        "cindex": cindex(-p if later is None else later, tau, observed),
    }


def check_labels(y) -> np.ndarray:
    """`y` as an int64 array of 0/1 labels (1 = churned); ValueError otherwise."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be a 1-d array of 0/1 labels (1 = churned)")
    return y.astype(np.int64)


def check_scores(name: str, values, n: int, what: str, unit: bool) -> np.ndarray:
    """`values` as a float64 (n,) array, finite and, with `unit`, in [0, 1]; ValueError otherwise.

    A NaN raises rather than dropping the row: a method that skips customers would be
    scored on an easier set.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(
            f"{what} of {name!r} has shape {values.shape}, expected ({n},): one value per test row"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{what} of {name!r} has {int(bad.sum())} NaN/inf value(s), "
            f"first at row {int(np.flatnonzero(bad)[0])}: "
            "every test row needs a score (rows are never dropped silently)"
        )
    if unit and ((values < 0) | (values > 1)).any():
        raise ValueError(f"{what} of {name!r} has values outside [0, 1]: pass probabilities")
    return values


# score_table's columns, and the report_metrics key each one is (the README table's names).
SCORE_COLUMNS = {
    "auroc": "auroc",
    "ap_churners": "ap",
    "ap_returners": "ap_returners",
    "brier": "brier",
    "log_loss": "log_loss",
    "ece": "ece",
    "calib_large": "calib_large",
    "lift10": "lift_top10",
    "cindex": "cindex",
}


def score_table(
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    tau: np.ndarray,
    observed: np.ndarray,
    later: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """`report_metrics` of each method on one test snapshot, one row per method.

    Args:
        y: (N,) 0/1 churn labels.
        preds: method -> (N,) p_churn; a NaN raises ValueError rather than dropping the row.
        tau, observed: (N,) days to churn and its event flag (False = censored), DESIGN section 3.
        later: method -> (N,) score where higher means later churn, for the C-index; a method
            missing here is ranked by -p_churn, as DESIGN section 8 prescribes.

    Returns:
        Columns method and SCORE_COLUMNS: auroc, ap_churners, ap_returners (returners as the
        positive class, scored by 1 - p), brier, log_loss, ece (ECE_BINS bins), lift10, cindex.
    """
    y = check_labels(y)
    n = len(y)
    tau = check_scores("tau", tau, n=n, what="tau", unit=False)
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != (n,):
        raise ValueError(f"observed has shape {observed.shape}, expected ({n},)")
    later = dict(later or {})
    rows = []
    for name, p in preds.items():
        p = check_scores(name, p, n=n, what="p_churn", unit=True)
        s = None
        if name in later:
            s = check_scores(name, later[name], n=n, what="later score", unit=False)
        scores = report_metrics(y, p, tau=tau, observed=observed, later=s)
        rows.append({"method": name, **{c: scores[k] for c, k in SCORE_COLUMNS.items()}})
    return pd.DataFrame(rows, columns=["method", *SCORE_COLUMNS])
