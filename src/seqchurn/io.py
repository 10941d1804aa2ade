"""File IO: every write atomic (a reader never sees half a file, an interrupted writer leaves
none, and the debris of a killed one is removed by the next writer of the same file)."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqchurn.data.events import (
    MAX_VALUE,
    clean_events,
    id_sources,
    read_raw,
    read_table,
    rename_columns,
)
from seqchurn.errors import DataError


OUTPUT_SUFFIXES = (".parquet", ".csv")
# Temp files carry the writer's pid, so a later writer of the same target can tell the
# debris of a killed run (pid gone) from a live writer's file and remove it.
_TEMP_TAG = "seqchurn-tmp"
# Open `together()` blocks, innermost last: the (temp, target) renames each one defers.
_deferred: list[list[tuple[str, Path]]] = []


def _temp_file(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    prefix = f".{path.name}.{_TEMP_TAG}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(tmp)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temp files of `path` left by writers that no longer run (SIGKILL, power loss)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{_TEMP_TAG}-*"):
        pid = tmp.name[len(path.name) + len(_TEMP_TAG) + 3 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary name in the target folder, then rename it to `path`.

    `tmp` ends in ".tmp": writers that infer a format from the suffix must be told it.
    """
    path = Path(path)
    tmp = str(_temp_file(path, ".tmp"))
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
        if _deferred:
            _deferred[-1].append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def together() -> Iterator[None]:
    """The files atomic_write writes inside this block appear at its end, all of them or none.

    A command with several outputs (a plan, its plot, its table) then leaves nothing new when
    it fails or is interrupted half-way; after a SIGKILL only temp files remain, and the next
    writer of each target removes them.
    """
    batch: list[tuple[str, Path]] = []
    _deferred.append(batch)
    try:
        yield
    except BaseException:
        _deferred.remove(batch)
        _unlink(tmp for tmp, _ in batch)
        raise
    _deferred.remove(batch)
    try:
        while batch:
            os.replace(*batch[0])
            batch.pop(0)
    finally:
        _unlink(tmp for tmp, _ in batch)


def _unlink(paths: Iterable[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def check_outputs(outputs: Sequence[str | Path], inputs: Sequence[str | Path | None]) -> None:
    """Refuse, before anything is read, outputs that would destroy an input or each other.

    Outputs must end in .parquet or .csv and not be directories; none may be (or resolve to)
    an input file, lie inside an input directory (a partitioned dataset), or repeat another.
    """
    seen: dict[Path, Path] = {}
    for out in map(Path, outputs):
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise DataError(f"output {out} must end in .parquet or .csv, not {out.suffix!r}")
        if out.is_dir():
            raise DataError(f"output {out} is a directory; name a file ending in .parquet or .csv")
        real = out.resolve()
        if real in seen:
            raise DataError(f"outputs {seen[real]} and {out} are the same file")
        seen[real] = out
        for inp in (Path(i) for i in inputs if i):
            inside = inp.is_dir() and real.is_relative_to(inp.resolve())
            if real == inp.resolve() or inside or _same_file(out, inp):
                raise DataError(f"output {out} is the input {inp}: it would be overwritten")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet (CSV when the name ends .csv), atomically; any other suffix is refused."""
    path = Path(path)
    check_outputs([path], [])
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
    timestamp_format: str | None = None,
    max_value: float = MAX_VALUE,
) -> pd.DataFrame:
    """Cleaned events of a `data` config; with `category_column`, categories as event types.

    The arguments are the keys of `EVENT_SETTINGS` of a data config. With `category_column`
    only the rows of `activity_event_types` (e.g. purchases) are kept and each row's
    category replaces its event type, so `recommend` counts categories; rows without a
    category are dropped.
    """
    clean = {
        "on_bad_rows": on_bad_rows,
        "merge_same_day": merge_same_day,
        "timestamp_format": timestamp_format,
        "max_value": max_value,
    }
    if category_column is None:
        return clean_events(read_raw(source, path, columns), **clean)[0]
    if source != "events" or path is None:
        raise DataError("category_column needs data=events and data.path (CDNOW has no categories)")
    raw = read_table(path, text_columns=id_sources(columns))
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
    return clean_events(frame, **clean)[0]


# The keys of a `data` config (conf/data/) that say where and how to read its event log.
EVENT_SETTINGS = (
    "source",
    "path",
    "columns",
    "on_bad_rows",
    "merge_same_day",
    "activity_event_types",
    "timestamp_format",
    "max_value",
)


def read_data_events(data: Mapping, category_column: str | None = None) -> pd.DataFrame:
    """Cleaned events of a `data` config (a plain mapping of conf/data/*.yaml)."""
    return read_events(**{k: data[k] for k in EVENT_SETTINGS}, category_column=category_column)


def write_predictions(frames: Iterator[pd.DataFrame], output: str | Path) -> int:
    """Write frames to `output` (Parquet, or CSV for .csv) atomically; returns the row count.

    Frames are written as they come, in one pass, so memory stays bounded by a chunk.
    """
    output = Path(output)
    csv = output.suffix.lower() == ".csv"
    rows = 0

    def write(tmp: str) -> None:
        nonlocal rows
        writer = None
        try:
            for frame in frames:
                if csv:
                    frame.to_csv(tmp, index=False, mode="a" if rows else "w", header=not rows)
                else:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table.cast(writer.schema))
                rows += len(frame)
        finally:
            if writer is not None:
                writer.close()
        if rows == 0:
            raise DataError("no eligible user at the cutoff: nobody has activity on or before it")

    atomic_write(output, write)
    return rows
