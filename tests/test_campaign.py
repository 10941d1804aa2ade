"""Campaign evaluation against a known synthetic treatment effect, and its scripts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from seqchurn.data.events import clean_events
from seqchurn.data.labels import to_day
from seqchurn.errors import DataError
from seqchurn.retention.campaign import bootstrap_means, campaign_outcomes, evaluate_campaign
from seqchurn.retention.plan import make_plan
from seqchurn.retention.segments import rfm_from_events
from seqchurn.retention.tiers import assign_tiers, fit_tiers
from seqchurn.simulate.bgnbd import bgnbd_oracle, simulate_bgnbd
from seqchurn.simulate.treatment import observed_events, simulate_potential_outcomes, true_effect

CUTOFF = "2020-09-30"
H = 90
ACTIONS = {
    "coupon": {"cost": 10.0, "acceptance": 0.25, "coupon_value": 10.0},
    "recommendation": {"cost": 0.5, "acceptance": 0.05, "n_items": 3},
    "care_contact": {"cost": 25.0, "acceptance": 0.4},
}
RULES = [
    {"tier": "high", "min_value": 300, "action": "care_contact"},
    {"tier": "high", "action": "coupon"},
    {"tier": "medium", "action": "recommendation"},
]


@pytest.fixture(scope="module")
def world():
    """BG/NBD customers at a plan date, with oracle predictions in the predict-file layout."""
    events, truth = simulate_bgnbd(20_000, seed=1, horizon_weeks=60)
    c = to_day(CUTOFF)
    clean, _ = clean_events(events[["user_id", "timestamp", "event_type", "amount", "quantity"]])
    pred = bgnbd_oracle(events, CUTOFF, H).merge(rfm_from_events(clean, c), on="user_id")
    first = (
        clean[clean["day"] <= c].groupby("user_id")["day"].min().reindex(pred["user_id"]).to_numpy()
    )
    value_12m = pred["monetary_mean"] * pred["frequency_days"] / np.maximum(c - first, H) * 365.0
    pred["p_churn"] = pred["p_churn_oracle"]
    pred["value_12m"] = value_12m
    pred["value_at_risk"] = pred["p_churn"] * value_12m
    pred["cutoff"] = pd.Timestamp(CUTOFF)
    # tiers fitted on "validation" labels: the untreated outcome of another draw of the future
    base, _ = simulate_potential_outcomes(events, truth, c, H, seed=99)
    tiers = fit_tiers(
        pred["p_churn"].to_numpy(), base["churn_untreated"].to_numpy(), top_shares=[0.1, 0.3]
    )
    pred["risk_tier"] = assign_tiers(pred["p_churn"].to_numpy(), tiers)
    return events, truth, pred


def test_both_worlds_come_from_the_same_draws(world):
    events, truth, pred = world
    c = to_day(CUTOFF)
    same, post = simulate_potential_outcomes(events, truth, c, H, seed=3)
    assert (same["churn_treated"] == same["churn_untreated"]).all() and (
        post["in_treated"] == post["in_untreated"]
    ).all()
    # the untreated world is the BG/NBD process: its churn rate matches the oracle's mean
    # probability
    assert list(same["user_id"]) == list(pred["user_id"])
    assert abs(same["churn_untreated"].mean() - pred["p_churn"].mean()) < 0.01

    out, post = simulate_potential_outcomes(
        events, truth, c, H, rescue_prob=0.3, dropout_reduction=0.5, seed=3
    )
    assert (out["churn_treated"] <= out["churn_untreated"]).all()
    assert (out["value_treated"] >= out["value_untreated"] - 1e-9).all()
    assert (
        post["in_treated"] | ~post["in_untreated"]
    ).all()  # every untreated purchase happens when treated too
    # treatment acts from C on: the alive buy their first purchase in the window in both worlds;
    # only the rescued dead change their churn, about 30% of the dead who would buy
    alive = out["alive_at_cutoff"]
    assert (out.loc[alive, "churn_treated"] == out.loc[alive, "churn_untreated"]).all()
    rescued = (out["churn_treated"] < out["churn_untreated"]).sum()
    assert 0 < rescued < 0.3 * (~alive).sum()
    assert post["timestamp"].min() >= pd.Timestamp("2020-10-01") and post[
        "timestamp"
    ].max() < pd.Timestamp("2020-12-30")


def test_the_evaluation_recovers_the_true_effect(world):
    events, truth, pred = world
    c = to_day(CUTOFF)
    plan = make_plan(pred, ACTIONS, RULES, control_share=0.3, seed=0).plan
    acceptance = plan.set_index("user_id")["planned_action"].map(
        {k: v["acceptance"] for k, v in ACTIONS.items()}
    )
    outcomes, post = simulate_potential_outcomes(
        events, truth, c, H, rescue_prob=acceptance, seed=5
    )
    treated = plan.loc[plan["group"] == "treated", "user_id"]
    truth_att = true_effect(outcomes, treated)
    log, _ = clean_events(observed_events(events, post, c, treated))

    report = evaluate_campaign(plan, log, H, n_boot=1000, seed=0, obs_end=c + H)
    overall = report.table.set_index("risk_tier").loc["overall"]
    assert (
        overall["n_treated"] == len(treated)
        and overall["n_control"] == (plan["group"] == "control").sum()
    )
    # the 95% intervals cover the true average effects on the treated, and the churn effect is real
    assert overall["churn_diff_lo"] <= truth_att["churn"] <= overall["churn_diff_hi"]
    assert overall["churn_diff_hi"] < 0
    assert overall["value_diff_lo"] <= truth_att["value"] <= overall["value_diff_hi"]
    # net value: the saved value minus what the treated's actions cost
    cost = plan.loc[plan["group"] == "treated", "expected_cost"].sum()
    assert overall["cost"] == pytest.approx(cost)
    assert overall["net_value_lo"] <= truth_att["saved_value"] - cost <= overall["net_value_hi"]
    # per tier too (the controls were drawn per tier)
    for tier in ("high", "medium"):
        row = report.table.set_index("risk_tier").loc[tier]
        users = plan.loc[(plan["group"] == "treated") & (plan["risk_tier"] == tier), "user_id"]
        assert row["churn_diff_lo"] <= true_effect(outcomes, users)["churn"] <= row["churn_diff_hi"]


def test_targeting_by_expected_profit_beats_random_targeting(world):
    events, truth, pred = world
    c = to_day(CUTOFF)
    coupon = {"coupon": {"cost": 2.0, "acceptance": 0.5, "coupon_value": 5.0}}
    plan = make_plan(pred, coupon, [{"action": "coupon"}], budget=2000.0, control_share=0.0).plan
    n = len(plan)
    assert n == 1000
    outcomes, _ = simulate_potential_outcomes(events, truth, c, H, rescue_prob=0.5, seed=11)
    gain = (outcomes["value_treated"] - outcomes["value_untreated"]).to_numpy()
    idx = pd.Index(outcomes["user_id"])
    ranked = gain[idx.get_indexer(plan["user_id"])].sum() - 2.0 * n
    rng = np.random.default_rng(0)
    random_nets = [
        gain[rng.choice(len(gain), n, replace=False)].sum() - 2.0 * n for _ in range(200)
    ]
    assert ranked > 0 and ranked > np.percentile(random_nets, 99)


def test_outcomes_and_effects_by_hand():
    plan = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "cutoff": pd.Timestamp("2021-01-10"),
            "risk_tier": "high",
            "group": ["treated", "treated", "control", "control"],
            "expected_cost": [5.0, 5.0, 5.0, 5.0],
        }
    )
    c = to_day("2021-01-10")
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "c", "c", "d", "d"],
            "day": [c - 3, c + 5, c - 30, c + 10, c, c + 11, c - 1, c + 400],
            "event_type": "purchase",
            "amount": [99.0, 10.0, 4.0, 20.0, 7.0, 30.0, 3.0, 1.0],
        }
    )
    out = campaign_outcomes(plan, events, horizon_days=10)
    # a: bought on C+5 (10); b: on C+10, the last day of the window (20); c: C itself and C+11
    # are outside; d: far later
    assert list(out["churn"]) == [0, 0, 1, 1] and list(out["value"]) == [10.0, 20.0, 0.0, 0.0]
    assert list(out["cost"]) == [5.0, 5.0, 0.0, 0.0]
    table = evaluate_campaign(plan, events, horizon_days=10, n_boot=200).table.set_index(
        "risk_tier"
    )
    for tier in ("high", "overall"):
        row = table.loc[tier]
        assert row["churn_diff"] == -1.0 and row["value_diff"] == 15.0
        assert row["saved_customers"] == 2.0 and row["net_value"] == 2 * 15.0 - 10.0


def test_bootstrap_means_are_vectorized_resamples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    boot = bootstrap_means(x, 3000, np.random.default_rng(1), max_cells=10_000)  # many small blocks
    assert boot.shape == (3000, 2)
    np.testing.assert_allclose(boot.mean(axis=0), x.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(boot.std(axis=0), x.std(axis=0) / np.sqrt(400), rtol=0.1)
    again = bootstrap_means(x, 3000, np.random.default_rng(1), max_cells=10_000)
    np.testing.assert_array_equal(boot, again)


def test_campaign_bad_inputs_are_data_errors():
    plan = pd.DataFrame(
        {"user_id": ["a", "b"], "cutoff": "2021-01-10", "group": ["treated", "control"]}
    )
    c = to_day("2021-01-10")
    events = pd.DataFrame(
        {
            "user_id": ["a", "b", "b"],
            "day": [c - 1, c - 2, c + 100],
            "event_type": "purchase",
            "amount": 1.0,
        }
    )
    with pytest.raises(DataError, match="window is not over"):
        evaluate_campaign(plan, events, horizon_days=200)
    with pytest.raises(DataError, match="lacks column"):
        evaluate_campaign(plan.drop(columns="group"), events, horizon_days=90)
    with pytest.raises(DataError, match="treated or control"):
        evaluate_campaign(plan.assign(group=["treated", "maybe"]), events, horizon_days=90)
    with pytest.raises(DataError, match="both treated and control"):
        evaluate_campaign(plan.assign(group="treated"), events, horizon_days=90)
    with pytest.raises(DataError, match="none of the plan's users"):
        evaluate_campaign(plan.assign(user_id=["x", "y"]), events, horizon_days=90)
    # b is active only after the plan date: not a user predict could have scored at C
    late = events[events["day"] > c - 2]
    with pytest.raises(DataError, match=r"1 of the plan's users \(e.g. \['b'\]\) have no activity"):
        evaluate_campaign(plan, late, horizon_days=90)


def _cli(tmp_path, *args):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "evaluate_campaign.py"),
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


@pytest.fixture(scope="module")
def campaign_files(world, tmp_path_factory):
    events, truth, pred = world
    d = tmp_path_factory.mktemp("campaign")
    c = to_day(CUTOFF)
    small = pred.iloc[:3000]
    plan = make_plan(small, ACTIONS, RULES, control_share=0.3, seed=0).plan
    _, post = simulate_potential_outcomes(events, truth, c, H, rescue_prob=0.3, seed=5)
    log = observed_events(events, post, c, plan.loc[plan["group"] == "treated", "user_id"])
    log[log["user_id"].isin(small["user_id"])].to_csv(d / "log.csv", index=False)
    plan.to_parquet(d / "plan.parquet", index=False)
    return d


def test_cli_evaluates_and_exits_2_on_bad_input(campaign_files, tmp_path):
    d = campaign_files
    common = [
        f"plan={d / 'plan.parquet'}",
        "data=events",
        f"data.path={d / 'log.csv'}",
        "n_boot=200",
    ]
    ok = _cli(tmp_path, *common, "data.obs_end=2020-12-29", f"output={tmp_path / 'c.csv'}")
    assert ok.returncode == 0, ok.stderr
    assert "net value" in ok.stdout
    table = pd.read_csv(tmp_path / "c.csv")
    assert (
        list(table["risk_tier"]) == ["high", "medium", "overall"]
        and table["churn_diff_lo"].notna().all()
    )

    # the log ends before C + H (no obs_end given, and a longer window): the outcome is not
    # known yet
    late = _cli(tmp_path, *common, "data.horizon_days=400", f"output={tmp_path / 'late.csv'}")
    assert (
        late.returncode == 2
        and "window is not over" in late.stderr
        and not (tmp_path / "late.csv").exists()
    )
    missing = _cli(
        tmp_path,
        "plan=nope.parquet",
        "data=events",
        f"data.path={d / 'log.csv'}",
        f"output={tmp_path / 'm.csv'}",
    )
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("error: ")
        and not (tmp_path / "m.csv").exists()
    )
    assert not (tmp_path / "run").exists()


def test_simulate_campaign_cli_writes_both_logs_and_refuses_a_bad_plan(tmp_path):
    script = str(ROOT / "scripts" / "simulate_campaign.py")
    fixed = [f"hydra.run.dir={tmp_path / 'run'}", "data.synthetic.n_users=300"]

    def run(*args):
        cmd = [sys.executable, script, *fixed, *args]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)

    proc = run("step=history", f"out={tmp_path / 'history.csv'}")
    assert proc.returncode == 0, proc.stderr
    history = pd.read_csv(tmp_path / "history.csv")
    assert pd.to_datetime(history["timestamp"]).max() < pd.Timestamp("2021-04-01")
    users = history["user_id"].astype(str).unique()
    plan = pd.DataFrame(
        {
            "user_id": users,
            "planned_action": "coupon",
            "group": np.where(np.arange(len(users)) % 2 == 0, "treated", "control"),
        }
    )
    plan.to_csv(tmp_path / "plan.csv", index=False)
    proc = run("step=outcome", f"plan={tmp_path / 'plan.csv'}", f"out={tmp_path / 'after.csv'}")
    assert proc.returncode == 0 and "true effect on the 150 treated" in proc.stdout, proc.stderr
    after = pd.read_csv(tmp_path / "after.csv")
    assert pd.to_datetime(after["timestamp"]).max() > pd.Timestamp("2021-04-01") and len(
        after
    ) > len(history)

    plan.drop(columns=["group"]).to_csv(tmp_path / "bad.csv", index=False)
    proc = run("step=outcome", f"plan={tmp_path / 'bad.csv'}", f"out={tmp_path / 'x.csv'}")
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error: ")
        and not (tmp_path / "x.csv").exists()
    )
    # a rescued customer comes back with the acceptance of retention.actions: none, no effect
    proc = run(
        "step=outcome",
        f"plan={tmp_path / 'plan.csv'}",
        f"out={tmp_path / 'same.csv'}",
        "retention.actions.coupon.acceptance=0.0",
    )
    assert proc.returncode == 0 and "churn +0.0000" in proc.stdout, proc.stderr
