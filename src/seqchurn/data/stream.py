"""Read an event log in chunks of whole users, so scoring a large log keeps memory bounded.

A log whose users' rows are contiguous (sorted by user, or in any order of users: a log
sorted numerically by id streams too) is read in row batches; the rows of the last user of
a batch are held back and prepended to the next one, so every chunk holds complete
histories. A Parquet dataset directory partitioned by user is read one
fragment at a time. Anything else is read whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqchurn.data.events import (
    READ_ERRORS,
    first_line,
    id_sources,
    read_raw,
    rename_columns,
    csv_options,
)
from seqchurn.errors import DataError


@dataclass
class RawChunk:
    """Raw rows (contract column names) of complete users, and the file line of its first row."""

    frame: pd.DataFrame
    first_line: int


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _source_column(columns: Mapping[str, str] | None, name: str) -> str:
    return dict(columns or {}).get(name, name)


def _raw_batches(
    path: Path, chunk_rows: int, text_columns: list[str], usecols: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    try:
        if _is_parquet(path):
            file = pq.ParquetFile(path)
            for batch in file.iter_batches(batch_size=chunk_rows, columns=usecols):
                yield batch.to_pandas()
        else:
            options = csv_options(text_columns, "\t" if ".tsv" in path.name.lower() else ",")
            yield from pd.read_csv(path, chunksize=chunk_rows, usecols=usecols, **options)
    except READ_ERRORS as err:
        raise DataError(f"cannot read {path}: {first_line(err)}") from err


class _Contiguity:
    """Whether each user's rows form one run, over batches: a user seen before must not return."""

    def __init__(self) -> None:
        self.done: set = set()
        self.current = None

    def add(self, users: np.ndarray) -> bool:
        if len(users) == 0:
            return True
        runs = users[np.flatnonzero(np.r_[True, users[1:] != users[:-1]])].tolist()
        continuing = self.current is not None and runs[0] == self.current
        if self.current is not None and not continuing:
            self.done.add(self.current)
        new = runs[1:] if continuing else runs
        if len(set(new)) != len(new) or not self.done.isdisjoint(new):
            return False
        self.done.update(runs[:-1])
        self.current = runs[-1]
        return True


def total_rows(path: str | Path) -> int | None:
    """Rows of a Parquet file or dataset from its metadata; None for a CSV (unknown without reading it)."""
    path = Path(path)
    if path.is_dir():
        return int(pads.dataset(path, format="parquet").count_rows())
    return pq.ParquetFile(path).metadata.num_rows if _is_parquet(path) else None


def is_grouped_by_user(
    path: str | Path, columns: Mapping[str, str] | None, chunk_rows: int = 1_000_000
) -> bool:
    """Whether each user's rows are contiguous; reads that one column only."""
    user = _source_column(columns, "user_id")
    runs = _Contiguity()
    try:
        for batch in _raw_batches(Path(path), chunk_rows, [user], usecols=[user]):
            if not runs.add(batch[user].to_numpy()):
                return False
    except (TypeError, KeyError, DataError):  # a missing column or bad file: the full read says so
        return False
    return True


def iter_user_chunks(
    source: str,
    path: str | Path | None,
    columns: Mapping[str, str] | None = None,
    chunk_rows: int = 150_000,
    stream: str | bool = "auto",
) -> Iterator[RawChunk]:
    """Raw event rows in chunks of complete users.

    Args:
        source: "cdnow" (read whole; it is small) or "events" (CSV / Parquet file or directory).
        stream: True streams (each user's rows must be contiguous), False reads whole, "auto"
            streams a file whose users' rows are contiguous and reads anything else whole.
    """
    file = Path(path) if source == "events" and path is not None else None
    if file is not None and file.is_dir():
        yield from _fragments(file, columns)
    elif (
        file is not None
        and file.is_file()
        and stream is not False
        and (stream is True or is_grouped_by_user(file, columns))
    ):
        yield from _stream_sorted(file, columns, chunk_rows)
    else:  # read whole: CDNOW, an interleaved file, and every missing-file or unknown-source error
        yield RawChunk(read_raw(source, path, columns), 1)


def _fragments(path: Path, columns: Mapping[str, str] | None) -> Iterator[RawChunk]:
    """A Parquet dataset partitioned by user, one fragment at a time."""
    for fragment in pads.dataset(path, format="parquet").get_fragments():
        yield RawChunk(rename_columns(fragment.to_table().to_pandas(), columns), 1)


def _stream_sorted(
    path: Path, columns: Mapping[str, str] | None, chunk_rows: int
) -> Iterator[RawChunk]:
    carry: pd.DataFrame | None = None
    line = 1 if _is_parquet(path) else 2  # CSV line 1 is the header
    runs = _Contiguity()
    for batch in _raw_batches(path, chunk_rows, id_sources(columns)):
        batch = rename_columns(batch, columns)
        if "user_id" not in batch.columns:
            raise DataError(
                f"missing required column 'user_id'; the data has {list(batch.columns)}"
            )
        if not runs.add(batch["user_id"].to_numpy()):
            raise DataError(
                f"{path} is not sorted by user (a user's rows are not contiguous); sort it, "
                "or set scoring.stream=false to read it whole"
            )
        frame = batch if carry is None else pd.concat([carry, batch], ignore_index=True)
        if len(frame) == 0:
            continue
        held = frame["user_id"].to_numpy() == frame["user_id"].iloc[-1]
        start = int(np.argmax(held))  # the last user's rows are contiguous at the end
        if start > 0:
            yield RawChunk(frame.iloc[:start].reset_index(drop=True), line)
            line += start
        carry = frame.iloc[start:].reset_index(drop=True)
    if carry is not None and len(carry):
        yield RawChunk(carry, line)
