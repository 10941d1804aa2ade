"""Readers and validation of the event log (DESIGN section 2)."""

import numpy as np
import pandas as pd
import pytest

from seqchurn.data.events import (
    clean_events,
    load_events,
    read_cdnow,
    read_table,
    rename_columns,
)
from seqchurn.data.timeline import in_user_time_order, user_time_order
from seqchurn.errors import DataError


def test_shipped_cdnow_reads_without_a_path():
    events, report = load_events("cdnow", merge_same_day=True)
    assert report["rows_read"] == 69659
    assert report["users"] == 23570
    assert report["rows_kept"] == 67591  # 2,068 same-day rows merge away
    assert events["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert events["timestamp"].max() == pd.Timestamp("1998-06-30")
    assert list(events.columns) == [
        "user_id",
        "timestamp",
        "day",
        "event_type",
        "amount",
        "quantity",
    ]


def test_cdnow_merge_sums_amounts():
    raw = read_cdnow()
    kept, _ = clean_events(raw, merge_same_day=False)
    merged, _ = clean_events(raw, merge_same_day=True)
    assert len(kept) == 69659
    assert merged["amount"].sum() == pytest.approx(kept["amount"].sum())
    assert merged.loc[merged["user_id"] == "00002", "amount"].iloc[0] == pytest.approx(89.0)


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame(
        {
            "CustomerID": [7, 7, 8],
            "InvoiceDate": ["2011-01-02 10:00", "2011-01-05", "2011-02-01"],
            "Revenue": [1.5, 2, 0],
        }
    ).to_csv(path, index=False)
    events, _ = load_events(
        "events", path, {"user_id": "CustomerID", "timestamp": "InvoiceDate", "amount": "Revenue"}
    )
    assert events["user_id"].tolist() == ["7", "7", "8"]
    assert events["event_type"].unique().tolist() == ["purchase"]
    assert events["amount"].tolist() == [1.5, 2.0, 0.0]


def test_parquet_reader(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2020-01-01", "2020-01-03"]),
            "event_type": ["view", "purchase"],
            "amount": [0.0, 9.5],
        }
    ).to_parquet(path)
    events, _ = load_events("events", path)
    assert events["event_type"].tolist() == ["view", "purchase"]
    # a table read for its callers is theirs to change (the log's own read may stay Arrow's)
    table = read_table(path)
    table["amount"] *= 2
    table["timestamp"] += pd.Timedelta(days=1)


def test_ids_written_as_a_number_or_as_text_are_one_user():
    frame = pd.DataFrame(
        {"user_id": pd.Series([1, "1", 2], dtype=object), "timestamp": ["2020-01-01"] * 3}
    )
    events, report = clean_events(frame)
    assert report["users"] == events["user_id"].nunique() == 2


@pytest.mark.parametrize(
    "frame, match",
    [
        (
            pd.DataFrame({"user": [1], "timestamp": ["2020-01-01"]}),
            r"missing required column.*\['user', 'timestamp'\]",
        ),
        (
            pd.DataFrame({"user_id": [1, 2], "timestamp": ["2020-01-01", "not a date"]}),
            r"unparsable timestamp.*line 3: 'not a date'",
        ),
        (
            pd.DataFrame(
                {
                    "user_id": [1, 2],
                    "timestamp": ["2020-01-01", "2020-01-02"],
                    "amount": [1.0, -2.0],
                }
            ),
            r"negative amount.*line\(s\) 3",
        ),
        (
            pd.DataFrame({"user_id": [1, None], "timestamp": ["2020-01-01", "2020-01-02"]}),
            r"null user_id or timestamp.*on_bad_rows=drop",
        ),
        (
            # text ids, every one null: no id text at all to check for blanks
            pd.DataFrame({"user_id": pd.Series([None], dtype=object), "timestamp": ["2020-01-01"]}),
            r"null user_id or timestamp",
        ),
        (pd.DataFrame({"user_id": [], "timestamp": []}), r"no rows"),
    ],
)
def test_bad_input_is_a_clear_data_error(frame, match):
    with pytest.raises(DataError, match=match):
        clean_events(frame)


def test_null_rows_dropped_on_request():
    frame = pd.DataFrame({"user_id": [1, None, 3], "timestamp": ["2020-01-01", "2020-01-02", None]})
    events, report = clean_events(frame, on_bad_rows="drop")
    assert events["user_id"].tolist() == ["1"] and report["dropped_null_rows"] == 2


def test_missing_file_and_unknown_mapping(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_events("events", tmp_path / "nope.csv")
    frame = pd.DataFrame({"a": [1], "b": ["2020-01-01"]})
    with pytest.raises(DataError, match=r"missing from the file; it has \['a', 'b'\]"):
        rename_columns(frame, {"user_id": "CustomerID"})


@pytest.mark.parametrize("shape", ["by user", "in time order", "shuffled", "one user"])
def test_the_user_then_time_order_is_the_two_key_sort(shape):
    rng = np.random.default_rng(len(shape))
    n = 500
    user = rng.integers(0, 1 if shape == "one user" else 40, n)
    ts = rng.integers(0, 30, n)  # ties in time too: the sort is stable
    if shape == "by user":
        keep = np.lexsort((ts, user // 7))  # users interleaved in key order, each in time order
        user, ts = user[keep], ts[keep]
    elif shape == "in time order":
        keep = np.argsort(ts, kind="stable")
        user, ts = user[keep], ts[keep]
    want = np.lexsort((ts, user))
    np.testing.assert_array_equal(user_time_order(user, ts), want)
    # checked a few rows at a time, pairs across the chunks' edges included
    for chunk in (1, 3, 64):
        assert in_user_time_order(user[want], ts[want], chunk=chunk)
        assert in_user_time_order(user, ts, want, chunk=chunk)
    assert in_user_time_order(user, ts, chunk=3) == bool((np.diff(want) == 1).all())
