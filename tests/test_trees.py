"""SummaryBaseline on simulated BG/NBD customers: it ranks, and nothing from the test period fits or tunes it.

"lgbm_aggregates" is LightGBM on the aggregate features (data/aggregates.py), the field's reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from seqchurn.baselines.trees import SummaryBaseline
from seqchurn.data.events import clean_events
from seqchurn.data.labels import make_snapshots, to_day
from seqchurn.simulate.bgnbd import simulate_bgnbd
from seqchurn.errors import DataError

H = 90
TEST_CUTOFF = to_day("2021-03-31")  # + H = 2021-06-29, inside the 78 simulated weeks
TRAIN_CUTOFFS = [to_day("2020-10-31"), to_day("2020-12-31")]  # C + H <= the test cutoff


@pytest.fixture(scope="module")
def data():
    raw, _ = simulate_bgnbd(n_users=2500, seed=3)
    events, _ = clean_events(
        raw.assign(event_type=raw["event_label"])
    )  # labels as types, as the DataModule does
    users = np.unique(events["user_id"].to_numpy(dtype=object))
    shuffled = users[np.random.default_rng(0).permutation(len(users))]
    split = {
        "train": set(shuffled[:1500]),
        "val": set(shuffled[1500:1900]),
        "test": set(shuffled[1900:]),
    }
    train_all = make_snapshots(events, TRAIN_CUTOFFS, H, TEST_CUTOFF)
    test_all = make_snapshots(events, [TEST_CUTOFF], H, TEST_CUTOFF + H)
    return {
        "events": events,
        "train": train_all[train_all["user_id"].isin(split["train"])].reset_index(drop=True),
        "val": train_all[train_all["user_id"].isin(split["val"])].reset_index(drop=True),
        "test": test_all[test_all["user_id"].isin(split["test"])].reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def fitted(data):
    def fit(kind):
        return _baseline(kind).fit(data["events"], data["train"], data["val"], TEST_CUTOFF)

    return {kind: fit(kind) for kind in ("logreg", "rf", "lgbm", "lgbm_aggregates")}


def _baseline(kind: str) -> SummaryBaseline:
    if kind == "lgbm_aggregates":
        return SummaryBaseline(kind="lgbm", feature_set="aggregates", seed=0)
    return SummaryBaseline(kind=kind, seed=0)


@pytest.mark.parametrize("kind", ["logreg", "rf", "lgbm", "lgbm_aggregates"])
def test_summary_baselines_rank_held_out_customers(data, fitted, kind):
    p = fitted[kind].predict_proba(data["events"], data["test"])
    assert p.shape == (len(data["test"]),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(data["test"]["y"], p) > 0.75


@pytest.mark.parametrize("kind", ["logreg", "rf", "lgbm", "lgbm_aggregates"])
def test_tuning_reads_the_validation_snapshots(data, fitted, kind):
    model = fitted[kind]
    best = max(model.val_scores_, key=model.val_scores_.get)
    value = tuple(model.best_params_.values())  # (leaves, rounds) on the aggregates
    assert value == (best if isinstance(best, tuple) else (best,))  # the validation argmax ...
    p_val = model.predict_proba(data["events"], data["val"])
    # ... and its score is the validation AUROC of the kept model
    assert roc_auc_score(data["val"]["y"], p_val) == pytest.approx(
        model.val_scores_[best], abs=1e-6
    )


@pytest.mark.parametrize("kind", ["logreg", "lgbm", "lgbm_aggregates"])
def test_events_after_the_test_cutoff_change_nothing(data, fitted, kind):
    """Features read only up to each cutoff and labels end by the test cutoff: the later log is invisible."""
    events = data["events"]
    early = events[events["day"] <= TEST_CUTOFF].reset_index(drop=True)
    model = _baseline(kind).fit(early, data["train"], data["val"], test_cutoff=TEST_CUTOFF)
    assert model.best_params_ == fitted[kind].best_params_
    assert model.val_scores_ == pytest.approx(fitted[kind].val_scores_)
    np.testing.assert_allclose(
        model.predict_proba(early, data["test"]),
        fitted[kind].predict_proba(events, data["test"]),
        atol=1e-12,
    )


@pytest.mark.parametrize("kind", ["logreg", "lgbm_aggregates"])
def test_fit_refuses_label_windows_past_the_test_cutoff(data, kind):
    late = make_snapshots(data["events"], [TEST_CUTOFF - 30], H, TEST_CUTOFF + H)
    late = late[late["user_id"].isin(set(data["train"]["user_id"]))].reset_index(drop=True)
    model = _baseline(kind)
    with pytest.raises(DataError, match="training snapshot at 2021-03-01.*test-period labels"):
        model.fit(
            data["events"],
            pd.concat([data["train"], late], ignore_index=True),
            data["val"],
            TEST_CUTOFF,
        )
    with pytest.raises(DataError, match="validation snapshot"):
        model.fit(data["events"], data["train"], late, TEST_CUTOFF)
    # The test snapshot itself is the plainest case: its window ends H days after the test cutoff.
    with pytest.raises(DataError):
        model.fit(data["events"], data["test"], data["val"], TEST_CUTOFF)
    with pytest.raises(ValueError, match="val_snapshots"):
        model.fit(data["events"], data["train"], None, TEST_CUTOFF)


def test_aggregates_are_lightgbm_only():
    with pytest.raises(ValueError, match="kind='lgbm'"):
        SummaryBaseline(kind="logreg", feature_set="aggregates")
    with pytest.raises(ValueError, match="feature_set must be one of"):
        SummaryBaseline(feature_set="sequence")
