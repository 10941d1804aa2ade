"""A group of POST /events requests checked together gives each request its own verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqchurn.errors import DataError
from seqchurn.realtime.validation import Limits, validate_events, validate_group


def _events(user: str, stamps: list[str], prefix: str) -> list[dict]:
    return [
        {"event_id": f"{prefix}{i}", "user_id": user, "timestamp": t, "amount": 1.0 + i}
        for i, t in enumerate(stamps)
    ]


def _alone(requests: list[list[dict]]) -> list:
    """Each request's verdict when it is checked by itself: its frame or its error's text."""
    out = []
    for items in requests:
        try:
            out.append(validate_events(items, Limits()))
        except DataError as err:
            out.append(str(err))
    return out


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="_request").sort_values("event_id").reset_index(drop=True)


def test_a_valid_group_gives_the_rows_of_its_requests_checked_alone():
    requests = [
        _events("b", ["2021-03-02T10:00:00", "2021-03-01"], "x"),
        _events("a", ["2021-03-05 08:30:00"], "y"),
        _events("b", ["2021-02-01T00:00:00"], "z"),
    ]
    frame, errors = validate_group(requests, Limits())
    assert errors == [None, None, None]
    # in request order, each request's rows as it alone leaves them (sorted by user and time)
    together = frame.drop(columns="_request").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, pd.concat(_alone(requests)).reset_index(drop=True))
    assert frame["_request"].tolist() == [0, 0, 1, 2]


def test_an_event_id_sent_twice_in_a_group_is_the_first_requests():
    first = [{"event_id": "x", "user_id": "b", "timestamp": "2021-03-05", "amount": 1.0}]
    second = [{"event_id": "x", "user_id": "b", "timestamp": "2021-03-01", "amount": 2.0}]
    frame, errors = validate_group([first, second], Limits())
    kept = frame.drop_duplicates("event_id", keep="first")  # as the store keeps a repeated id
    assert errors == [None, None] and kept["amount"].tolist() == [1.0]


@pytest.mark.parametrize(
    "bad",
    [
        _events("c", ["2021-03-01", "not a time"], "bad"),
        [{"event_id": "neg", "user_id": "c", "timestamp": "2021-03-01", "amount": -1}],
        _events("c", ["2999-01-01"], "future"),
    ],
)
def test_a_bad_request_is_refused_alone_with_its_own_message(bad):
    good = [_events("a", ["2021-03-01"], "g"), _events("b", ["2021-03-02"], "h")]
    requests = [good[0], bad, good[1]]
    frame, errors = validate_group(requests, Limits())
    alone = _alone(requests)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], DataError) and str(errors[1]) == alone[1]
    assert sorted(frame["_request"].unique()) == [0, 2]
    assert _rows(frame).equals(
        pd.concat([alone[0], alone[2]]).sort_values("event_id").reset_index(drop=True)
    )


def test_day_month_inference_is_each_requests_own():
    # Alone, "03/04/2021" reads as March 4 or April 3: refused. Beside a request that rules
    # month-first out ("13/04/2021"), a column-wide inference would accept it as day-first.
    ambiguous = _events("a", ["03/04/2021", "05/06/2021"], "amb")
    telling = _events("b", ["13/04/2021"], "tel")
    frame, errors = validate_group([ambiguous, telling], Limits())
    assert isinstance(errors[0], DataError) and "day/month" in str(errors[0])
    assert errors[1] is None
    assert frame["timestamp"].tolist() == [pd.Timestamp("2021-04-13")]
    assert np.array_equal(frame["_request"].to_numpy(), [1])
