"""Events posted to the service, checked by the same `clean_events` as a file, and the
refusals the HTTP layer maps to status codes."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from seqchurn.data.events import MAX_VALUE, clean_events
from seqchurn.data.labels import to_date
from seqchurn.data.timestamps import reads_values_alone
from seqchurn.errors import DataError
from seqchurn.realtime.store import EVENT_COLUMNS


class NotFound(DataError):
    """A user the store does not hold (HTTP 404)."""


class Conflict(DataError):
    """A question the store cannot answer, such as a score before the latest event (HTTP 409)."""


class TooLarge(DataError):
    """A batch over the configured limit (HTTP 413)."""


def server_day() -> int:
    return int(time.time() // 86_400)


@dataclass(frozen=True)
class Limits:
    max_batch_events: int = 10_000
    max_future_days: int = 1  # events dated later than the server's today + this are refused
    max_value: float = MAX_VALUE


def validate_events(
    items: Sequence[Mapping],
    limits: Limits,
    timestamp_format: str | None = None,
    need_ids: bool = True,
    request: np.ndarray | None = None,
) -> pd.DataFrame:
    """JSON events -> the store's columns plus `timestamp`, checked by `clean_events` (sorted
    by user and time, as it leaves a file); DataError if any event is bad.

    `request` numbers each event's request when a group's events are checked together; it
    comes back as the column `_request`.
    """
    check_size(items, limits)
    frame = pd.DataFrame(list(items))
    if not need_ids:
        frame["event_id"] = np.arange(len(frame)).astype(str)
    elif "event_id" not in frame or frame["event_id"].isna().any():
        raise DataError("every event needs an event_id (retries are told apart by it)")
    frame["event_id"] = frame["event_id"].astype(str)
    carry = ["event_id"]
    if request is not None:
        frame["_request"], carry = request, [*carry, "_request"]
    try:
        clean, _ = clean_events(
            frame,
            header_lines=0,
            timestamp_format=timestamp_format,
            max_value=limits.max_value,
            carry=carry,
        )
    except DataError as err:  # a file's "line N" is the request's Nth event
        raise DataError(re.sub(r"\blines?\b(\(s\))?", "event", str(err))) from None
    latest = server_day() + limits.max_future_days
    future = clean["day"].to_numpy() > latest
    if future.any():
        first = clean.loc[future].iloc[0]
        raise DataError(
            f"{int(future.sum())} event(s) dated after {to_date(latest)} (the server's today + "
            f"limits.max_future_days), e.g. event_id {first['event_id']!r} at {first['timestamp']}"
        )
    clean["ts_ns"] = clean["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    return clean[[*EVENT_COLUMNS, "timestamp", *carry[1:]]]


def check_size(items: Sequence[Mapping], limits: Limits) -> None:
    """The checks that need only the event count, made before a request joins a group."""
    if len(items) > limits.max_batch_events:
        raise TooLarge(
            f"{len(items)} events in one request; the limit is "
            f"limits.max_batch_events={limits.max_batch_events}"
        )
    if not items:
        raise DataError("the request has no events")


def validate_group(
    requests: Sequence[Sequence[Mapping]], limits: Limits, timestamp_format: str | None = None
) -> tuple[pd.DataFrame, list[Exception | None]]:
    """`validate_events` for a group of requests: the valid requests' events with their
    request's number in `_request`, and each request's refusal (None when valid).

    The group is checked as one batch, which costs about what one request does, whenever
    that gives each request the answer it would get alone: every check is row by row except
    the timestamp format's inference, so only a group whose timestamps are all read value by
    value (`reads_values_alone`) is checked together. Otherwise, or if the group has a bad
    event, each request is checked alone, for its own verdict and message.
    """
    if len(requests) > 1:
        try:
            items = [item for r in requests for item in r]
            number = np.repeat(np.arange(len(requests)), [len(r) for r in requests])
            stamps = pd.Series([item.get("timestamp") for item in items], dtype=object)
            if timestamp_format or reads_values_alone(stamps):
                whole = replace(limits, max_batch_events=len(items))
                frame = validate_events(items, whole, timestamp_format, request=number)
                # back in request order, each request's rows as it alone would leave them: a
                # repeated event_id is then the first request's, as the store keeps it
                frame = frame.sort_values("_request", kind="stable")
                return frame, [None] * len(requests)
        except Exception:  # noqa: BLE001 - some request is bad: each is checked alone below
            pass
    frames, errors = [], []
    for i, items in enumerate(requests):
        try:
            frames.append(
                validate_events(items, limits, timestamp_format, request=np.full(len(items), i))
            )
            errors.append(None)
        except Exception as err:  # noqa: BLE001 - the request's own failure, raised in its thread
            errors.append(err)
    return (pd.concat(frames) if frames else pd.DataFrame()), errors
