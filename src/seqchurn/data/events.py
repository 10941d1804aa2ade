"""Raw event log -> validated, cleaned events frame (DESIGN section 2).

The cleaned frame has one row per event, sorted by user and time, with columns
`user_id` (str), `timestamp` (datetime64[ns]), `day` (int64, days since
1970-01-01), `event_type` (str), `amount` (float64 >= 0), `quantity` (float64 >= 0).
"""

from __future__ import annotations

import gzip
import io
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from seqchurn.data.timeline import user_time_order
from seqchurn.data.timestamps import parse_timestamps
from seqchurn.errors import DataError

CONTRACT_COLUMNS = ("user_id", "timestamp", "event_type", "amount", "quantity")
REQUIRED_COLUMNS = ("user_id", "timestamp")
AMOUNT_COLUMNS = ("amount", "quantity")  # numeric, checked; missing means 0
DEFAULT_EVENT_TYPE = "purchase"
CDNOW_RESOURCE = "cdnow_master.txt.gz"
_SHOW_BAD_ROWS = 3
# Amounts and quantities above this are data errors, not customers: 1e308 trains to NaN.
MAX_VALUE = 1e12


# Identity columns are read from CSV as text, so ids keep their leading zeros and spaces
# ("007" and "7" stay two customers); the other columns' types are inferred.
ID_COLUMNS = ("user_id", "event_id")
# Errors of a broken file: truncated or fake gzip, bad bytes, rows with too many fields.
READ_ERRORS = (ValueError, KeyError, OSError, EOFError)


def read_table(
    path: str | Path,
    usecols: list[str] | None = None,
    text_columns=ID_COLUMNS,
    read_only: bool = False,
) -> pd.DataFrame:
    """Read a CSV (optionally gzipped) or a Parquet file / partitioned directory into a frame.

    `text_columns` (the file's names of the identity columns) are read from CSV as text.
    `read_only`: a Parquet file's numeric columns may stay Arrow's memory, which cannot be
    written, for a caller that only reads them (`read_raw`: cleaning copies what it keeps).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    name = path.name.lower()
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*.parquet")):
        raise DataError(f"no .parquet file in the directory {path}")
    try:
        if path.is_dir() or name.endswith((".parquet", ".pq")):
            # Through the system allocator, not Arrow's own pool (which keeps what it frees):
            # the memory the table gives back serves the frames built next. Read only, it is
            # converted column by column, each Arrow buffer freed as it goes.
            pool = pa.system_memory_pool()
            table = pads.dataset(path, format="parquet").to_table(columns=usecols, memory_pool=pool)
            if not read_only:
                return table.to_pandas(memory_pool=pool)
            return table.to_pandas(split_blocks=True, self_destruct=True, memory_pool=pool)
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
            sep = "\t" if ".tsv" in name else ","
            return pd.read_csv(path, usecols=usecols, **csv_options(text_columns, sep))
    except READ_ERRORS as err:  # pyarrow's errors derive from these
        raise DataError(f"cannot read {path}: {first_line(err)}") from err
    raise DataError(f"unknown file type {path.suffix!r} for {path}: use .csv, .csv.gz or .parquet")


def csv_options(text_columns, sep: str = ",") -> dict:
    """read_csv's arguments: `text_columns` as the exact text of the file, and only an empty
    cell missing in any column.

    An id such as "007", "NA" or "null" stays that string, and an amount written "nan" or
    "inf" is refused as such rather than read as a missing 0.
    """
    dtype = dict.fromkeys(text_columns, str)
    return {"sep": sep, "dtype": dtype, "na_values": [""], "keep_default_na": False}


def id_sources(columns: Mapping[str, str] | None) -> list[str]:
    """The file's names of the identity columns under a `data.columns` mapping."""
    mapping = {k: v for k, v in dict(columns or {}).items() if v is not None}
    return [mapping.get(c, c) for c in ID_COLUMNS]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text ({err.reason} at byte {err.start}); save the file as UTF-8"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_cdnow(path: str | Path | None = None) -> pd.DataFrame:
    """Read the CDNOW text log (shipped copy by default) into contract columns, one row per line."""
    if path is None:
        raw = resources.files("seqchurn.resources").joinpath(CDNOW_RESOURCE).read_bytes()
        text = gzip.decompress(raw).decode()
    else:
        path = Path(path)
        if not path.exists():
            raise DataError(f"file not found: {path}")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt") as fh:
                text = fh.read()
        except READ_ERRORS as err:
            raise DataError(f"cannot read {path}: {first_line(err)}") from err
    frame = pd.read_csv(
        io.StringIO(text),
        sep=r"\s+",
        dtype={"customer_id": str, "date": str},
    )
    expected = {"customer_id", "date", "number_of_cds", "dollar_value"}
    if not expected <= set(frame.columns):
        raise DataError(
            f"not a CDNOW file: expected columns {sorted(expected)}, found {list(frame.columns)}"
        )
    return pd.DataFrame(
        {
            "user_id": frame["customer_id"],
            "timestamp": frame["date"],
            "event_type": DEFAULT_EVENT_TYPE,
            "amount": frame["dollar_value"],
            "quantity": frame["number_of_cds"],
        }
    )


def rename_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None) -> pd.DataFrame:
    """Map the file's column names onto the contract names (`columns`: contract name -> file name)."""
    columns = {k: v for k, v in dict(columns or {}).items() if v is not None}
    unknown = set(columns) - set(CONTRACT_COLUMNS)
    if unknown:
        raise DataError(
            f"unknown contract column(s) in data.columns: {sorted(unknown)}; use {list(CONTRACT_COLUMNS)}"
        )
    missing = [src for src in columns.values() if src not in frame.columns]
    if missing:
        raise DataError(
            f"column(s) {missing} named in data.columns are missing from the file; it has {list(frame.columns)}"
        )
    inverse = {src: dst for dst, src in columns.items()}
    kept = [
        c for c in frame.columns if c in inverse or (c in CONTRACT_COLUMNS and c not in columns)
    ]
    if kept == list(frame.columns) and not inverse:
        return frame
    # a frame of the same column objects: selecting and renaming would copy every column
    return pd.DataFrame({inverse.get(c, c): frame[c] for c in kept}, copy=False)


def _line_numbers(bad: np.ndarray, header_lines: int) -> str:
    rows = np.flatnonzero(bad)[:_SHOW_BAD_ROWS]
    return ", ".join(str(int(r) + 1 + header_lines) for r in rows)


def clean_events(
    frame: pd.DataFrame,
    on_bad_rows: str = "raise",
    merge_same_day: bool = False,
    header_lines: int = 1,
    timestamp_format: str | None = None,
    max_value: float = MAX_VALUE,
    carry: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict]:
    """Validate contract columns and return the cleaned frame plus a report of what was dropped.

    Args:
        frame: events with contract column names (after `rename_columns`).
        on_bad_rows: "raise" refuses rows with a null user or time; "drop" drops and counts them.
        merge_same_day: merge a user's events of one type on one day into one, amounts summed.
        header_lines: lines before the first data row, so error messages give file line numbers.
        timestamp_format: strptime format of the timestamp column; None infers it (timestamps.py).
        max_value: largest amount or quantity accepted; larger ones are refused as absurd.
        carry: columns of `frame` passed through as they are, after the contract columns
            (an event's id, say); not with `merge_same_day`, which folds rows together.
    """
    if carry and merge_same_day:
        raise ValueError("clean_events cannot carry columns through merge_same_day")
    if on_bad_rows not in ("raise", "drop"):
        raise DataError(f"data.on_bad_rows must be 'raise' or 'drop', got {on_bad_rows!r}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; the data has {list(frame.columns)} "
            "(map them with data.columns.user_id=... data.columns.timestamp=...)"
        )
    if len(frame) == 0:
        raise DataError("the event log has no rows")
    # optional columns the data really has: a model trained with them needs them at prediction
    report = {
        "rows_read": int(len(frame)),
        "input_columns": [c for c in CONTRACT_COLUMNS[2:] if c in frame.columns],
    }

    user = frame["user_id"]
    ts_raw = frame["timestamp"]
    # Text work is done once per distinct id or type, not once per row: a log has far fewer.
    user_code, user_text = _user_codes(user)
    null = (user_code < 0) | ts_raw.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(user):
        blank = pd.Series(user_text, dtype=object).str.strip().eq("").to_numpy(dtype=bool)
        null |= np.append(blank, False)[user_code]  # code -1 (a null id) reads the False
    if null.any():
        if on_bad_rows == "raise":
            raise DataError(
                f"{int(null.sum())} row(s) with a null user_id or timestamp (first at line(s) "
                f"{_line_numbers(null, header_lines)}); set data.on_bad_rows=drop to drop them"
            )
    report["dropped_null_rows"] = int(null.sum())

    def line_of(rows: np.ndarray) -> np.ndarray:
        return rows + 1 + header_lines

    timestamp = parse_timestamps(ts_raw, ~null, line_of, timestamp_format).to_numpy()
    amounts = {c: _amounts(frame, c, ~null, header_lines, max_value) for c in AMOUNT_COLUMNS}

    # By user (in the text order of the ids) then time, stably: integer keys sort fast. Each
    # column is gathered once, in that order, into the frame built once.
    rank = np.empty(len(user_text), dtype=np.int64)
    rank[np.argsort(user_text, kind="stable")] = np.arange(len(user_text))
    if null.any():
        kept = np.flatnonzero(~null)
        rows = kept[user_time_order(rank[user_code[kept]], timestamp[kept].view(np.int64))]
    else:
        kept, rows = slice(None), user_time_order(rank[user_code], timestamp.view(np.int64))
    ts = timestamp[rows]
    columns = {
        "user_id": user_text[user_code[rows]],
        "timestamp": ts,
        "day": ts.astype("datetime64[D]").astype(np.int64),
    }
    if "event_type" in frame.columns:
        type_code, type_text = _text_codes(frame["event_type"])
        # code -1 (a missing type) picks the appended default
        names = np.append(pd.Series(type_text, dtype=object).str.strip().to_numpy(), None)
        names[-1] = DEFAULT_EVENT_TYPE
        columns["event_type"] = names[type_code[rows]]
    else:
        columns["event_type"] = np.full(len(rows), DEFAULT_EVENT_TYPE, dtype=object)
    columns.update({c: values[rows] for c, values in amounts.items()})
    columns.update({c: frame[c].to_numpy()[rows] for c in carry})
    out = pd.DataFrame(columns, copy=False)  # fresh arrays: framed as they are, no block copy
    if merge_same_day:
        before = len(out)
        out = merge_same_day_events(out)
        report["merged_same_day_rows"] = before - len(out)
    report["rows_kept"] = int(len(out))
    used = np.flatnonzero(np.bincount(user_code[kept], minlength=len(user_text)))
    report["users"] = int(pd.unique(user_text[used]).size)  # ids 1 and "1" are one user
    return out, report


def merge_same_day_events(events: pd.DataFrame) -> pd.DataFrame:
    """A user's events of one type on one day as one: the earliest time, amounts and
    quantities summed. `events` are sorted by user then time, and the result keeps that order.
    """
    out = events.reset_index(drop=True)
    user, day = out["user_id"].to_numpy(), out["day"].to_numpy()
    # Sorted by user and time, one user's events of a day are adjacent: no adjacent pair of
    # the same user and day, nothing to merge (most small batches of a live service).
    if not ((user[1:] == user[:-1]) & (day[1:] == day[:-1])).any():
        return out
    return (
        out.groupby(["user_id", "day", "event_type"], sort=False, as_index=False)
        .agg(timestamp=("timestamp", "min"), amount=("amount", "sum"), quantity=("quantity", "sum"))
        .sort_values(["user_id", "timestamp"], kind="stable")
        .reset_index(drop=True)[list(out.columns)]
    )


def _text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, texts): texts[codes] is each value as text; code -1 where the value is null."""
    codes, distinct = pd.factorize(values)
    texts = pd.Series(distinct).astype("string").astype(object).to_numpy()
    return codes, texts


def _user_codes(user: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`_text_codes` of ids: the exact text of the file; numeric ids (Parquet) in decimal form."""
    if pd.api.types.is_float_dtype(user):  # integer ids stored with nulls come back as floats
        user = user.astype("Int64")
    return _text_codes(user)


def _user_ids(user: pd.Series) -> pd.Series:
    """Ids as text (`_user_codes`), null where the id is."""
    codes, texts = _user_codes(user)
    return pd.Series(np.append(texts, pd.NA)[codes], index=user.index, dtype=object)


def _amounts(
    frame: pd.DataFrame, col: str, valid: np.ndarray, header_lines: int, max_value: float
) -> np.ndarray:
    """A numeric column, checked: numbers, finite, 0 <= x <= max_value; missing means 0."""
    if col not in frame.columns:
        return np.zeros(len(frame))
    raw = frame[col]
    text = raw.astype("string").str.strip() if not pd.api.types.is_numeric_dtype(raw) else raw
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    present = raw.notna().to_numpy() & valid
    if text.dtype == "string":
        present &= text.ne("").fillna(False).to_numpy()
    missing = np.isnan(values)
    checks = ((missing & present, "non-numeric"), (np.isinf(values) & present, "infinite"))
    for bad, what in checks:
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} {what} {col} value(s) at line(s) {_line_numbers(bad, header_lines)}"
            )
    if missing.any():  # else the column itself: the caller gathers its rows into a new array
        values = np.where(missing, 0.0, values)
    for bad, what in (
        ((values < 0) & valid, "negative"),
        ((values > max_value) & valid, f"absurd (above data.max_value={max_value:g})"),
    ):
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} {what} {col} value(s), first at line(s) "
                f"{_line_numbers(bad, header_lines)}"
            )
    return values


SOURCES = ("cdnow", "events")


def read_raw(
    source: str, path: str | Path | None, columns: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The one reader of `data.source`: "cdnow" (shipped copy unless `path`) or "events" (CSV/Parquet).

    Returns raw rows under the contract column names, not yet validated; a Parquet file's
    numeric columns may be read only (`read_table`), as cleaning copies what it keeps.
    """
    if source == "cdnow":
        return read_cdnow(path)
    if source != "events":
        raise DataError(f"unknown data source {source!r}: use one of {list(SOURCES)}")
    if path is None:
        raise DataError("data.path is required for data=events (a CSV or Parquet file)")
    frame = read_table(path, text_columns=id_sources(columns), read_only=True)
    return rename_columns(frame, columns)


def load_events(
    source: str = "events",
    path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    on_bad_rows: str = "raise",
    merge_same_day: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Read (`read_raw`) and clean (`clean_events`) an event log."""
    raw = read_raw(source, path, columns)
    return clean_events(raw, on_bad_rows=on_bad_rows, merge_same_day=merge_same_day)


def read_users(
    path: str | Path, user_column: str = "user_id", attributes: list[str] | None = None
) -> pd.DataFrame:
    """Read the optional static user table: `user_id` plus categorical attribute columns as strings."""
    table = read_table(path, text_columns=[user_column])
    if user_column not in table.columns:
        raise DataError(
            f"user table {path} has no column {user_column!r}; it has {list(table.columns)}"
        )
    attributes = list(attributes) if attributes else [c for c in table.columns if c != user_column]
    missing = [c for c in attributes if c not in table.columns]
    if missing:
        raise DataError(
            f"user table {path} lacks attribute column(s) {missing}; it has {list(table.columns)}"
        )
    out = pd.DataFrame({"user_id": _user_ids(table[user_column])})
    for col in attributes:
        out[col] = table[col].astype("string").fillna("").astype(object)
    if out["user_id"].duplicated().any():
        raise DataError(f"user table {path} has duplicate user ids")
    return out
