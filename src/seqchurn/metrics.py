"""Metrics: a torchmetrics collection for logging, numpy report metrics for the test set."""

from __future__ import annotations

import numpy as np
import torch
from lifelines.utils import concordance_index
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryCalibrationError


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
            "ece": BinaryCalibrationError(n_bins=10),
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
    """Harrell's C of a score where higher means later churn, against (tau, observed)."""
    return float(concordance_index(np.asarray(tau, float), np.asarray(score_later, float), np.asarray(observed, bool)))


def oracle_ratio(auroc: float, auroc_oracle: float) -> float:
    """(AUROC - 0.5) / (AUROC_oracle - 0.5): the share of the attainable lift over chance."""
    return float((auroc - 0.5) / (auroc_oracle - 0.5))
