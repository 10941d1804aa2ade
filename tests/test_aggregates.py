"""Aggregate features of the tree reference: equal to a plain pandas computation, and blind to
every event after the cutoff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqchurn.data.aggregates import aggregate_features
from seqchurn.data.events import clean_events
from seqchurn.data.feature_table import Kind, Stat, aggregate_table
from seqchurn.data.labels import to_day
from seqchurn.data.timeline import EventIndex

TYPES = ["view", "purchase", "return", "never"]  # "never" is absent from the log
CUTOFFS = ["2021-02-28", "2021-05-31", "2021-09-30"]


def _log(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 900
    raw = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n).astype(str),
            "timestamp": pd.Timestamp("2020-11-01")
            + pd.to_timedelta(rng.integers(0, 400 * 24, n), unit="h"),
            "event_type": rng.choice(["view", "purchase", "return"], n, p=[0.6, 0.3, 0.1]),
            "amount": rng.exponential(20, n).round(2) * rng.integers(0, 2, n),
        }
    )
    # same-second duplicates and a user with one event only
    raw = pd.concat([raw, raw.iloc[:5], raw.iloc[[7]].assign(user_id="solo")], ignore_index=True)
    return clean_events(raw)[0]


def _snapshots(events: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for c in CUTOFFS:
        day = to_day(c)
        users = events.loc[events["day"] <= day, "user_id"].unique()
        rows.append(pd.DataFrame({"user_id": users, "cutoff": day}))
    return pd.concat(rows, ignore_index=True)


def _pandas_reference(events: pd.DataFrame, user: str, cutoff: int, feature) -> float:
    """One entry computed the plain way: filter, then pandas statistics."""
    e = events[(events["user_id"] == user) & (events["day"] <= cutoff)]
    if feature.event_type is not None:
        e = e[e["event_type"] == feature.event_type]
    e = e.sort_values("timestamp")
    if feature.window_days is not None:
        e = e[e["day"] > cutoff - feature.window_days]
    amount = e["amount"]
    end_of_cutoff = pd.Timestamp(np.datetime64(cutoff, "D")) + pd.Timedelta(days=1)
    gaps = e["timestamp"].diff().dropna() / pd.Timedelta(days=1)
    since = (end_of_cutoff - e["timestamp"]) / pd.Timedelta(days=1)
    stat = {
        Stat.COUNT: lambda: float(len(e)),
        Stat.AMOUNT_SUM: lambda: amount.sum(),
        Stat.AMOUNT_MEAN: lambda: amount.mean(),
        Stat.AMOUNT_STD: lambda: amount.std(),
        Stat.DAYS_SINCE_LAST: lambda: since.min(),
        Stat.DAYS_SINCE_FIRST: lambda: since.max(),
        Stat.GAP_MEAN: lambda: gaps.mean(),
        Stat.GAP_STD: lambda: gaps.std(),
        Stat.GAP_MAX: lambda: gaps.max(),
    }[feature.stat]
    return float(stat())


def _compute(events: pd.DataFrame, snaps: pd.DataFrame) -> pd.DataFrame:
    index = EventIndex(events)
    codes = index.user_codes(snaps["user_id"].to_numpy(dtype=object))
    return aggregate_features(index, codes, snaps["cutoff"].to_numpy(np.int64), TYPES)


def test_the_table_names_each_statistic_once():
    table = aggregate_table(TYPES)
    assert all(f.kind == Kind.AGGREGATE and f.stat is not None for f in table)
    keys = [(f.event_type, f.window_days, f.stat) for f in table]
    assert len(set(keys)) == len(keys) == (1 + len(TYPES)) * (4 * 4 + 5)
    assert len({f.name for f in table}) == len(table)


def test_aggregates_equal_a_pandas_computation():
    events = _log()
    snaps = _snapshots(events)
    got = _compute(events, snaps)
    assert list(got.columns) == [f.name for f in aggregate_table(TYPES)]
    expected = np.array(
        [
            [_pandas_reference(events, u, c, f) for f in aggregate_table(TYPES)]
            for u, c in zip(snaps["user_id"], snaps["cutoff"])
        ]
    )
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-9, atol=1e-6, equal_nan=True)
    # the checks bite: several types, windows with and without events, undefined statistics
    assert got["agg_never_all_count"].eq(0).all() and got["agg_never_gap_max"].isna().all()
    assert got["agg_purchase_30d_count"].gt(0).any() and got["agg_purchase_30d_count"].eq(0).any()
    assert got.loc[snaps["user_id"].eq("solo").to_numpy(), "agg_all_gap_mean"].isna().all()


def test_nothing_after_the_cutoff_reaches_the_aggregates():
    """Changed, added and removed events after C, and users who appear only later, change no
    aggregate at C, bit for bit (the pattern of tests/test_leakage.py)."""
    events = _log()
    cutoff = to_day(CUTOFFS[1])
    snaps = _snapshots(events)
    snaps = snaps[snaps["cutoff"] == cutoff].reset_index(drop=True)
    base = _compute(events, snaps)
    rng = np.random.default_rng(1)
    later = events["day"] > cutoff
    perturbed = events.copy()
    perturbed.loc[later, "amount"] = rng.exponential(500, int(later.sum()))
    perturbed.loc[later, "event_type"] = "purchase"
    extra = events[later].sample(60, random_state=0).assign(amount=1e6)
    newcomers = events[later].head(30).assign(user_id="aaa-new")  # sorts before everyone
    for log in (
        events[~later],
        perturbed,
        pd.concat([events, extra, newcomers], ignore_index=True),
    ):
        pd.testing.assert_frame_equal(_compute(log.reset_index(drop=True), snaps), base)


def test_other_users_change_no_aggregate():
    events = _log()
    snaps = _snapshots(events)
    mine = snaps[snaps["user_id"].isin(["1", "2", "solo"])].reset_index(drop=True)
    alone = events[events["user_id"].isin(["1", "2", "solo"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(_compute(alone, mine), _compute(events, mine))


@pytest.mark.parametrize("n_users", [1, 3])
def test_tiny_logs(n_users):
    events = _log(n_users=n_users)
    snaps = _snapshots(events)
    got = _compute(events, snaps)
    assert len(got) == len(snaps) and np.isfinite(got["agg_all_all_count"]).all()
