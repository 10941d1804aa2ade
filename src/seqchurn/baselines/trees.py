"""Logistic regression, random forest and LightGBM on the models' summary features (DESIGN section 8).

The features are `summary_features` with the count types the Preprocessor would pick
from the same training snapshots, so these baselines see exactly what the summary
branch of the networks sees; or, with `feature_set="aggregates"`, the field's reference for
event-sequence models: LightGBM on the activity summary plus the per type x window
aggregates of data/aggregates.py. Tuning (C, forest depth, LightGBM's number of rounds)
uses only the validation snapshots, and `fit` refuses any snapshot whose label window
ends after the test cutoff: no test-period data tunes anything.
"""

from __future__ import annotations

import time
from typing import Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from seqchurn.data.aggregates import aggregate_features
from seqchurn.data.features import EventIndex, last_events, summary_features
from seqchurn.data.labels import activity_mask, to_date, to_day
from seqchurn.errors import DataError

KINDS = ("logreg", "rf", "lgbm", "lgbm_untuned")
LOGREG_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
RF_DEPTH_GRID = (4, 6, 8, 12)
# Early-stopped LightGBM: a small learning rate so the validation curve, not the step size, picks the size.
LGBM_TUNED = {
    "learning_rate": 0.02,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
}
LGBM_MAX_ROUNDS = 3000
LGBM_PATIENCE = 200
LGBM_UNTUNED_ROUNDS = (
    100  # LGBMClassifier's default n_estimators, with its default lr 0.1 and 31 leaves
)
FEATURE_SETS = ("summary", "aggregates")
# The aggregates have ~20 columns per event type: the tree size is tuned too, not only rounds.
AGGREGATE_LEAVES_GRID = (7, 15, 31)
AGGREGATE_MAX_TYPES = 20  # the most frequent types get their own aggregates (a cost bound)


def check_label_windows(snapshots: pd.DataFrame, test_cutoff, horizon_days: int, what: str) -> None:
    """Refuse snapshots whose label window (C, C + H] ends after the test cutoff."""
    tc = to_day(test_cutoff)
    ends = snapshots["cutoff"].to_numpy(np.int64) + int(horizon_days)
    if (ends > tc).any():
        bad = to_date(int(snapshots["cutoff"].to_numpy(np.int64)[ends > tc].max()))
        raise DataError(
            f"{what} snapshot at {bad} has its {horizon_days}-day label window end after the test cutoff "
            f"{to_date(tc)}: test-period labels may not train or tune a baseline"
        )
    if "y" not in snapshots.columns:
        raise DataError(f"{what} snapshots have no label column 'y'")


class SummaryBaseline:
    """A scikit-learn / LightGBM classifier on whole-history summary features of each snapshot.

    Args:
        kind: "logreg" (log1p + standardized features, C picked on validation AUROC),
            "rf" (raw features, max depth picked on validation AUROC), "lgbm" (raw features,
            rounds early-stopped on validation AUROC) or "lgbm_untuned" (LightGBM defaults,
            100 rounds, no validation).
        activity_event_types: event types that count as activity (None = all).
        horizon_days: H, used by the test-cutoff guard.
        seed: seed of the forest / booster; a fit is deterministic given the seed.
        num_threads: threads of the forest / booster (fixed, so results do not depend on the machine).
        max_event_types, max_len: as in the Preprocessor, to pick the same per-type count features.
        feature_set: "summary" (the networks' summary features) or "aggregates" (the activity
            summary and the aggregates of data/aggregates.py; "lgbm" only, its number of
            leaves picked on validation AUROC as well as its rounds).
    """

    def __init__(
        self,
        kind: str = "lgbm",
        activity_event_types: Sequence[str] | None = None,
        horizon_days: int = 90,
        seed: int = 0,
        num_threads: int = 1,
        max_event_types: int = 50,
        max_len: int = 256,
        feature_set: str = "summary",
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")
        if feature_set == "aggregates" and kind != "lgbm":
            raise ValueError(
                f"feature_set='aggregates' is LightGBM's reference: kind='lgbm', not {kind!r}"
            )
        self.feature_set = feature_set
        self.kind = kind
        self.activity_event_types = list(activity_event_types) if activity_event_types else None
        self.horizon_days = int(horizon_days)
        self.seed = int(seed)
        self.num_threads = int(num_threads)
        self.max_event_types = int(max_event_types)
        self.max_len = int(max_len)
        self.count_types_: list[str] | None = None
        self.feature_names_: list[str] = []
        self.val_scores_: dict = {}  # hyper-parameter value -> validation AUROC (per round for lgbm)
        self.best_params_: dict = {}
        self.fit_seconds_ = float("nan")

    # -- features ---------------------------------------------------------------------------
    def features(
        self, events: pd.DataFrame, snapshots: pd.DataFrame, fit_types: bool = False
    ) -> pd.DataFrame:
        """Raw summary features per snapshot row; `fit_types` picks the count types first."""
        index = EventIndex(events, activity_mask(events, self.activity_event_types))
        user_ids = snapshots["user_id"].to_numpy(dtype=object)
        codes = index.user_codes(user_ids)
        if len(codes) and (
            (codes >= len(index.users)).any()
            or (index.users[np.minimum(codes, len(index.users) - 1)] != user_ids).any()
        ):
            raise DataError("snapshots name users that are not in the event log")
        cutoffs = snapshots["cutoff"].to_numpy(np.int64)
        if (
            fit_types
        ):  # the Preprocessor's vocabulary: most frequent types among the last events, ties by name
            types, counts = np.unique(
                last_events(index, codes, cutoffs, self.max_len).event_type.astype(str),
                return_counts=True,
            )
            self.count_types_ = [
                str(t) for t in types[np.lexsort((types, -counts))][: self.max_event_types]
            ]
        if self.feature_set == "summary":
            return summary_features(index, codes, cutoffs, self.count_types_)
        types = self.count_types_[:AGGREGATE_MAX_TYPES]
        return pd.concat(
            [
                summary_features(index, codes, cutoffs, count_types=[]),
                aggregate_features(index, codes, cutoffs, types),
            ],
            axis=1,
        )

    def _matrix(self, raw: pd.DataFrame) -> np.ndarray:
        x = raw.to_numpy(np.float64)
        if (
            self.kind == "logreg"
        ):  # the networks' scaling: log1p, then standardized on training rows
            return self.scaler_.transform(np.log1p(np.clip(x, 0, None)))
        return x

    # -- fit / predict ------------------------------------------------------------------------
    def fit(
        self,
        events: pd.DataFrame,
        train_snapshots: pd.DataFrame,
        val_snapshots: pd.DataFrame | None,
        test_cutoff,
    ) -> "SummaryBaseline":
        """Fit on labeled training snapshots, tuning on the validation snapshots only.

        Args:
            events: cleaned events (data/events.py); features read only events on or before each cutoff.
            train_snapshots, val_snapshots: `make_snapshots` frames with `y`; validation may be
                None only for "lgbm_untuned".
            test_cutoff: the test cutoff (date or day); every label window must end by it.
        """
        start = time.perf_counter()
        check_label_windows(train_snapshots, test_cutoff, self.horizon_days, "training")
        if val_snapshots is None:
            if self.kind != "lgbm_untuned":
                raise ValueError(
                    f"kind={self.kind!r} is tuned on validation snapshots: pass val_snapshots"
                )
        else:
            check_label_windows(val_snapshots, test_cutoff, self.horizon_days, "validation")
        raw = self.features(events, train_snapshots, fit_types=True)
        self.feature_names_ = list(raw.columns)
        y = train_snapshots["y"].to_numpy(np.int64)
        if self.kind == "logreg":
            self.scaler_ = StandardScaler().fit(
                np.log1p(np.clip(raw.to_numpy(np.float64), 0, None))
            )
        x = self._matrix(raw)
        if val_snapshots is not None and self.kind != "lgbm_untuned":
            x_val = self._matrix(self.features(events, val_snapshots))
            y_val = val_snapshots["y"].to_numpy(np.int64)
            if len(np.unique(y_val)) < 2:
                raise DataError(
                    "the validation snapshots hold a single class: AUROC cannot tune anything"
                )
        if self.kind == "logreg":
            self._fit_grid(
                "C",
                LOGREG_C_GRID,
                lambda c: LogisticRegression(C=c, max_iter=5000),
                x,
                y,
                x_val,
                y_val,
            )
        elif self.kind == "rf":
            self._fit_grid("max_depth", RF_DEPTH_GRID, self._forest, x, y, x_val, y_val)
        elif self.kind == "lgbm":
            self._fit_lgbm(x, y, x_val, y_val)
        else:
            params = self._lgbm_params({})
            self.model_ = lgb.train(
                params, lgb.Dataset(x, y, free_raw_data=True), num_boost_round=LGBM_UNTUNED_ROUNDS
            )
            self.best_params_ = {"num_boost_round": LGBM_UNTUNED_ROUNDS}
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _forest(self, depth: int) -> RandomForestClassifier:
        return RandomForestClassifier(
            n_estimators=200,
            max_depth=depth,
            min_samples_leaf=20,
            n_jobs=self.num_threads,
            random_state=self.seed,
        )

    def _fit_grid(self, name, grid, build, x, y, x_val, y_val) -> None:
        """Fit one model per grid value and keep the one with the best validation AUROC (first on ties)."""
        best = None
        for value in grid:
            model = build(value).fit(x, y)
            score = roc_auc_score(y_val, _p_churn(model, x_val))
            self.val_scores_[value] = float(score)
            if best is None or score > best[0]:
                best = (score, value, model)
        self.best_params_ = {name: best[1]}
        self.model_ = best[2]

    def _lgbm_params(self, extra: dict) -> dict:
        return {
            "objective": "binary",
            "verbosity": -1,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "deterministic": True,
            "force_row_wise": True,  # with deterministic=True, LightGBM's advice for reproducible histograms
            **extra,
        }

    def _fit_lgbm(self, x, y, x_val, y_val) -> None:
        """Boost on training rows; the validation AUROC after each round picks the number of
        rounds (and, on the aggregates, of the leaves: val_scores_ is then keyed by both)."""
        grid = AGGREGATE_LEAVES_GRID if self.feature_set == "aggregates" else (None,)
        train = lgb.Dataset(x, y, free_raw_data=False)
        val = lgb.Dataset(x_val, y_val, reference=train, free_raw_data=False)
        best = None
        for leaves in grid:
            extra = {} if leaves is None else {"num_leaves": leaves}
            params = self._lgbm_params({**LGBM_TUNED, **extra, "metric": "auc"})
            curve: dict = {}
            model = lgb.train(
                params,
                train,
                num_boost_round=LGBM_MAX_ROUNDS,
                valid_sets=[val],
                valid_names=["val"],
                callbacks=[
                    lgb.early_stopping(LGBM_PATIENCE, verbose=False),
                    lgb.record_evaluation(curve),
                ],
            )
            for i, score in enumerate(curve["val"]["auc"]):
                self.val_scores_[i + 1 if leaves is None else (leaves, i + 1)] = float(score)
            rounds = int(model.best_iteration)
            score = curve["val"]["auc"][rounds - 1]
            if best is None or score > best[0]:
                best = (score, leaves, rounds, model)
        _, leaves, rounds, self.model_ = best
        self.best_params_ = {"num_boost_round": rounds}
        if leaves is not None:
            self.best_params_ = {"num_leaves": leaves, **self.best_params_}

    def predict_proba(self, events: pd.DataFrame, snapshots: pd.DataFrame) -> np.ndarray:
        """p_churn for each snapshot row, in row order."""
        if self.count_types_ is None:
            raise RuntimeError("SummaryBaseline.predict_proba called before fit")
        x = self._matrix(self.features(events, snapshots))
        return _p_churn(self.model_, x, self.best_params_.get("num_boost_round"))


def _p_churn(model, x: np.ndarray, rounds: int | None = None) -> np.ndarray:
    """Probability of class 1 from a fitted scikit-learn classifier or LightGBM booster."""
    if isinstance(model, lgb.Booster):
        return np.asarray(model.predict(x, num_iteration=rounds), dtype=np.float64)
    return model.predict_proba(x)[:, list(model.classes_).index(1)]
