"""A timestamp column parsed one way for the whole column, never row by row (DESIGN section 2).

`data.timestamp_format` (a strptime format) decides when given. Otherwise the format is
inferred from the column as a whole: YYYYMMDD, ISO 8601, or day/month/year versus
month/day/year decided by the values that rule one reading out. A column where both
readings fit every value and disagree on some is refused with examples: a silent guess
would move events by months. Times with a zone are converted to UTC; a column that mixes
them with naive times is refused. Years outside `YEAR_RANGE` are named as such.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from seqchurn.errors import DataError

YEAR_RANGE = (1900, 2200)
_SHOW = 3
_COMPACT = r"\d{8}"
_ISO = r"\d{4}-\d{2}-\d{2}(?:[T ].*)?"
_NUMERIC_DATE = (
    r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?P<rest>(?:[T ].*)?)"
)
_ZONE = r".*(?:Z|[+-]\d{2}:?\d{2})"


def parse_timestamps(
    raw: pd.Series,
    valid: np.ndarray,
    line_of: Callable[[np.ndarray], np.ndarray],
    timestamp_format: str | None = None,
) -> pd.Series:
    """Naive UTC datetime64[ns] for the rows marked `valid` (NaT elsewhere).

    Args:
        raw: the timestamp column as read (text, or already datetimes from Parquet).
        valid: rows to parse; the others (null user or time) are the caller's concern.
        line_of: row positions -> file line numbers, for messages.
        timestamp_format: strptime format of every value; None infers one for the column.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        ts = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
        # Formatting a column as text costs more than reading it: only a message needs it.
        as_text = lambda: raw.astype("string")  # noqa: E731
        return _checked_years(ts.astype("datetime64[ns]", copy=False), as_text, valid, line_of)
    text = raw.astype("string").str.strip()
    rows = text[valid]
    if timestamp_format:
        parsed = _to_datetime(rows, format=timestamp_format)
    else:
        positions = np.flatnonzero(valid)
        parsed = _infer(rows, lambda pos: line_of(positions[pos]))
    values = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[ns]")
    values[valid] = parsed.to_numpy()
    out = pd.Series(values, index=raw.index)
    bad = valid & out.isna().to_numpy()
    if bad.any():
        how = (
            f"not in data.timestamp_format={timestamp_format!r}"
            if timestamp_format
            else "no one format reads the column"
        )
        _refuse_out_of_range(text, bad, line_of)
        raise DataError(
            f"{int(bad.sum())} unparsable timestamp(s) ({how}), e.g. {_examples(text, bad, line_of)}"
        )
    return _checked_years(out, text, valid, line_of)


def reads_values_alone(text: pd.Series) -> bool:
    """Whether the inferred format reads each value on its own: every value ISO 8601, or
    every value YYYYMMDD. Parsing such a column then equals parsing its parts one by one,
    which day/month inference does not promise."""
    text = text.astype("string").str.strip()
    return bool(text.str.fullmatch(_ISO).all() or text.str.fullmatch(_COMPACT).all())


def _to_datetime(text: pd.Series, **kwargs) -> pd.Series:
    try:
        parsed = pd.to_datetime(text, errors="coerce", utc=True, **kwargs)
    except (ValueError, TypeError) as err:  # a format string that is not one
        raise DataError(f"cannot use data.timestamp_format: {err}") from err
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _infer(text: pd.Series, line_of: Callable) -> pd.Series:
    zoned = text.str.fullmatch(_ZONE).to_numpy(dtype=bool)
    if zoned.any() and not zoned.all():
        raise DataError(
            "timestamps mix values with a time zone and values without one, e.g. "
            f"{_examples(text, zoned, line_of, 1)} and {_examples(text, ~zoned, line_of, 1)}; "
            "give every value a zone (or none)"
        )
    if text.str.fullmatch(_COMPACT).all():
        return _to_datetime(text, format="%Y%m%d")
    if text.str.fullmatch(_ISO).all():
        return _to_datetime(text, format="ISO8601")
    parts = text.str.extract(f"^{_NUMERIC_DATE}$")
    if parts["a"].notna().all() and len(parts):
        return _day_month(text, parts, line_of)
    # Month names and other spelled-out forms cannot be misread between day and month.
    return _to_datetime(text, format="mixed")


def _day_month(text: pd.Series, parts: pd.DataFrame, line_of: Callable) -> pd.Series:
    """D/M/Y or M/D/Y for the whole column, decided by the values that rule one out."""
    a, b = parts["a"].astype(int).to_numpy(), parts["b"].astype(int).to_numpy()
    day_first_only, month_first_only = a > 12, b > 12  # a 13 cannot be a month
    if day_first_only.any() and month_first_only.any():
        raise DataError(
            "timestamps are neither all day/month/year nor all month/day/year, e.g. "
            f"{_examples(text, day_first_only, line_of, 1)} and "
            f"{_examples(text, month_first_only, line_of, 1)}"
        )
    disagree = a != b
    if not day_first_only.any() and not month_first_only.any() and disagree.any():
        raise DataError(
            "timestamps read both as day/month/year and as month/day/year, e.g. "
            f"{_examples(text, disagree, line_of)}; say which with "
            "data.timestamp_format='%d/%m/%Y' (or '%m/%d/%Y', with the time part if any)"
        )
    day, month = (a, b) if day_first_only.any() else (b, a)
    year = parts["y"].astype(int).to_numpy()
    year = np.where(parts["y"].str.len().to_numpy() == 2, 2000 + year, year)
    iso = (
        pd.Series(year, index=text.index).astype(str).str.zfill(4)
        + "-"
        + pd.Series(month, index=text.index).astype(str).str.zfill(2)
        + "-"
        + pd.Series(day, index=text.index).astype(str).str.zfill(2)
        + parts["rest"].fillna("")
    )
    # The date part is now unambiguous; "mixed" only reads the time part, e.g. "8:26".
    return _to_datetime(iso, format="mixed")


def _checked_years(
    ts: pd.Series, text: pd.Series, valid: np.ndarray, line_of: Callable
) -> pd.Series:
    # Comparing the times with the range's ends costs a fraction of computing every year.
    lo, hi = (np.datetime64(f"{y:04d}-01-01", "ns") for y in (YEAR_RANGE[0], YEAR_RANGE[1] + 1))
    values = ts.to_numpy("datetime64[ns]")
    if ((values < lo) | (values >= hi)).any():
        _refuse_years(ts.dt.year.to_numpy(), valid, text, line_of)
    return ts


def _refuse_out_of_range(text: pd.Series, bad: np.ndarray, line_of: Callable) -> None:
    # Years pandas cannot represent (after 2262) fail to parse; say so rather than "unreadable".
    years = text.str.extract(r"(?<!\d)(\d{4})(?!\d)")[0].astype(float).to_numpy()
    _refuse_years(years, bad, text, line_of)


def _refuse_years(years: np.ndarray, rows: np.ndarray, text: pd.Series, line_of: Callable):
    lo, hi = YEAR_RANGE
    outside = rows & ((years < lo) | (years > hi))
    if outside.any():
        raise DataError(
            f"{int(outside.sum())} timestamp(s) with a year outside {lo}..{hi}, "
            f"e.g. {_examples(text, outside, line_of)}"
        )


def _examples(
    text: pd.Series | Callable[[], pd.Series], rows: np.ndarray, line_of: Callable, n: int = _SHOW
) -> str:
    text = text() if callable(text) else text
    where = np.flatnonzero(rows)[:n]
    lines = line_of(where)
    return ", ".join(f"line {int(ln)}: {text.iloc[r]!r}" for r, ln in zip(where, lines))


def config_day(value, name: str) -> int:
    """A date from the config or command line -> days since 1970-01-01.

    'YYYY-MM-DD' (or any unambiguous date string) and YYYYMMDD, which Hydra hands over as an
    int; any other number is refused rather than read as a day count (20210331 is not the
    year 57304).
    """
    text = str(value).strip()
    if isinstance(value, bool) or (isinstance(value, (int, float)) and len(text) != 8):
        raise DataError(f"{name} must be a date such as 2021-03-31, got {value!r}")
    fmt = "%Y%m%d" if text.isdigit() else None
    try:
        ts = pd.to_datetime(text, format=fmt) if fmt else pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f"{name} must be a date such as 2021-03-31, got {value!r}") from err
    if ts is pd.NaT or not YEAR_RANGE[0] <= ts.year <= YEAR_RANGE[1]:
        lo, hi = YEAR_RANGE
        raise DataError(f"{name} must be a date between {lo} and {hi}, got {value!r}")
    return int(np.datetime64(ts.date(), "D").astype(np.int64))
