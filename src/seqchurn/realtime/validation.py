"""Events posted to the service, checked by the same `clean_events` as a file, and the
refusals the HTTP layer maps to status codes."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqchurn.data.events import MAX_VALUE, clean_events
from seqchurn.data.labels import to_date
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
) -> pd.DataFrame:
    """JSON events -> the store's columns plus `timestamp`, checked by `clean_events` (sorted
    by user and time, as it leaves a file); DataError if any event is bad."""
    if len(items) > limits.max_batch_events:
        raise TooLarge(
            f"{len(items)} events in one request; the limit is "
            f"limits.max_batch_events={limits.max_batch_events}"
        )
    if not items:
        raise DataError("the request has no events")
    frame = pd.DataFrame(list(items))
    if not need_ids:
        frame["event_id"] = np.arange(len(frame)).astype(str)
    elif "event_id" not in frame or frame["event_id"].isna().any():
        raise DataError("every event needs an event_id (retries are told apart by it)")
    frame["event_id"] = frame["event_id"].astype(str)
    try:
        clean, _ = clean_events(
            frame,
            header_lines=0,
            timestamp_format=timestamp_format,
            max_value=limits.max_value,
            carry=["event_id"],
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
    return clean[[*EVENT_COLUMNS, "timestamp"]]
