"""Replay an event log into the early-warning service (scripts/serve.py), in time order.

    python scripts/replay.py [data=cdnow | data=events data.path=FILE data.columns.user_id=...] \
        [url=http://127.0.0.1:8000] [batch_size=100] [speedup=86400] [limit_events=N]

The log is read by the project's reader (`read_raw`) and checked by `clean_events`, so a bad
log stops before anything is sent. Events go out sorted by time (ties keep file order) in
POST /events batches of `batch_size`; with `speedup` > 0 an event is sent once
(its time - the first event's time) / speedup wall seconds have passed, so a day of log
takes 86400 / speedup seconds and a batch carries the events that fell due meanwhile.

Each event's id is the log's `event_id` column when it has one; otherwise a hash of the
cleaned event (user, time, type, amount, quantity) plus its occurrence number among
identical events, so the same log always gets the same ids, the ids do not depend on the
file's row order or format, and two different logs replayed into one store do not collide.

Re-running a replay after a crash, a Ctrl-C or a timeout is safe: the server stores an
event_id once, so events it already holds come back as not new and the rest are stored.
For the same reason a batch is retried (exponential backoff) on a connection error, a
timeout, 408, 429 and 5xx, even when the server may have stored it before failing.

Exit codes: 0 done; 2 a bad log or setting, or a batch the server refused (4xx), with one
line; 1 the server unreachable or failing after `retries` tries, with one line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from _cli import exit_on_bad_input, run
from seqchurn.data.events import clean_events, first_line, id_sources, read_raw, read_table
from seqchurn.data.events import rename_columns
from seqchurn.errors import DataError

FIELDS = ("event_id", "user_id", "timestamp", "event_type", "amount", "quantity")
RETRY_STATUS = (408, 429)  # the server asks to be tried again; every 5xx too
MAX_BACKOFF_S = 30.0
# Two 64-bit keys: one 64-bit hash per event would collide about once in 4e9 pairs of a
# 10M-event log, and a collision drops an event silently as "already stored".
_HASH_KEYS = ("seqchurn-replay0", "seqchurn-replay1")


class ServerDown(Exception):
    """The server did not answer a batch after every retry (exit code 1, not bad input)."""


def _read(data: Mapping) -> tuple[pd.DataFrame, pd.Series | None]:
    """(contract rows, the log's event_id column or None), in file order."""
    if data.get("source") == "events" and data.get("path") is not None:
        # read_raw keeps only the contract columns; the same read, with event_id kept
        table = read_table(data["path"], text_columns=id_sources(data.get("columns")))
        ids = table["event_id"] if "event_id" in table.columns else None
        return rename_columns(table, data.get("columns")), ids
    return read_raw(data.get("source"), data.get("path"), data.get("columns")), None


def _hash_ids(events: pd.DataFrame) -> np.ndarray:
    """Ids from the cleaned events in time order: hash + occurrence number among equal events."""
    cols = events[["user_id", "timestamp", "event_type", "amount", "quantity"]]
    parts = [
        pd.util.hash_pandas_object(cols, index=False, hash_key=key).to_numpy() for key in _HASH_KEYS
    ]
    digest = pd.Series([f"{a:016x}{b:016x}" for a, b in zip(*parts)])
    nth = digest.groupby(digest, sort=False).cumcount().to_numpy()
    return np.array([f"{d}-{k}" for d, k in zip(digest, nth)], dtype=object)


def load_log(data: Mapping) -> pd.DataFrame:
    """The log as FIELDS plus `ts_ns` (int64), sorted by time, ties in file order.

    Timestamps are ISO 8601 text in UTC without a zone, to whole seconds unless the log
    has finer times. DataError (one line) for a log `clean_events` refuses.
    """
    raw, ids = _read(data)
    raw = raw.assign(_row=np.arange(len(raw)))
    carry = ["_row"]
    if ids is not None:
        if ids.isna().any():
            first = int(np.flatnonzero(ids.isna().to_numpy())[0])
            raise DataError(f"the log's event_id is empty on row {first + 1} (and maybe more)")
        raw["event_id"] = ids.astype("string").astype(object).to_numpy()
        carry.append("event_id")
    clean, _ = clean_events(
        raw,
        on_bad_rows=data.get("on_bad_rows", "raise"),
        timestamp_format=data.get("timestamp_format"),
        max_value=data.get("max_value", 1e12),
        carry=carry,
    )
    ts = clean["timestamp"].to_numpy().astype("datetime64[ns]")
    ts_ns = ts.astype(np.int64)
    order = np.lexsort((clean["_row"].to_numpy(), ts_ns))  # time, then file order
    clean = clean.iloc[order].reset_index(drop=True)
    ts, ts_ns = ts[order], ts_ns[order]
    if ids is None:
        clean["event_id"] = _hash_ids(clean)
    # One text form for the whole log: the server infers one format per batch.
    unit = "s" if (ts_ns % 10**9 == 0).all() else "ns"
    clean["timestamp"] = np.datetime_as_string(ts, unit=unit)
    clean["ts_ns"] = ts_ns
    return clean[[*FIELDS, "ts_ns"]]


def schedule(ts_ns: np.ndarray, batch_size: int, speedup: float | None) -> Iterator[slice]:
    """Slices of the time-sorted events, each yielded when its events are due."""
    n, i = len(ts_ns), 0
    start_wall, start_log = time.monotonic(), int(ts_ns[0]) if len(ts_ns) else 0
    while i < n:
        if not speedup:
            j = min(i + batch_size, n)
        else:
            wait = (ts_ns[i] - start_log) / 1e9 / speedup - (time.monotonic() - start_wall)
            if wait > 0:
                time.sleep(wait)
            now = start_log + int((time.monotonic() - start_wall) * speedup * 1e9)
            # a slow server falls behind the log: what fell due meanwhile goes in full batches
            due = int(np.searchsorted(ts_ns, now, side="right"))
            j = min(i + batch_size, max(due, i + 1))
        yield slice(i, j)
        i = j


def _refusal(response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    text = body.get("error") if isinstance(body, dict) else None
    return first_line(ValueError(text or response.text or response.reason_phrase))


def post_batch(client, events: list[dict], retries: int, backoff_s: float) -> dict:
    """POST one batch; DataError on a 4xx refusal, ServerDown when every retry failed."""
    import httpx

    for attempt in range(retries + 1):
        try:
            response = client.post("/events", json={"events": events})
        except httpx.TransportError as err:
            problem = f"cannot reach {client.base_url}: {first_line(err)}"
        else:
            status = response.status_code
            if status < 400:
                return response.json()
            if status < 500 and status not in RETRY_STATUS:
                raise DataError(f"HTTP {status}: {_refusal(response)}")
            problem = f"{client.base_url} answered HTTP {status}: {_refusal(response)}"
        if attempt < retries:
            time.sleep(min(backoff_s * 2**attempt, MAX_BACKOFF_S))
    raise ServerDown(f"{problem} (after {retries + 1} tries; re-running the replay is safe)")


def replay(
    log: pd.DataFrame,
    url: str,
    batch_size: int = 100,
    speedup: float | None = None,
    retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 120.0,
    progress: bool = True,
) -> dict:
    """Send `log` (load_log's frame) to `url`/events; returns the summed server answers."""
    import httpx
    from tqdm.auto import tqdm

    columns = {f: log[f].tolist() for f in FIELDS}  # Python values: JSON takes no numpy scalars
    totals = {"sent": 0, "batches": 0, "new": 0, "alerts": 0, "users_rescored": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(log), unit="event", disable=not progress, file=sys.stderr)
    with httpx.Client(base_url=url, timeout=timeout_s) as client, bar:
        for part in schedule(log["ts_ns"].to_numpy(), batch_size, speedup):
            values = (columns[f][part] for f in FIELDS)
            events = [dict(zip(FIELDS, row)) for row in zip(*values)]
            try:
                answer = post_batch(client, events, retries, backoff_s)
            except DataError as err:
                raise DataError(
                    f"the server refused events {part.start + 1}..{part.stop} (in time order), "
                    f"event_id {events[0]['event_id']!r} first: {err}"
                ) from None
            totals["sent"] += len(events)
            totals["batches"] += 1
            for key in ("new", "alerts", "users_rescored"):
                totals[key] += int(answer.get(key, 0))
            totals["as_of"] = answer.get("as_of")
            bar.update(len(events))
            bar.set_postfix(new=totals["new"], alerts=totals["alerts"], refresh=False)
    totals["seconds"] = time.perf_counter() - start
    return totals


def _check(cfg: DictConfig) -> None:
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise DataError(f"batch_size must be a whole number >= 1, got {cfg.batch_size}")
    if cfg.speedup is not None and not cfg.speedup >= 0:
        raise DataError(f"speedup must be >= 0 (0 or null: as fast as possible), got {cfg.speedup}")
    if cfg.limit_events is not None and cfg.limit_events < 1:
        raise DataError(f"limit_events must be >= 1 or null, got {cfg.limit_events}")
    if cfg.retries < 0 or cfg.backoff_s < 0 or cfg.timeout_s <= 0:
        raise DataError("retries and backoff_s must be >= 0 and timeout_s > 0")
    if not str(cfg.url).startswith(("http://", "https://")):
        raise DataError(f"url must start with http:// or https://, got {cfg.url!r}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="replay")
@exit_on_bad_input(lambda cfg: cfg.paths.output_dir)
def main(cfg: DictConfig) -> None:
    _check(cfg)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per batch
    data = OmegaConf.to_container(cfg.data, resolve=True)
    log = load_log(data)
    if cfg.limit_events is not None:
        log = log.iloc[: cfg.limit_events]
    try:
        done = replay(
            log,
            str(cfg.url).rstrip("/"),
            batch_size=cfg.batch_size,
            speedup=cfg.speedup,
            retries=cfg.retries,
            backoff_s=cfg.backoff_s,
            timeout_s=cfg.timeout_s,
            progress=cfg.progress,
        )
    except ServerDown as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(
        f"replayed {done['sent']} events in {done['batches']} batches to {cfg.url} in "
        f"{done['seconds']:.1f} s: {done['new']} new, {done['sent'] - done['new']} already "
        f"stored, {done['alerts']} alerts, scores as of {done.get('as_of')}"
    )


if __name__ == "__main__":
    run(main)
