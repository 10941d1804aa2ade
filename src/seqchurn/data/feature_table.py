"""The one table of model inputs: what each channel and summary feature is, in which unit.

The feature code computes these entries in this order, the encoders find their channels
here, and explain/ names attributions and writes sentences from these fields; nothing
decodes a feature from its name or its column position.

Adding an event column (say `discount`): one entry `Feature("seq_discount", Kind.SEQUENCE,
Unit.CURRENCY, column="discount")` in SEQUENCE_CHANNELS (EventIndex and last_events then carry
it, the sizes grow, reasons get a sentence by its unit), and clean_events keeping that column.
A channel derived from the timestamps: its entry plus one line in features._channel.
Adding a summary feature: one entry in BASE_SUMMARY (or in `summary_table` for a windowed
family) plus its computation in features._WHOLE_HISTORY, keyed by the entry's name.
Aggregate features (`aggregate_table`, data/aggregates.py) feed the tree reference only, no
model tensor: an entry names its statistic, event type and window, and the code reads those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Which tensor an input lives in (data/sequences.py batch keys)."""

    SEQUENCE = "sequence"  # a channel of the (B, T, F) numeric tensor, per event
    EVENT_TYPE = "event_type"  # the event-type embedding of the (B, T) ids, one entry per type
    SUMMARY = "summary"  # a column of the (B, S) summary tensor, per snapshot
    ATTRIBUTE = "attribute"  # a static user attribute of the (B, A) tensor
    AGGREGATE = "aggregate"  # a column of the aggregate frame of the tree reference, no tensor


class Stat(StrEnum):
    """What an AGGREGATE entry computes over its events (of its type, in its window)."""

    COUNT = "count"
    AMOUNT_SUM = "amount_sum"
    AMOUNT_MEAN = "amount_mean"  # NaN without events
    AMOUNT_STD = "amount_std"  # sample standard deviation; NaN with fewer than 2 events
    DAYS_SINCE_LAST = "days_since_last"  # from the end of day C; NaN without events
    DAYS_SINCE_FIRST = "days_since_first"
    GAP_MEAN = "gap_mean"  # days between consecutive events; NaN with fewer than 2 events
    GAP_STD = "gap_std"  # NaN with fewer than 3 events
    GAP_MAX = "gap_max"


class Unit(StrEnum):
    """The unit of an input's raw (unscaled) value."""

    DAYS = "days"
    COUNT = "count"
    CURRENCY = "currency"
    ITEMS = "items"
    CATEGORY = "category"


WINDOWS = (30, 90, 180)  # days of the windowed summary features, (C - w, C]


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: the column name in summary frames and attribution tables.
        kind: the tensor it lives in.
        unit: the unit of its raw (unscaled) value.
        event_type: the event type counted, for per-type counts and embeddings; None for all
            types (and for the out-of-vocabulary entry of EVENT_TYPE).
        window_days: w of a (C - w, C] window; None for the whole history.
        column: the source column: the event column a SEQUENCE channel carries as is
            (log1p-scaled; None when derived from the timestamps), or an ATTRIBUTE's column
            of the user table.
        is_time: the SEQUENCE channel the Transformer reads as its time-aware position.
        stat: what an AGGREGATE entry computes; None for the other kinds.
    """

    name: str
    kind: Kind
    unit: Unit
    event_type: str | None = None
    window_days: int | None = None
    column: str | None = None
    is_time: bool = False
    stat: Stat | None = None


SEQUENCE_CHANNELS = (
    Feature("seq_amount", Kind.SEQUENCE, Unit.CURRENCY, column="amount"),
    Feature("seq_quantity", Kind.SEQUENCE, Unit.ITEMS, column="quantity"),
    Feature("seq_gap_prev_days", Kind.SEQUENCE, Unit.DAYS),
    Feature("seq_days_before_cutoff", Kind.SEQUENCE, Unit.DAYS, is_time=True),
)

BASE_SUMMARY = (
    Feature("recency_days", Kind.SUMMARY, Unit.DAYS),  # days since the last activity day
    Feature("frequency_days", Kind.SUMMARY, Unit.COUNT),  # number of activity days
    Feature("monetary_mean", Kind.SUMMARY, Unit.CURRENCY),  # activity spend per activity day
    Feature("monetary_total", Kind.SUMMARY, Unit.CURRENCY),
    Feature("tenure_days", Kind.SUMMARY, Unit.DAYS),  # days since the first activity day
    Feature("mean_gap_days", Kind.SUMMARY, Unit.DAYS),  # between activity days
    Feature("last_gap_days", Kind.SUMMARY, Unit.DAYS),  # between the last two activity days
)


def summary_table(count_types: Sequence[str]) -> tuple[Feature, ...]:
    """The summary features, in column order: BASE_SUMMARY, then per window the count of each
    of `count_types` (all events of the type) and the activity spend."""
    windowed = []
    for w in WINDOWS:
        windowed += [
            Feature(f"count_{t}_{w}d", Kind.SUMMARY, Unit.COUNT, event_type=t, window_days=w)
            for t in count_types
        ]
        windowed.append(Feature(f"spend_{w}d", Kind.SUMMARY, Unit.CURRENCY, window_days=w))
    return BASE_SUMMARY + tuple(windowed)


AGGREGATE_WINDOWS = (*WINDOWS, None)  # None = the whole history up to C
_WINDOWED_STATS = (
    (Stat.COUNT, Unit.COUNT),
    (Stat.AMOUNT_SUM, Unit.CURRENCY),
    (Stat.AMOUNT_MEAN, Unit.CURRENCY),
    (Stat.AMOUNT_STD, Unit.CURRENCY),
)
_HISTORY_STATS = (
    Stat.DAYS_SINCE_LAST,
    Stat.DAYS_SINCE_FIRST,
    Stat.GAP_MEAN,
    Stat.GAP_STD,
    Stat.GAP_MAX,
)


def aggregate_table(event_types: Sequence[str]) -> tuple[Feature, ...]:
    """The aggregate features of the tree reference, in column order, in the style of
    event-sequence libraries: for all events, then for each of `event_types`, the count and
    amount sum, mean and standard deviation per window (30/90/180 days and the whole history),
    then days since the last and the first event and the gap statistics over the whole history.
    Events of every type count (not only activity); all read events on or before C."""
    table = []
    for t in (None, *event_types):
        tag = "all" if t is None else t
        for w in AGGREGATE_WINDOWS:
            span = "all" if w is None else f"{w}d"
            table += [
                Feature(f"agg_{tag}_{span}_{s}", Kind.AGGREGATE, u, t, w, stat=s)
                for s, u in _WINDOWED_STATS
            ]
        table += [
            Feature(f"agg_{tag}_{s}", Kind.AGGREGATE, Unit.DAYS, event_type=t, stat=s)
            for s in _HISTORY_STATS
        ]
    return tuple(table)


def input_table(
    count_types: Sequence[str], static_columns: Sequence[str] = ()
) -> tuple[Feature, ...]:
    """Every input a model attributes to, in the order of explanation tables: summary features,
    sequence channels, one event-type entry per vocabulary type plus the unseen one, attributes."""
    types = [
        Feature(f"seq_type:{t}", Kind.EVENT_TYPE, Unit.COUNT, event_type=t) for t in count_types
    ]
    types.append(Feature("seq_type:<unseen>", Kind.EVENT_TYPE, Unit.COUNT))
    attributes = [
        Feature(f"static:{c}", Kind.ATTRIBUTE, Unit.CATEGORY, column=c) for c in static_columns
    ]
    return summary_table(count_types) + SEQUENCE_CHANNELS + tuple(types) + tuple(attributes)


def time_channel() -> int:
    """Position in SEQUENCE_CHANNELS (the last axis of NUMERIC) of the time-aware channel."""
    return next(i for i, f in enumerate(SEQUENCE_CHANNELS) if f.is_time)
