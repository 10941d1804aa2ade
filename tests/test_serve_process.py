"""The service as its users run it: a real server process, real PostgreSQL, a real browser."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

pytest.importorskip("fastapi", reason="the serve extra: pip install -e '.[serve]'")

from services import LiveServer, chromium_dom, postgres_server  # noqa: E402
from test_realtime import as_items, post_all  # noqa: E402

from seqchurn.realtime.app import create_app  # noqa: E402
from seqchurn.realtime.local import free_port, serve_process, wait_healthy  # noqa: E402
from seqchurn.realtime.service import RiskService  # noqa: E402
from seqchurn.realtime.store import Store, events, metadata  # noqa: E402

# kill-and-restart cycles: 2 here, 20 in benchmarks/faults.py (which runs this test)
KILLS = int(os.environ.get("SEQCHURN_KILLS", "2"))


def alert_keys(alerts: list[dict]) -> Counter:
    return Counter((a["user_id"], a["as_of"], a["old_tier"], a["new_tier"]) for a in alerts)


def test_a_wrong_checkpoint_stops_the_server_with_exit_2(tmp_path):
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    proc = serve_process(bogus, f"sqlite:///{tmp_path / 's.db'}", free_port(), tmp_path / "run")
    proc.wait(timeout=120)
    assert proc.returncode == 2
    err = (tmp_path / "run" / "server.out").read_text()
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot load checkpoint" in lines[0]


def test_a_bad_group_commit_wait_stops_the_server_with_exit_2(tmp_path):
    ckpt = tmp_path / "model.ckpt"  # the setting is refused before the checkpoint is read
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = serve_process(ckpt, url, free_port(), tmp_path / "run", "ingest.group_wait_ms=-1")
    proc.wait(timeout=120)
    assert proc.returncode == 2
    err = (tmp_path / "run" / "server.out").read_text()
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ingest.group_wait_ms must be in [0, 1000]" in lines[0]


def test_sigkill_mid_stream_loses_and_doubles_nothing(scored, tmp_path):
    ckpt, log = scored[0], scored[1]
    items = as_items(pd.read_csv(log, dtype={"user_id": str}))
    size = max(1, min(50, len(items) // (KILLS + 3)))  # more batches than kills
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    rng = random.Random(0)
    kill_at = sorted(rng.sample(range(1, len(batches) - 1), KILLS))
    store = tmp_path / "store.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start():
        proc = serve_process(ckpt, f"sqlite:///{store}", port, tmp_path / "run")
        wait_healthy(url, proc, tmp_path / "run")
        return proc

    proc, i, restarts, acked, kill = start(), 0, 0, [], None
    while i < len(batches):
        if kill is not None:  # the last kill came after its batch's reply, a quick one
            kill.join()
            kill = None
            proc.wait(timeout=60)
            proc, restarts = start(), restarts + 1
        if kill_at and i == kill_at[0]:  # SIGKILL while this batch is in flight
            kill_at.pop(0)
            kill = threading.Timer(rng.uniform(0.0, 0.05), proc.kill)
            kill.start()
        try:
            reply = httpx.post(f"{url}/events", json={"events": batches[i]}, timeout=60)
            reply.raise_for_status()
            acked.append(reply.json())
            i += 1
        except httpx.TransportError:  # not acknowledged: restart and send it again
            if kill is not None:
                kill.join()
                kill = None
            proc.wait(timeout=60)
            proc, restarts = start(), restarts + 1
    swept = httpx.post(f"{url}/sweep", timeout=120).json()
    alerts = httpx.get(f"{url}/alerts", params={"limit": 10_000}, timeout=60).json()["alerts"]
    proc.kill()
    proc.wait(timeout=60)
    assert restarts == KILLS and len(acked) == len(batches)

    engine = sa.create_engine(f"sqlite:///{store}")
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.select(events.c.event_id))]
    assert sorted(stored) == sorted(e["event_id"] for e in items)  # each once, none lost

    # The same batches through one uninterrupted service: the alerts must be the same ones.
    reference = RiskService(ckpt, Store.open(f"sqlite:///{tmp_path / 'ref.db'}"), clock="events")
    for batch in batches:
        reference.ingest(batch)
    assert reference.sweep()["alerts"] == swept["alerts"]
    expected = alert_keys(reference.alerts(limit=10_000))
    assert sum(expected.values()) > 0
    assert alert_keys(alerts) == expected


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server = postgres_server(tmp_path_factory.mktemp("pg"))
    yield server
    server.stop()


def test_the_store_runs_on_postgresql(postgres, scored, tmp_path):
    url = postgres.create_database("seqchurn_test")
    ckpt, log = scored[0], scored[1]
    frame = pd.read_csv(log, dtype={"user_id": str})
    items = as_items(frame)
    service = RiskService(ckpt, Store.open(url), clock="events")
    post_all(service, items[:-1])
    assert service.ingest(items[:100])["new"] == 0  # idempotent there too
    service.sweep()
    service.ingest([dict(items[-1], event_id="late", timestamp="2024-01-01T00:00:00")])
    assert service.sweep()["alerts"] > 0
    restarted = RiskService(ckpt, Store.open(url), clock="events")
    assert restarted.sweep()["users_rescored"] == 0
    on_postgres = alert_keys(restarted.alerts(limit=10_000))

    sqlite = RiskService(ckpt, Store.open(f"sqlite:///{tmp_path / 's.db'}"), clock="events")
    post_all(sqlite, items[:-1])
    sqlite.sweep()
    sqlite.ingest([dict(items[-1], event_id="late", timestamp="2024-01-01T00:00:00")])
    sqlite.sweep()
    assert on_postgres == alert_keys(sqlite.alerts(limit=10_000))  # same answers on both
    users = sorted(frame["user_id"].unique())
    with service.store.reading() as conn:
        day = service.today(conn)
    pg_snaps, pg_data = service.inputs(users, day)
    sl_snaps, sl_data = sqlite.inputs(users, day)
    assert pg_snaps["user_id"].tolist() == sl_snaps["user_id"].tolist()
    rows = list(range(len(pg_data)))
    for key, value in pg_data[rows].items():
        if hasattr(value, "numpy"):
            assert (value.numpy() == sl_data[rows][key].numpy()).all(), key
    metadata.drop_all(service.store.engine)


def test_the_page_shows_the_alerts_in_chromium(scored, tmp_path):
    ckpt, log = scored[0], scored[1]
    items = as_items(pd.read_csv(log, dtype={"user_id": str}))
    service = RiskService(ckpt, Store.open(f"sqlite:///{tmp_path / 's.db'}"), clock="events")
    post_all(service, items[:-1])
    service.sweep()
    service.ingest([dict(items[-1], event_id="late", timestamp="2024-01-01T00:00:00")])
    service.sweep()
    latest = service.alerts(limit=50)
    assert latest
    with LiveServer(create_app(service)) as live:
        dom = chromium_dom(f"{live.url}/", tmp_path / "profile")
    rows = dom.count('class="alert"')
    assert rows == len(latest), dom[:3000]
    for alert in latest[:5]:
        assert f'data-user="{alert["user_id"]}"' in dom
    summary = service.summary()
    for name, count in summary["tiers"].items():
        assert f"{name}: {count}" in dom
