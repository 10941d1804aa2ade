"""Read an event log in chunks of whole users, so scoring a large log keeps memory bounded.

A log sorted by user (CSV or Parquet file) is read in row batches; the rows of the last
user of a batch are held back and prepended to the next one, so every chunk holds
complete histories. A Parquet dataset directory partitioned by user is read one
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

from seqchurn.data.events import read_raw, rename_columns
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
    path: Path, chunk_rows: int, usecols: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    if _is_parquet(path):
        file = pq.ParquetFile(path)
        for batch in file.iter_batches(batch_size=chunk_rows, columns=usecols):
            yield batch.to_pandas()
    else:
        try:
            reader = pd.read_csv(path, chunksize=chunk_rows, usecols=usecols)
        except ValueError as err:
            raise DataError(f"cannot read {path}: {err}") from err
        yield from reader


def total_rows(path: str | Path) -> int | None:
    """Rows of a Parquet file or dataset from its metadata; None for a CSV (unknown without reading it)."""
    path = Path(path)
    if path.is_dir():
        return int(pads.dataset(path, format="parquet").count_rows())
    return pq.ParquetFile(path).metadata.num_rows if _is_parquet(path) else None


def is_sorted_by_user(
    path: str | Path, columns: Mapping[str, str] | None, chunk_rows: int = 1_000_000
) -> bool:
    """Whether the user column never decreases; reads that one column only."""
    user = _source_column(columns, "user_id")
    last = None
    try:
        for batch in _raw_batches(Path(path), chunk_rows, [user]):
            u = batch[user].to_numpy()
            if len(u) == 0:
                continue
            if (last is not None and u[0] < last) or bool((u[1:] < u[:-1]).any()):
                return False
            last = u[-1]
    except (TypeError, KeyError):  # mixed id types or a missing column: the full read reports it
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
        stream: True streams (the file must be sorted by user), False reads whole, "auto" streams
            a file whose user column is sorted and reads anything else whole.
    """
    file = Path(path) if source == "events" and path is not None else None
    if file is not None and file.is_dir():
        yield from _fragments(file, columns)
    elif (
        file is not None
        and file.is_file()
        and stream is not False
        and (stream is True or is_sorted_by_user(file, columns))
    ):
        yield from _stream_sorted(file, columns, chunk_rows)
    else:  # read whole: CDNOW, an unsorted file, and every missing-file or unknown-source error
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
    last_user = None
    for batch in _raw_batches(path, chunk_rows):
        batch = rename_columns(batch, columns)
        if "user_id" not in batch.columns:
            raise DataError(
                f"missing required column 'user_id'; the data has {list(batch.columns)}"
            )
        u = batch["user_id"].to_numpy()
        if len(u) and (
            (last_user is not None and u[0] < last_user) or bool((u[1:] < u[:-1]).any())
        ):
            raise DataError(
                f"{path} is not sorted by user; sort it, or set stream=false to read it whole"
            )
        if len(u):
            last_user = u[-1]
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
