"""Retention: RFM segments and K-means clusters, risk tiers and the cost threshold."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_score

from seqchurn.errors import DataError
from seqchurn.retention.segments import (
    SEGMENT_INPUTS,
    SEGMENT_NAMES,
    SegmentModel,
    SegmentSettings,
    fit_segments,
    kmeans_clusters,
    rfm_segment,
    segment_table,
    silhouette_scores,
)
from seqchurn.retention.tiers import assign_tiers, cost_threshold, fit_tiers

# ---------------------------------------------------------------- segments


def quintile_score(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Population quintile by "min" rank: 1 + floor(5 * #strictly worse / N), the reference."""
    key = np.asarray(values, float) if higher_is_better else -np.asarray(values, float)
    below = pd.Series(key).rank(method="min").to_numpy() - 1.0
    return (1 + np.floor(5.0 * below / len(key))).astype(np.int64).clip(1, 5)


def _scores(model: SegmentModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The named segment a model gives and the one the population quintiles give, per row."""
    rec, freq = frame["recency_days"].to_numpy(), frame["frequency_days"].to_numpy()
    money = frame["monetary_mean"].to_numpy() * freq
    r, f, m = quintile_score(rec, False), quintile_score(freq), quintile_score(money)
    return pd.DataFrame(
        {"fitted": model.assign(frame)["segment"], "population": rfm_segment(r, f, m)}
    )


def test_fitted_edges_reproduce_population_quintiles_with_ties():
    rng = np.random.default_rng(0)
    # 60% one-order customers (ties at F = 1), lognormal spend, uniform recency
    freq = np.where(rng.random(997) < 0.6, 1.0, rng.integers(2, 30, 997))
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(997)],
            "recency_days": rng.integers(0, 400, 997).astype(float),
            "frequency_days": freq,
            "monetary_mean": np.round(rng.lognormal(3, 1, 997), 0),
        }
    )
    both = _scores(fit_segments(frame, SegmentSettings(k_max=3)), frame)
    assert (both["fitted"] == both["population"]).all()
    np.testing.assert_array_equal(
        quintile_score(np.array([1, 1, 1, 1, 1, 1, 2, 2, 3, 7.0])), [1] * 6 + [4, 4, 5, 5]
    )


def test_every_rfm_cell_has_a_classic_segment():
    r, fm = np.meshgrid(np.arange(1, 6), np.arange(1, 6), indexing="ij")
    names = rfm_segment(r.ravel(), fm.ravel(), fm.ravel())
    assert set(names) == set(SEGMENT_NAMES)
    lookup = dict(zip(zip(r.ravel(), fm.ravel()), names))
    assert (
        lookup[5, 5] == "Champions" and lookup[1, 1] == "Lost" and lookup[1, 5] == "Can't lose them"
    )
    assert (
        lookup[5, 1] == "New" and lookup[3, 3] == "Need attention" and lookup[4, 1] == "Promising"
    )
    assert (
        rfm_segment(np.array([5]), np.array([4]), np.array([5]))[0] == "Champions"
    )  # FM = round half up (4.5 -> 5)


def test_silhouette_of_all_k_at_once_equals_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    labelings = [rng.integers(0, k, size=300) for k in (2, 3, 5)]
    labelings.append(np.r_[0, np.ones(299, dtype=np.int64)])  # a singleton cluster scores 0
    ours = silhouette_scores(x, labelings, chunk=64)
    np.testing.assert_allclose(
        ours, [silhouette_score(x, lab) for lab in labelings], rtol=1e-9, atol=1e-12
    )


def _population(n=600, seed=0) -> pd.DataFrame:
    """Three clearly separated kinds of customer (recent heavy, lapsed one-off, middling)."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, size=n)
    rec = np.choose(
        kind, [rng.uniform(1, 20, n), rng.uniform(300, 400, n), rng.uniform(80, 120, n)]
    )
    freq = np.choose(
        kind, [rng.integers(15, 30, n), np.ones(n, dtype=np.int64), rng.integers(3, 6, n)]
    ).astype(float)
    money = np.choose(
        kind, [rng.uniform(80, 120, n), rng.uniform(5, 15, n), rng.uniform(30, 50, n)]
    )
    return pd.DataFrame(
        {
            "user_id": [f"u{i:04d}" for i in range(n)],
            "recency_days": rec,
            "frequency_days": freq,
            "monetary_mean": money,
            "kind": kind,
        }
    )


def test_segments_and_clusters_find_the_kinds_and_ignore_row_order():
    pop = _population()
    model = fit_segments(pop[list(SEGMENT_INPUTS)], SegmentSettings(k_max=6))
    seg = model.assign(pop)
    assert len(seg) == len(pop) and list(seg.columns) == ["segment", "cluster"]
    # K-means picks k = 3 and its clusters are the three kinds; cluster 0 is the most recent
    assert model.info["k"] == 3 and seg["cluster"].nunique() == 3
    assert pd.crosstab(seg["cluster"], pop["kind"]).gt(0).sum(axis=1).eq(1).all()
    assert (seg.loc[pop["kind"] == 0, "cluster"] == 0).all()
    assert set(seg.loc[pop["kind"] == 0, "segment"]) <= {"Champions", "Loyal"}
    assert set(seg.loc[pop["kind"] == 1, "segment"]) <= {"Lost", "Hibernating"}

    shuffled = pop.sample(frac=1.0, random_state=3)
    refit = fit_segments(shuffled[list(SEGMENT_INPUTS)], SegmentSettings(k_max=6))
    assert refit == model  # the same users in another order: the same fit


def test_a_user_gets_the_same_segment_alone_in_a_chunk_or_in_the_population():
    model = fit_segments(_population(seed=1), SegmentSettings(k_max=6))
    restored = SegmentModel.from_state_dict(json.loads(json.dumps(model.state_dict())))
    pop = _population(n=3000, seed=2)  # new users, scored by the fitted model
    whole = restored.assign(pop)
    chunks = pd.concat([restored.assign(pop.iloc[i : i + 1000]) for i in range(0, 3000, 1000)])
    alone = pd.concat([restored.assign(pop.iloc[[i]]) for i in range(0, 3000, 97)])
    pd.testing.assert_frame_equal(chunks.reset_index(drop=True), whole)
    pd.testing.assert_frame_equal(
        alone.reset_index(drop=True), whole.iloc[::97].reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(model.assign(pop), whole)


def test_k_is_chosen_on_a_capped_sample():
    x = np.random.default_rng(1).normal(size=(500, 3))
    labels, centroids, info = kmeans_clusters(x, SegmentSettings(k_max=4, silhouette_sample=100))
    assert info["sample"] == 100 and set(info["silhouette"]) == {2, 3, 4}
    assert info["k"] == max(info["silhouette"], key=info["silhouette"].get) == labels.max() + 1
    assert centroids.shape == (info["k"], 3) and (np.diff(centroids[:, 0]) >= 0).all()
    same, _, _ = kmeans_clusters(x, SegmentSettings(k_max=4, silhouette_sample=100))
    np.testing.assert_array_equal(labels, same)
    few, _, info = kmeans_clusters(np.zeros((5, 3)))  # one distinct point: one cluster
    assert info["k"] == 1 and (few == 0).all()


def test_segment_table_reports_churn_rate_and_value():
    frame = pd.DataFrame(
        {"segment": ["a", "a", "b"], "p_churn": [0.2, 0.4, 0.9], "value_at_risk": [10.0, 20.0, 5.0]}
    )
    table = segment_table(frame).set_index("segment")
    assert table.loc["a", "users"] == 2 and table.loc["a", "share"] == pytest.approx(2 / 3)
    assert (
        table.loc["a", "churn_rate"] == pytest.approx(0.3) and table.loc["a", "value_total"] == 30.0
    )
    with pytest.raises(DataError, match="missing|need"):
        segment_table(frame.drop(columns="p_churn"))


# ---------------------------------------------------------------- tiers


def test_quantile_tiers_with_precision_and_recall_by_hand():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    state = fit_tiers(
        p, y, method="quantile", names=["high", "medium", "low"], top_shares=[0.2, 0.5]
    )
    assert state["cutpoints"] == [0.9, 0.6]
    high, medium, low = state["tiers"]
    assert (high["users"], medium["users"], low["users"]) == (2, 3, 5)
    assert high["precision"] == 1.0 and high["recall"] == pytest.approx(2 / 5)
    assert medium["precision"] == pytest.approx(1 / 3) and medium["cum_recall"] == pytest.approx(
        3 / 5
    )
    assert low["share"] == 0.5 and low["cum_recall"] == 1.0
    np.testing.assert_array_equal(
        assign_tiers(p, state), ["high"] * 2 + ["medium"] * 3 + ["low"] * 5
    )
    # plain values only: the checkpoint stores it, JSON and pickle both work
    assert json.loads(json.dumps(state)) == state and pickle.loads(pickle.dumps(state)) == state


def test_cutpoint_tiers_and_the_cost_threshold():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    y = (rng.uniform(size=2000) < p).astype(int)  # calibrated
    state = fit_tiers(
        p,
        y,
        method="cutpoints",
        names=["red", "amber", "green"],
        cutpoints=[0.8, 0.5],
        cost_missed=40,
        cost_action=10,
    )
    tiers = assign_tiers(p, state)
    assert ((tiers == "red") == (p >= 0.8)).all() and ((tiers == "green") == (p < 0.5)).all()
    assert state["bayes_threshold"] == 0.25
    assert (
        abs(state["cost_threshold"] - 0.25) < 0.05
    )  # the empirical one lands near Bayes for calibrated p

    # the chosen threshold has the least cost of every possible one (brute force)
    def cost(t):
        return 40 * ((p < t) & (y == 1)).sum() + 10 * (p >= t).sum()

    best = min(cost(t) for t in np.r_[p, 2.0])
    assert cost(state["cost_threshold"]) == best == cost(cost_threshold(p, y, 40, 10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "deciles"}, "unknown retention.tiers.method"),
        ({"top_shares": [0.3, 0.1]}, "cumulative"),
        ({"method": "cutpoints", "cutpoints": [0.5]}, "needs 2"),
        ({"method": "cutpoints", "cutpoints": [0.5, 0.8]}, "must not increase"),
    ],
)
def test_bad_tier_settings_are_data_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        fit_tiers(np.array([0.1, 0.9]), np.array([0, 1]), **kwargs)


def test_bad_tier_inputs_are_data_errors():
    with pytest.raises(DataError, match="probabilities"):
        fit_tiers(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(DataError, match="rows"):
        fit_tiers(np.array([0.1, 0.2]), np.array([0]))
    with pytest.raises(DataError, match="probabilities"):
        assign_tiers(np.array([1.5]), {"names": ["a", "b"], "cutpoints": [0.5]})
