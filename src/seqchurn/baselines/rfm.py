"""Logistic RFM and recency-only baselines (DESIGN section 8)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from seqchurn.data.features import EventIndex, summary_features
from seqchurn.data.labels import activity_mask

RFM_FEATURES = ("recency_days", "frequency_days", "monetary_mean", "tenure_days")


def _summaries(
    events: pd.DataFrame, snapshots: pd.DataFrame, activity_event_types: Sequence[str] | None
) -> pd.DataFrame:
    """Whole-history summaries of each snapshot row at its cutoff."""
    index = EventIndex(events, activity_mask(events, activity_event_types))
    codes = index.user_codes(snapshots["user_id"].to_numpy(dtype=object))
    return summary_features(index, codes, snapshots["cutoff"].to_numpy(np.int64), count_types=())


def rfm_features(
    events: pd.DataFrame, snapshots: pd.DataFrame, activity_event_types: Sequence[str] | None = None
) -> np.ndarray:
    """(N, 4) raw features per snapshot row: recency, frequency (activity days), mean spend per activity day, tenure."""
    return _summaries(events, snapshots, activity_event_types)[list(RFM_FEATURES)].to_numpy(
        np.float64
    )


def recency_score(
    events: pd.DataFrame, snapshots: pd.DataFrame, activity_event_types: Sequence[str] | None = None
) -> np.ndarray:
    """Days since the last activity day: a churn score (not a probability), higher = more likely gone."""
    return _summaries(events, snapshots, activity_event_types)["recency_days"].to_numpy(np.float64)


class LogisticRFM:
    """StandardScaler + LogisticRegression(C=1) on the four RFM features, trained on labeled snapshots."""

    def __init__(self, activity_event_types: Sequence[str] | None = None, C: float = 1.0):
        self.activity_event_types = activity_event_types
        self.pipeline: Pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=1000)
        )

    def fit(self, events: pd.DataFrame, train_snapshots: pd.DataFrame) -> "LogisticRFM":
        """Fit on snapshots with a `y` column (1 = churned)."""
        X = rfm_features(events, train_snapshots, self.activity_event_types)
        self.pipeline.fit(X, train_snapshots["y"].to_numpy(np.int64))
        return self

    def predict_proba(self, events: pd.DataFrame, snapshots: pd.DataFrame) -> np.ndarray:
        """p_churn for each snapshot row."""
        X = rfm_features(events, snapshots, self.activity_event_types)
        classes = list(self.pipeline.classes_)
        return self.pipeline.predict_proba(X)[:, classes.index(1)]
