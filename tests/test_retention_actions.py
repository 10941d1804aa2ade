"""The action registry: a new action is one entry, and the plan chooses and fills it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqchurn.errors import DataError
from seqchurn.retention import actions
from seqchurn.retention.actions import Action, check_actions, register
from seqchurn.retention.plan import make_plan
from seqchurn.retention.segments import rfm_from_events


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so an action registered in a test does not outlive it."""
    monkeypatch.setattr(actions, "ACTIONS", dict(actions.ACTIONS))
    return actions.ACTIONS


def _predictions(n=200) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, n)
    value = rng.uniform(20, 400, n)
    return pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in range(n)],
            "cutoff": pd.Timestamp("2021-03-31"),
            "p_churn": p,
            "value_12m": value,
            "value_at_risk": p * value,
            "risk_tier": np.where(p >= 0.6, "high", "low"),
            "segment": rng.choice(["Loyal", "Lost"], n),
        }
    )


def test_a_registered_action_is_chosen_by_the_rules_and_fills_its_column(registry):
    register(
        Action(
            "sms",
            settings=("template",),
            column="sms_text",
            fill=lambda spec, targets: np.array(
                [spec["template"].format(user=u) for u in targets.user_id], dtype=object
            ),
            empty="",
        )
    )
    config = {
        "coupon": {"cost": 10.0, "acceptance": 0.2, "coupon_value": 10.0},
        "sms": {"cost": 0.1, "acceptance": 0.02, "template": "we miss you, {user}"},
    }
    rules = [
        {"tier": "high", "segment": "Lost", "action": "sms"},
        {"tier": "high", "action": "coupon"},
    ]
    plan = make_plan(_predictions(), config, rules, control_share=0.0).plan
    sms = plan["planned_action"] == "sms"
    assert sms.any() and (plan.loc[sms, "segment"] == "Lost").all()
    assert (plan.loc[sms, "sms_text"] == "we miss you, " + plan.loc[sms, "user_id"]).all()
    assert (plan.loc[~sms, "sms_text"] == "").all()
    # its cost is the configured one; the columns of the other actions are still there
    assert (plan.loc[sms, "expected_cost"] == 0.1).all()
    assert {"coupon_value", "recommended"} <= set(plan.columns)
    # without the registry entry the same configuration is refused
    del registry["sms"]
    with pytest.raises(DataError, match="unknown action 'sms'"):
        make_plan(_predictions(), config, rules)


def test_registry_refuses_duplicates_and_checks_settings(registry):
    with pytest.raises(ValueError, match="registered already"):
        register(Action("coupon"))
    with pytest.raises(ValueError, match="column and a fill"):
        register(Action("letter", column="letter_text"))
    with pytest.raises(DataError, match="built in|unknown action 'none'"):
        check_actions({"none": {"cost": 0.0, "acceptance": 0.0}})
    with pytest.raises(DataError, match="lacks"):
        check_actions({"care_contact": {"cost": 1.0}})
    with pytest.raises(DataError, match="acceptance in"):
        check_actions({"care_contact": {"cost": 1.0, "acceptance": 2.0}})
    checked = check_actions({"care_contact": {"cost": 1, "acceptance": 0.5}})
    assert checked == {
        "care_contact": {"cost": 1.0, "acceptance": 0.5},
        "none": {"cost": 0.0, "acceptance": 0.0},
    }


def test_rfm_from_events_are_the_summary_features_by_hand():
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "timestamp": pd.to_datetime(
                ["2021-01-01", "2021-01-01", "2021-01-05", "2021-01-03", "2021-02-01", "2021-02-01"]
            ),
            "event_type": ["purchase", "purchase", "view", "purchase", "purchase", "purchase"],
            "amount": [10.0, 5.0, 0.0, 8.0, 100.0, 3.0],
            "quantity": 1.0,
        }
    )
    events["day"] = events["timestamp"].to_numpy().astype("datetime64[D]").astype(np.int64)
    c = int(np.datetime64("2021-01-10", "D").astype(np.int64))
    rfm = rfm_from_events(events, c, activity_event_types=["purchase"])
    # a: two purchases on one day (one activity day, 15 spent), the view does not count;
    # b: one purchase before C; c: nothing before C, so not a row
    assert list(rfm["user_id"]) == ["a", "b"]
    assert list(rfm["recency_days"]) == [9.0, 7.0]
    assert list(rfm["frequency_days"]) == [1.0, 1.0]
    assert list(rfm["monetary_mean"]) == [15.0, 8.0]
    with pytest.raises(DataError, match="no activity"):
        rfm_from_events(events, c - 30)
