"""Fairness: derived groups from a hand-made log, and a per-group report with values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seqchurn.data.labels import to_day
from seqchurn.fairness import derived_groups, fairness_report, largest_gaps


def _events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "date", "amount"])
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(object),
            "timestamp": pd.to_datetime(frame["date"]),
            "day": [to_day(d) for d in frame["date"]],
            "event_type": "purchase",
            "amount": frame["amount"].astype(float),
            "quantity": 1.0,
        }
    )


def test_derived_groups_from_history_up_to_each_cutoff():
    events = _events(
        [
            ("a", "2020-01-01", 10),
            ("a", "2020-06-01", 10),  # tenure 182 d at 07-01, spend 20
            ("b", "2020-05-01", 100),  # tenure 61, spend 100
            ("c", "2020-06-20", 5),
            ("c", "2020-07-05", 500),  # tenure 11, spend 5 (the 500 is after the cutoff)
            ("d", "2020-03-01", 50),  # tenure 122, spend 50
            ("e", "2020-04-01", 1),
            ("e", "2020-04-02", 1),  # tenure 91, spend 2
            ("f", "2020-01-15", 300),  # tenure 168, spend 300
            ("late", "2020-08-01", 9),  # no history at the first cutoff
        ]
    )
    cut = to_day("2020-07-01")
    snaps = pd.DataFrame(
        {"user_id": ["a", "b", "c", "d", "e", "f", "late", "ghost"], "cutoff": cut}
    )
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "region": ["north", None, "south"]})
    groups = derived_groups(events, snaps, users)
    assert list(groups.columns) == ["tenure_tertile", "spend_tertile", "region"]
    # tenure order c < b < e < d < f < a; spend order e < c < a < d < b < f
    assert list(groups["tenure_tertile"]) == [
        "high",
        "low",
        "low",
        "mid",
        "mid",
        "high",
        "unknown",
        "unknown",
    ]
    assert list(groups["spend_tertile"]) == [
        "mid",
        "high",
        "low",
        "mid",
        "low",
        "high",
        "unknown",
        "unknown",
    ]
    assert list(groups["region"]) == ["north", "unknown", "south"] + ["unknown"] * 5

    # Each cutoff is ranked among its own rows: at 07-31 c's later purchase makes it the top spender.
    late = to_day("2020-07-31")
    two = pd.DataFrame(
        {"user_id": ["c", "e", "b", "c", "e", "b"], "cutoff": [late] * 3 + [cut] * 3}
    )
    assert list(derived_groups(events, two)["spend_tertile"]) == [
        "high",
        "low",
        "mid",
        "mid",
        "low",
        "high",
    ]


def test_equal_spend_is_a_tie_whatever_other_users_spent():
    # A running sum over the whole log gives a and b spends of 24.999999999999996 and
    # 25.000000000000007 after user 0's 26.98, splitting them into two tertiles.
    events = _events(
        [
            ("0", "2020-01-01", 26.98),
            ("a", "2020-02-01", 19.99),
            ("a", "2020-02-02", 5.01),
            ("b", "2020-02-01", 19.99),
            ("b", "2020-02-02", 5.01),
        ]
    )
    snaps = pd.DataFrame({"user_id": ["0", "a", "b"], "cutoff": to_day("2020-03-01")})
    assert list(derived_groups(events, snaps)["spend_tertile"]) == ["high", "low", "low"]


def _example():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.8, 0.2, 0.3, 0.1, 0.55, 0.95])
    groups = pd.DataFrame({"g": list("AAAABBBBCC"), "h": ["x"] * 5 + ["y"] * 5})
    return y, p, groups


def test_fairness_report_hand_computed_values():
    y, p, groups = _example()
    report = fairness_report(y, p, groups, threshold=0.5)
    assert list(report.columns) == [
        "group_column",
        "group",
        "n",
        "churn_rate",
        "mean_p",
        "auroc",
        "ece",
        "flagged_share",
        "tpr",
    ]
    g = report[report["group_column"] == "g"].set_index("group")
    expected = {  # n, churn rate, mean p, AUROC, ECE (each p alone in its bin), flagged, TPR
        "A": (4, 0.5, 0.65, 0.75, 0.4, 0.75, 1.0),
        "B": (4, 0.5, 0.35, 1.0, 0.3, 0.25, 0.5),
        "C": (2, 1.0, 0.75, math.nan, 0.25, 1.0, 1.0),
    }
    for name, values in expected.items():
        got = g.loc[
            name, ["n", "churn_rate", "mean_p", "auroc", "ece", "flagged_share", "tpr"]
        ].to_numpy(float)
        np.testing.assert_allclose(got, values, atol=1e-12, equal_nan=True)
    h = report[report["group_column"] == "h"].set_index("group")
    assert h.loc["x", "n"] == 5 and h.loc["y", "churn_rate"] == pytest.approx(0.6)


def test_largest_gaps_skip_undefined_groups():
    y, p, groups = _example()
    gaps = largest_gaps(fairness_report(y, p, groups, threshold=0.5)).set_index(
        ["group_column", "metric"]
    )
    auroc = gaps.loc[("g", "auroc")]
    assert auroc["gap"] == pytest.approx(0.25) and (auroc["low_group"], auroc["high_group"]) == (
        "A",
        "B",
    )
    flagged = gaps.loc[("g", "flagged_share")]
    assert flagged["gap"] == pytest.approx(0.75) and (
        flagged["low_group"],
        flagged["high_group"],
    ) == ("B", "C")
    assert ("h", "tpr") in gaps.index
    assert largest_gaps(pd.DataFrame()).empty


def test_report_survives_single_class_and_refuses_nan():
    y = np.ones(6, dtype=int)
    report = fairness_report(
        y, np.linspace(0.1, 0.9, 6), pd.DataFrame({"g": list("aabbcc")}), threshold=0.5
    )
    assert report["auroc"].isna().all() and (report["churn_rate"] == 1).all()
    with pytest.raises(ValueError, match="NaN"):
        fairness_report(y, np.full(6, np.nan), pd.DataFrame({"g": list("aabbcc")}), threshold=0.5)
