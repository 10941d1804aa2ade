"""scripts/replay.py against a live service on loopback: time order, re-runs, one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import ROOT

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from replay import load_log, schedule  # noqa: E402  (scripts/ is on the path via conftest)

from seqchurn.realtime.app import create_app  # noqa: E402
from seqchurn.realtime.service import RiskService  # noqa: E402
from seqchurn.realtime.store import Store, events  # noqa: E402

SCRIPT = ROOT / "scripts" / "replay.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(scored, tmp_path_factory):
    """The app on a fresh SQLite store, served by uvicorn in a thread: (url, store)."""
    import uvicorn

    ckpt = scored[0]
    store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}")
    service = RiskService(ckpt, store, clock="events", explain="none")
    port = _free_port()
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def small_log(scored):
    """Twenty users' events from the trained log, rows shuffled, as the contract columns."""
    log = pd.read_csv(scored[1], dtype={"user_id": str})
    users = log["user_id"].drop_duplicates().iloc[:20]
    cols = ["user_id", "timestamp", "event_type", "amount", "quantity"]
    part = log.loc[log["user_id"].isin(users), cols]
    return part.sample(frac=1.0, random_state=0).reset_index(drop=True)


def _replay(url, log_path, tmp_path, *extra):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "data=events",
        f"data.path={log_path}",
        f"url={url}",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def _stored(store, ids=None) -> pd.DataFrame:
    """Stored (event_id, ts_ns) in arrival order, of `ids` if given."""
    query = sa.select(events.c.event_id, events.c.ts_ns).order_by(events.c.seq)
    if ids is not None:
        query = query.where(events.c.event_id.in_(list(ids)))
    with store.reading() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["event_id", "ts_ns"])


def test_replaying_a_log_twice_stores_each_event_once(server, small_log, tmp_path):
    url, store = server
    path = tmp_path / "log.csv"
    small_log.to_csv(path, index=False)
    n = len(small_log)
    ids = load_log({"source": "events", "path": str(path), "columns": {}})["event_id"]
    assert ids.is_unique and len(ids) == n

    first = _replay(url, path, tmp_path, "batch_size=7")
    assert first.returncode == 0, first.stderr
    assert f"replayed {n} events" in first.stdout and f"{n} new, 0 already stored" in first.stdout
    stored = _stored(store, ids)
    assert len(stored) == n and set(stored["event_id"]) == set(ids)

    # a re-run after a crash: the same ids, nothing stored twice
    again = _replay(url, path, tmp_path, "batch_size=50")
    assert again.returncode == 0, again.stderr
    assert f"0 new, {n} already stored" in again.stdout
    assert len(_stored(store, ids)) == n


def test_events_go_out_in_time_order_with_ties_in_file_order(server, tmp_path):
    url, store = server
    stamps = ["2021-01-05 10:00", "2021-01-03", "2021-01-05 10:00", "2021-01-04", "2021-01-03"]
    log = pd.DataFrame(
        {
            "event_id": [f"order-{k}" for k in "abcde"],
            "user_id": ["u1", "u2", "u1", "u3", "u1"],
            "timestamp": stamps,
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    path = tmp_path / "order.csv"
    log.to_csv(path, index=False)
    # one event a batch: the server stores a batch's events by user, so only then does its
    # arrival order show the order they were sent in
    done = _replay(url, path, tmp_path, "batch_size=1")
    assert done.returncode == 0, done.stderr
    assert "5 new" in done.stdout and "5 batches" in done.stdout
    stored = _stored(store, log["event_id"])
    # the log's own event_id column is used; ties (b, e and a, c) keep file order
    assert stored["event_id"].tolist() == ["order-b", "order-e", "order-d", "order-a", "order-c"]


def test_a_bad_log_exits_2_with_one_line_and_sends_nothing(server, small_log, tmp_path):
    url, store = server
    before = len(_stored(store))
    bad = small_log.head(5).astype({"amount": object})
    bad.loc[3, "amount"] = "lots"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    done = _replay(url, path, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "amount" in lines[0]
    assert len(_stored(store)) == before


def test_a_batch_the_server_refuses_exits_2_with_one_line(server, tmp_path):
    url, store = server
    before = len(_stored(store))
    # far in the future: clean locally, refused by the server (limits.max_future_days)
    log = pd.DataFrame({"user_id": ["f1", "f2"], "timestamp": ["2199-01-01", "2199-01-02"]})
    path = tmp_path / "future.csv"
    log.to_csv(path, index=False)
    done = _replay(url, path, tmp_path, "retries=0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 422" in lines[0] and "refused events 1..2" in lines[0]
    assert len(_stored(store)) == before


def test_an_unreachable_server_exits_1_with_one_line(small_log, tmp_path):
    path = tmp_path / "log.csv"
    small_log.head(3).to_csv(path, index=False)
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    done = _replay(url, path, tmp_path, "retries=1", "backoff_s=0")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0] and "after 2 tries" in lines[0]


def test_schedule_paces_by_log_time_and_batches_when_unpaced():
    ts = (np.array([0.0, 0.0, 0.1, 0.2, 0.4]) * 1e9).astype(np.int64)
    assert [(s.start, s.stop) for s in schedule(ts, 2, None)] == [(0, 2), (2, 4), (4, 5)]
    start = time.monotonic()
    sent = [(s.start, s.stop, time.monotonic() - start) for s in schedule(ts, 10, 2.0)]
    # two log seconds per wall second: the last event (0.4 s into the log) is due at 0.2 s
    assert sent[0][:2] == (0, 2) and sent[-1][1] == 5
    assert 0.19 <= sent[-1][2] < 1.0
    for lo, hi, at in sent:  # nothing is sent before it is due
        assert ts[hi - 1] / 1e9 / 2.0 <= at + 1e-3
