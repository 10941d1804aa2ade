"""Retention: RFM segments and clusters, tiers and thresholds, the action plan and its script."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_score

from conftest import ROOT, compose_cfg
from seqchurn.errors import DataError
from seqchurn.retention.plan import (
    apply_rules,
    control_group,
    curve_path,
    expected_profit,
    intervene_by,
    make_plan,
    recommend,
    select_users,
    write_table,
)
from seqchurn.retention.segments import (
    SEGMENT_INPUTS,
    SEGMENT_NAMES,
    assign_segments,
    kmeans_clusters,
    quintile_score,
    rfm_segment,
    segment_table,
    silhouette_scores,
)
from seqchurn.retention.tiers import assign_tiers, cost_threshold, fit_tiers

# ---------------------------------------------------------------- segments


def test_quintile_scores_by_rank_with_ties_sharing_the_lower_score():
    np.testing.assert_array_equal(quintile_score(np.arange(10.0)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    np.testing.assert_array_equal(quintile_score(np.arange(10.0), higher_is_better=False), [5, 5, 4, 4, 3, 3, 2, 2, 1, 1])
    # 6 one-order customers of 10 all get F = 1, the rest are scored by how many are below them
    np.testing.assert_array_equal(quintile_score(np.array([1, 1, 1, 1, 1, 1, 2, 2, 3, 7.0])), [1] * 6 + [4, 4, 5, 5])


def test_every_rfm_cell_has_a_classic_segment():
    r, fm = np.meshgrid(np.arange(1, 6), np.arange(1, 6), indexing="ij")
    names = rfm_segment(r.ravel(), fm.ravel(), fm.ravel())
    assert set(names) == set(SEGMENT_NAMES)
    lookup = dict(zip(zip(r.ravel(), fm.ravel()), names))
    assert lookup[5, 5] == "Champions" and lookup[1, 1] == "Lost" and lookup[1, 5] == "Can't lose them"
    assert lookup[5, 1] == "New" and lookup[3, 3] == "Need attention" and lookup[4, 1] == "Promising"
    assert rfm_segment(np.array([5]), np.array([4]), np.array([5]))[0] == "Champions"  # FM = round half up (4.5 -> 5)


def test_silhouette_of_all_k_at_once_equals_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    labelings = [rng.integers(0, k, size=300) for k in (2, 3, 5)]
    labelings.append(np.r_[0, np.ones(299, dtype=np.int64)])  # a singleton cluster scores 0
    ours = silhouette_scores(x, labelings, chunk=64)
    np.testing.assert_allclose(ours, [silhouette_score(x, lab) for lab in labelings], rtol=1e-9, atol=1e-12)


def _population(n=600, seed=0) -> pd.DataFrame:
    """Three clearly separated kinds of customer (recent heavy, lapsed one-off, middling)."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, size=n)
    rec = np.choose(kind, [rng.uniform(1, 20, n), rng.uniform(300, 400, n), rng.uniform(80, 120, n)])
    freq = np.choose(kind, [rng.integers(15, 30, n), np.ones(n, dtype=np.int64), rng.integers(3, 6, n)]).astype(float)
    money = np.choose(kind, [rng.uniform(80, 120, n), rng.uniform(5, 15, n), rng.uniform(30, 50, n)])
    return pd.DataFrame(
        {"user_id": [f"u{i:04d}" for i in range(n)], "recency_days": rec, "frequency_days": freq, "monetary_mean": money, "kind": kind}
    )


def test_segments_and_clusters_find_the_kinds_and_ignore_row_order():
    pop = _population()
    seg = assign_segments(pop[list(SEGMENT_INPUTS)], k_max=6)
    assert len(seg) == len(pop) and list(seg.columns) == ["segment", "cluster"]
    # K-means picks k = 3 and its clusters are the three kinds; cluster 0 is the most recent
    assert seg["cluster"].nunique() == 3
    assert pd.crosstab(seg["cluster"], pop["kind"]).gt(0).sum(axis=1).eq(1).all()
    assert (seg.loc[pop["kind"] == 0, "cluster"] == 0).all()
    assert set(seg.loc[pop["kind"] == 0, "segment"]) <= {"Champions", "Loyal"}
    assert set(seg.loc[pop["kind"] == 1, "segment"]) <= {"Lost", "Hibernating"}

    shuffled = pop.sample(frac=1.0, random_state=3)
    again = assign_segments(shuffled[list(SEGMENT_INPUTS)], k_max=6).set_index(shuffled["user_id"].to_numpy())
    pd.testing.assert_frame_equal(again.loc[pop["user_id"]].reset_index(drop=True), seg)


def test_k_is_chosen_on_a_capped_sample():
    x = np.random.default_rng(1).normal(size=(500, 3))
    labels, info = kmeans_clusters(x, k_min=2, k_max=4, silhouette_sample=100, seed=0)
    assert info["sample"] == 100 and set(info["silhouette"]) == {2, 3, 4}
    assert info["k"] == max(info["silhouette"], key=info["silhouette"].get) == labels.max() + 1
    same, _ = kmeans_clusters(x, k_min=2, k_max=4, silhouette_sample=100, seed=0)
    np.testing.assert_array_equal(labels, same)
    few, info = kmeans_clusters(np.zeros((5, 3)))  # one distinct point: one cluster
    assert info["k"] == 1 and (few == 0).all()


def test_segment_table_reports_churn_rate_and_value():
    frame = pd.DataFrame({"segment": ["a", "a", "b"], "p_churn": [0.2, 0.4, 0.9], "value_at_risk": [10.0, 20.0, 5.0]})
    table = segment_table(frame).set_index("segment")
    assert table.loc["a", "users"] == 2 and table.loc["a", "share"] == pytest.approx(2 / 3)
    assert table.loc["a", "churn_rate"] == pytest.approx(0.3) and table.loc["a", "value_total"] == 30.0
    with pytest.raises(DataError, match="missing|need"):
        segment_table(frame.drop(columns="p_churn"))


# ---------------------------------------------------------------- tiers


def test_quantile_tiers_with_precision_and_recall_by_hand():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    state = fit_tiers(p, y, method="quantile", names=["high", "medium", "low"], top_shares=[0.2, 0.5])
    assert state["cutpoints"] == [0.9, 0.6]
    high, medium, low = state["tiers"]
    assert (high["users"], medium["users"], low["users"]) == (2, 3, 5)
    assert high["precision"] == 1.0 and high["recall"] == pytest.approx(2 / 5)
    assert medium["precision"] == pytest.approx(1 / 3) and medium["cum_recall"] == pytest.approx(3 / 5)
    assert low["share"] == 0.5 and low["cum_recall"] == 1.0
    np.testing.assert_array_equal(assign_tiers(p, state), ["high"] * 2 + ["medium"] * 3 + ["low"] * 5)
    # plain values only: the checkpoint stores it, JSON and pickle both work
    assert json.loads(json.dumps(state)) == state and pickle.loads(pickle.dumps(state)) == state


def test_cutpoint_tiers_and_the_cost_threshold():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    y = (rng.uniform(size=2000) < p).astype(int)  # calibrated
    state = fit_tiers(p, y, method="cutpoints", names=["red", "amber", "green"], cutpoints=[0.8, 0.5], cost_missed=40, cost_action=10)
    tiers = assign_tiers(p, state)
    assert ((tiers == "red") == (p >= 0.8)).all() and ((tiers == "green") == (p < 0.5)).all()
    assert state["bayes_threshold"] == 0.25
    assert abs(state["cost_threshold"] - 0.25) < 0.05  # the empirical one lands near Bayes for calibrated p

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


# ---------------------------------------------------------------- plan

ACTIONS = {
    "coupon": {"cost": 10.0, "acceptance": 0.3, "coupon_value": 15.0},
    "recommendation": {"cost": 1.0, "acceptance": 0.05, "n_items": 2},
    "care_contact": {"cost": 30.0, "acceptance": 0.5},
}
RULES = [
    {"tier": "high", "segment": ["Champions", "Loyal"], "min_value": 500, "action": "care_contact"},
    {"tier": "high", "action": "coupon"},
    {"tier": "medium", "action": "recommendation"},
    {"action": "none"},
]


def _predictions(n=400, seed=0) -> pd.DataFrame:
    """A synthetic predict output with the DESIGN section 6 columns."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, n)
    value = rng.lognormal(4.5, 0.8, n)
    tau = np.where(p >= 0.5, 0.0, rng.uniform(1, 200, n))
    tau[rng.uniform(size=n) < 0.1] = np.nan
    cutoff = pd.Timestamp("2021-03-31")
    return pd.DataFrame(
        {
            "user_id": [f"c{i:05d}" for i in range(n)],
            "cutoff": cutoff,
            "p_churn": p,
            "s_30": 1 - p / 2, "s_90": 1 - p, "s_180": (1 - p) / 2, "s_365": np.nan,
            "tau_median_days": tau,
            "tau_mean_days": np.nan_to_num(tau, nan=150.0),
            "expected_churn_date": cutoff + pd.to_timedelta(np.floor(tau), unit="D"),
            "value_at_risk": p * value,
            "risk_tier": np.where(p >= 0.7, "high", np.where(p >= 0.4, "medium", "low")),
            "segment": rng.choice(["Champions", "Loyal", "At risk", "Lost"], n),
            "cluster": rng.integers(0, 4, n),
            "top_reasons": "no order for 143 days, usually orders every 30",
        }
    )


def test_rules_first_match_and_the_profit_formula():
    tier = np.array(["high", "high", "high", "medium", "low"])
    segment = np.array(["Loyal", "Loyal", "Lost", "Loyal", "Loyal"])
    value = np.array([600.0, 100.0, 900.0, 50.0, 900.0])
    np.testing.assert_array_equal(
        apply_rules(tier, segment, value, RULES), ["care_contact", "coupon", "coupon", "recommendation", "none"]
    )
    # p x acceptance x (value - cost) - cost x (1 - p) x waste
    assert expected_profit(np.array([0.8]), np.array([0.3]), np.array([100.0]), np.array([10.0]), 0.5)[0] == pytest.approx(
        0.8 * 0.3 * 90 - 10 * 0.2 * 0.5
    )


def test_selection_stops_at_the_budget_or_at_zero_profit():
    profit = np.array([5.0, 4.0, 3.0, -1.0, -2.0])
    cost = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    assert select_users(profit, cost, None) == 3
    assert select_users(profit, cost, 4.0) == 2 and select_users(profit, cost, 5.9) == 2
    assert select_users(profit, cost, 100.0) == 3


def test_control_group_is_a_seeded_share_of_each_tier():
    uid = np.array([f"u{i:03d}" for i in range(300)])
    tier = np.repeat(["high", "medium", "low"], [50, 100, 150])
    ctrl = control_group(uid, tier, 0.1, seed=7)
    assert [ctrl[tier == t].sum() for t in ("high", "medium", "low")] == [5, 10, 15]
    np.testing.assert_array_equal(ctrl, control_group(uid, tier, 0.1, seed=7))
    assert (ctrl != control_group(uid, tier, 0.1, seed=8)).any()
    perm = np.random.default_rng(0).permutation(300)  # the same users in another order: the same group
    np.testing.assert_array_equal(control_group(uid[perm], tier[perm], 0.1, seed=7), ctrl[perm])


def test_recommendations_are_the_users_top_categories_else_the_most_popular():
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c", "c", "a"],
            "day": [1, 2, 3, 1, 1, 2, 99],
            "event_type": ["jazz", "jazz", "rock", "pop", "jazz", "pop", "metal"],
        }
    )
    out = recommend(events, np.array(["a", "b", "zz"]), cutoff_day=10, n_items=2)
    # a: jazz twice, rock once (metal is after the cutoff); zz has no history: jazz, pop are the most popular
    assert list(out) == ["jazz; rock", "pop", "jazz; pop"]
    assert list(recommend(events.assign(event_type="purchase"), np.array(["a"]), 10)) == [""]


def test_intervene_by_is_the_expected_churn_date():
    cutoff = pd.Series(pd.to_datetime(["2021-03-31"] * 3))
    got = intervene_by(cutoff, np.array([0.0, 40.7, np.nan]), default_days=90)
    assert [str(d)[:10] for d in got] == ["2021-03-31", "2021-05-10", "2021-06-29"]
    # a model with p_churn only: the likely silent are due now, the others by the default
    got = intervene_by(cutoff, None, default_days=90, p_churn=np.array([0.7, 0.2, 0.5]))
    assert [str(d)[:10] for d in got] == ["2021-03-31", "2021-06-29", "2021-03-31"]


def test_plan_ranks_cuts_and_holds_out_a_control_group():
    pred = _predictions()
    result = make_plan(pred, ACTIONS, RULES, budget=None, control_share=0.1, seed=0)
    plan = result.plan
    assert plan["user_id"].is_unique and set(plan["risk_tier"]) <= {"high", "medium"}
    assert (plan["expected_profit"] > 0).all() and plan["expected_profit"].is_monotonic_decreasing
    # everyone left out with an action had a non-positive expected profit
    left = result.curve.loc[~result.curve["selected"], "expected_profit"]
    assert (left <= 0).all()
    assert set(plan["group"]) == {"treated", "control"}
    assert (plan.loc[plan["group"] == "control", "action"] == "none").all()
    assert (plan.loc[plan["group"] == "treated", "action"] == plan.loc[plan["group"] == "treated", "planned_action"]).all()
    for tier, part in plan.groupby("risk_tier"):
        assert (part["group"] == "control").sum() == np.floor(0.1 * len(part) + 0.5)
    coupons = plan["planned_action"] == "coupon"
    assert (plan.loc[coupons, "coupon_value"] == 15.0).all() and plan.loc[~coupons, "coupon_value"].isna().all()
    value = pred.set_index("user_id").loc[plan["user_id"], "value_at_risk"].to_numpy() / plan["p_churn"].to_numpy()
    np.testing.assert_allclose(plan["value_12m"], value)
    np.testing.assert_allclose(plan["expected_saved_value"], plan["p_churn"] * plan["expected_cost"].map(
        {10.0: 0.3, 1.0: 0.05, 30.0: 0.5}) * value)
    silent = plan["p_churn"] >= 0.5
    assert (plan.loc[silent, "intervene_by"] == plan.loc[silent, "cutoff"]).all()

    # same seed, shuffled input: identical plan and control group; another seed: another group
    again = make_plan(pred.sample(frac=1.0, random_state=1), ACTIONS, RULES, control_share=0.1, seed=0).plan
    pd.testing.assert_frame_equal(plan, again)
    other = make_plan(pred, ACTIONS, RULES, control_share=0.1, seed=1).plan
    assert (other["user_id"] == plan["user_id"]).all() and (other["group"] != plan["group"]).any()


def test_a_budget_cuts_the_ranked_list():
    pred = _predictions()
    free = make_plan(pred, ACTIONS, RULES, budget=None).plan
    tight = make_plan(pred, ACTIONS, RULES, budget=100.0)
    assert tight.plan["expected_cost"].sum() <= 100.0 < free["expected_cost"].sum()
    assert list(tight.plan["user_id"]) == list(free["user_id"][: len(tight.plan)])
    assert tight.summary["stopped_by"] == "budget"


def test_plan_bad_inputs_are_data_errors():
    pred = _predictions(50)
    with pytest.raises(DataError, match="unknown action 'sms'"):
        make_plan(pred, ACTIONS, [{"tier": "high", "action": "sms"}])
    with pytest.raises(DataError, match="unknown action 'sms'"):
        make_plan(pred, {**ACTIONS, "sms": {"cost": 1.0}}, RULES)
    with pytest.raises(DataError, match="below the cost of one action"):
        make_plan(pred, ACTIONS, RULES, budget=0.5)
    with pytest.raises(DataError, match="unknown key"):
        make_plan(pred, ACTIONS, [{"tier": "high", "action": "coupon", "colour": "red"}])
    with pytest.raises(DataError, match="value_at_risk"):
        make_plan(pred.drop(columns="value_at_risk"), ACTIONS, RULES)
    with pytest.raises(DataError, match="duplicated"):
        make_plan(pd.concat([pred, pred.iloc[:1]]), ACTIONS, RULES)
    with pytest.raises(DataError, match="probability"):
        make_plan(pred.assign(p_churn=1.5), ACTIONS, RULES)


def test_plan_without_tiers_in_the_file_cuts_by_the_settings():
    pred = _predictions().drop(columns=["risk_tier", "segment", "cluster", "tau_median_days"])
    tiers = {"method": "quantile", "names": ["high", "medium", "low"], "top_shares": [0.2, 0.5], "cost_missed": 1}
    plan = make_plan(pred, ACTIONS, RULES, tiers=tiers).plan
    assert set(plan["risk_tier"]) <= {"high", "medium"} and (plan["segment"] == "unknown").all()


def test_write_table_is_atomic_parquet_or_csv(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]})
    write_table(frame, tmp_path / "x.parquet")
    write_table(frame, tmp_path / "x.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "x.csv"), frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.parquet"]
    assert curve_path(tmp_path / "plan.parquet").name == "plan_profit_curve.png"


# ---------------------------------------------------------------- scripts/plan.py


def test_config_composes_and_matches_the_apis(tmp_path):
    cfg = compose_cfg(["predictions=p.parquet"], tmp_path, config_name="plan")
    from omegaconf import OmegaConf

    r = OmegaConf.to_container(cfg.retention)
    state = fit_tiers(np.array([0.1, 0.5, 0.9, 0.95]), np.array([0, 0, 1, 1]), **r["tiers"])
    assert state["names"] == ["high", "medium", "low"]
    assign_segments(_population(60)[list(SEGMENT_INPUTS)], **r["segments"])
    make_plan(_predictions(), r["actions"], r["rules"], budget=r["budget"], waste=r["waste"], control_share=r["control_share"])


def _cli(tmp_path, *args):
    cmd = [sys.executable, str(ROOT / "scripts" / "plan.py"), f"hydra.run.dir={tmp_path / 'run'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    pred = _predictions()
    pred.to_parquet(d / "pred.parquet", index=False)
    pred.to_csv(d / "pred.csv", index=False)
    # an event log with a category column, for recommendations
    rng = np.random.default_rng(0)
    n = 3000
    log = pd.DataFrame(
        {
            "customer": rng.choice(pred["user_id"], n),
            "when": pd.Timestamp("2020-06-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
            "event_type": rng.choice(["purchase", "view"], n, p=[0.6, 0.4]),
            "amount": rng.uniform(5, 50, n),
            "genre": rng.choice(["jazz", "rock", "pop", "classical"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    log.to_csv(d / "log.csv", index=False)
    return d


def test_cli_writes_plan_curve_and_segment_table_reproducibly(files, tmp_path):
    common = [
        f"predictions={files / 'pred.csv'}", "events.source=events", f"events.path={files / 'log.csv'}",
        "events.columns.user_id=customer", "events.columns.timestamp=when", "events.category_column=genre",
        "events.activity_event_types=[purchase]", "retention.budget=2290",
    ]
    a = _cli(tmp_path, *common, f"output={tmp_path / 'a.parquet'}")
    assert a.returncode == 0, a.stderr
    assert "treated" in a.stdout
    b = _cli(tmp_path, *common, f"output={tmp_path / 'b.csv'}")
    assert b.returncode == 0, b.stderr
    plan = pd.read_parquet(tmp_path / "a.parquet")
    again = pd.read_csv(tmp_path / "b.csv", dtype={"user_id": str})
    assert list(plan["user_id"]) == list(again["user_id"]) and list(plan["group"]) == list(again["group"])
    assert plan["expected_cost"].sum() <= 2290
    recs = plan.loc[plan["planned_action"] == "recommendation", "recommended"]
    assert len(recs) and recs.str.len().gt(0).all()
    assert set("; ".join(recs).split("; ")) <= {"jazz", "rock", "pop", "classical"}
    assert (tmp_path / "a_profit_curve.png").stat().st_size > 1000
    seg = pd.read_csv(tmp_path / "a_segments.csv")
    assert set(seg["by"]) == {"segment", "cluster"} and {"churn_rate", "value_mean"} <= set(seg.columns)


@pytest.mark.parametrize(
    "args, match",
    [
        (["events=null", "retention.rules=[{tier: high, action: sms}]"], "unknown action 'sms'"),
        (["events=null", "retention.budget=0.1"], "below the cost of one action"),
        (["events=null", "predictions=missing.parquet"], "not found"),
        (["events.source=events", "events.path=nope.csv"], "not found"),
    ],
)
def test_cli_bad_input_exits_2_without_output(files, tmp_path, args, match):
    out = tmp_path / "plan.parquet"
    res = _cli(tmp_path, f"predictions={files / 'pred.parquet'}", f"output={out}", *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and match in res.stderr
    assert not out.exists() and not (tmp_path / "plan_profit_curve.png").exists()
    assert not (tmp_path / "run").exists()
