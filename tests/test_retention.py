"""Retention: the action plan and scripts/plan.py (segments, tiers: test_retention_segments)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, compose_cfg

from seqchurn.errors import DataError
from seqchurn.io import write_table
from seqchurn.retention.actions import recommend
from seqchurn.retention.plan import (
    control_group,
    expected_profit,
    intervene_by,
    make_plan,
    select_users,
)
from seqchurn.retention.report import curve_path
from seqchurn.retention.rules import apply_rules
from seqchurn.retention.tiers import fit_tiers

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
            "s_30": 1 - p / 2,
            "s_90": 1 - p,
            "s_180": (1 - p) / 2,
            "s_365": np.nan,
            "tau_median_days": tau,
            "tau_mean_days": np.nan_to_num(tau, nan=150.0),
            "expected_churn_date": cutoff + pd.to_timedelta(np.floor(tau), unit="D"),
            "value_12m": value,
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
        apply_rules(tier, segment, value, RULES),
        ["care_contact", "coupon", "coupon", "recommendation", "none"],
    )
    # p x acceptance x (value - cost) - cost x (1 - p) x waste
    assert expected_profit(
        np.array([0.8]), np.array([0.3]), np.array([100.0]), np.array([10.0]), 0.5
    )[0] == pytest.approx(0.8 * 0.3 * 90 - 10 * 0.2 * 0.5)


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
    perm = np.random.default_rng(0).permutation(
        300
    )  # the same users in another order: the same group
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
    # a: jazz twice, rock once (metal is after the cutoff); zz has no history: jazz, pop are
    # the most popular
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
    assert (
        plan.loc[plan["group"] == "treated", "action"]
        == plan.loc[plan["group"] == "treated", "planned_action"]
    ).all()
    for tier, part in plan.groupby("risk_tier"):
        assert (part["group"] == "control").sum() == np.floor(0.1 * len(part) + 0.5)
    coupons = plan["planned_action"] == "coupon"
    assert (plan.loc[coupons, "coupon_value"] == 15.0).all() and plan.loc[
        ~coupons, "coupon_value"
    ].isna().all()
    value = pred.set_index("user_id").loc[plan["user_id"], "value_12m"].to_numpy()
    np.testing.assert_allclose(plan["value_12m"], value)
    np.testing.assert_allclose(
        plan["expected_saved_value"],
        plan["p_churn"] * plan["expected_cost"].map({10.0: 0.3, 1.0: 0.05, 30.0: 0.5}) * value,
    )
    silent = plan["p_churn"] >= 0.5
    assert (plan.loc[silent, "intervene_by"] == plan.loc[silent, "cutoff"]).all()

    # same seed, shuffled input: identical plan and control group; another seed: another group
    again = make_plan(
        pred.sample(frac=1.0, random_state=1), ACTIONS, RULES, control_share=0.1, seed=0
    ).plan
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
    with pytest.raises(DataError, match="value_12m"):
        make_plan(pred.drop(columns="value_12m"), ACTIONS, RULES)
    with pytest.raises(DataError, match="value_12m must be a number"):
        make_plan(pred.assign(value_12m=-1.0), ACTIONS, RULES)
    with pytest.raises(DataError, match=r"coupon lacks \['coupon_value'\]"):
        make_plan(pred, {"coupon": {"cost": 1.0, "acceptance": 0.1}}, RULES[1:])
    with pytest.raises(DataError, match="duplicated"):
        make_plan(pd.concat([pred, pred.iloc[:1]]), ACTIONS, RULES)
    with pytest.raises(DataError, match="probability"):
        make_plan(pred.assign(p_churn=1.5), ACTIONS, RULES)


def test_plan_without_tiers_in_the_file_cuts_by_the_settings():
    pred = _predictions().drop(columns=["risk_tier", "segment", "cluster", "tau_median_days"])
    tiers = {
        "method": "quantile",
        "names": ["high", "medium", "low"],
        "top_shares": [0.2, 0.5],
        "cost_missed": 1,
    }
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
    # every key of retention is a keyword of make_plan, so the script passes the node whole
    plan = make_plan(_predictions(), **r, seed=0).plan
    assert set(plan["planned_action"]) <= set(r["actions"])
    assert cfg.data.source == "cdnow"  # recommendations read the data group, as train does


def _cli(tmp_path, *args):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "plan.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


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
        f"predictions={files / 'pred.csv'}",
        "data=events",
        f"data.path={files / 'log.csv'}",
        "data.columns.user_id=customer",
        "data.columns.timestamp=when",
        "category_column=genre",
        "data.activity_event_types=[purchase]",
        "retention.budget=2290",
    ]
    a = _cli(tmp_path, *common, f"output={tmp_path / 'a.parquet'}")
    assert a.returncode == 0, a.stderr
    assert "treated" in a.stdout
    b = _cli(tmp_path, *common, f"output={tmp_path / 'b.csv'}")
    assert b.returncode == 0, b.stderr
    plan = pd.read_parquet(tmp_path / "a.parquet")
    again = pd.read_csv(tmp_path / "b.csv", dtype={"user_id": str})
    assert list(plan["user_id"]) == list(again["user_id"]) and list(plan["group"]) == list(
        again["group"]
    )
    assert plan["expected_cost"].sum() <= 2290
    recs = plan.loc[plan["planned_action"] == "recommendation", "recommended"]
    assert len(recs) and recs.str.len().gt(0).all()
    assert set("; ".join(recs).split("; ")) <= {"jazz", "rock", "pop", "classical"}
    assert (tmp_path / "a_profit_curve.png").stat().st_size > 1000
    seg = pd.read_csv(tmp_path / "a_segments.csv")
    assert set(seg["by"]) == {"segment", "cluster"} and {"churn_rate", "value_mean"} <= set(
        seg.columns
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["~data", "retention.rules=[{tier: high, action: sms}]"], "unknown action 'sms'"),
        (["~data", "retention.budget=0.1"], "below the cost of one action"),
        (["~data", "predictions=missing.parquet"], "not found"),
        (["data=events", "data.path=nope.csv"], "not found"),
    ],
)
def test_cli_bad_input_exits_2_without_output(files, tmp_path, args, match):
    out = tmp_path / "plan.parquet"
    res = _cli(tmp_path, f"predictions={files / 'pred.parquet'}", f"output={out}", *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and match in res.stderr
    assert not out.exists() and not (tmp_path / "plan_profit_curve.png").exists()
    assert not (tmp_path / "run").exists()
