"""File IO of the retention steps, every write atomic (a reader never sees half a file, an
interrupted writer leaves none)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from seqchurn.data.events import clean_events, load_events, read_table, rename_columns
from seqchurn.errors import DataError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary name in the target folder, then rename it to `path`.

    `tmp` ends in ".tmp": writers that infer a format from the suffix must be told it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private; keep the target's mode, or the usual one for a new file.
        if path.exists():
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def scratch_file(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` for a multi-pass writer, removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet (CSV when the name ends .csv), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_png(figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG, atomically (the temp name has no suffix to infer from)."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))


def read_user_table(
    path: str | Path, columns: Sequence[str] = (), what: str = "file"
) -> pd.DataFrame:
    """A Parquet or CSV table with one row per user and `user_id` as str, checked for `columns`.

    Ids read as numbers (a CSV) are written back without a decimal point, so they match
    the cleaned events' ids.
    """
    frame = read_table(path)
    missing = [c for c in ("user_id", *columns) if c not in frame.columns]
    if missing:
        raise DataError(f"{what} {path} lacks column(s) {missing}; it has {list(frame.columns)}")
    if pd.api.types.is_float_dtype(frame["user_id"]):
        frame["user_id"] = frame["user_id"].astype("Int64")
    frame["user_id"] = frame["user_id"].astype("string").astype(object)
    return frame


def read_predictions(path: str | Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a predictions file (scripts/predict.py's output), checked for `columns`."""
    return read_user_table(path, columns, what="predictions")


def read_events(
    source: str,
    path: str | Path | None,
    columns: Mapping[str, str | None] | None,
    on_bad_rows: str,
    merge_same_day: bool,
    activity_event_types: Sequence[str] | None = None,
    category_column: str | None = None,
) -> pd.DataFrame:
    """Cleaned events of a `data` config; with `category_column`, categories as event types.

    The arguments are the keys of `EVENT_SETTINGS` of a data config. With `category_column`
    only the rows of `activity_event_types` (e.g. purchases) are kept and each row's
    category replaces its event type, so `recommend` counts categories; rows without a
    category are dropped.
    """
    if category_column is None:
        events, _ = load_events(
            source, path, columns, on_bad_rows=on_bad_rows, merge_same_day=merge_same_day
        )
        return events
    if source != "events" or path is None:
        raise DataError("category_column needs data=events and data.path (CDNOW has no categories)")
    raw = read_table(path)
    if category_column not in raw.columns:
        raise DataError(
            f"category_column {category_column!r} is not in {path}; it has {list(raw.columns)}"
        )
    frame = rename_columns(raw, columns)
    keep = raw[category_column].notna().to_numpy()
    if activity_event_types and "event_type" in frame.columns:
        types = [str(t) for t in activity_event_types]
        keep &= frame["event_type"].astype(str).isin(types).to_numpy()
    frame = frame.loc[keep].assign(event_type=raw.loc[keep, category_column].astype(str).to_numpy())
    return clean_events(frame, on_bad_rows=on_bad_rows, merge_same_day=merge_same_day)[0]


# The keys of a `data` config (conf/data/) that say where and how to read its event log.
EVENT_SETTINGS = (
    "source",
    "path",
    "columns",
    "on_bad_rows",
    "merge_same_day",
    "activity_event_types",
)


def read_data_events(data: Mapping, category_column: str | None = None) -> pd.DataFrame:
    """Cleaned events of a `data` config (a plain mapping of conf/data/*.yaml)."""
    return read_events(**{k: data[k] for k in EVENT_SETTINGS}, category_column=category_column)
