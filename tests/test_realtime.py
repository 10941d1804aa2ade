"""The real-time service in process: store inputs equal batch inputs, idempotent ingest,
alerts written once, refusals that store nothing."""

from __future__ import annotations

import json
import random
import sqlite3

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from seqchurn.data.events import clean_events, read_cdnow  # noqa: E402
from seqchurn.data.labels import to_day  # noqa: E402
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, STATIC, SUMMARY  # noqa: E402
from seqchurn.realtime.app import create_app  # noqa: E402
from seqchurn.realtime.service import RiskService  # noqa: E402
from seqchurn.realtime.store import Store  # noqa: E402

CONTRACT = ["event_id", "user_id", "timestamp", "event_type", "amount", "quantity"]


def as_items(events: pd.DataFrame) -> list[dict]:
    """Contract events as the JSON a client posts, in time order (ties keep their order)."""
    frame = events.sort_values("timestamp", kind="stable").copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if "event_id" not in frame:
        frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame[CONTRACT].to_dict("records")


def post_all(service: RiskService, items: list[dict], batch: int = 100) -> None:
    for start in range(0, len(items), batch):
        service.ingest(items[start : start + batch])


@pytest.fixture
def make_service(scored, tmp_path):
    ckpt = scored[0]

    def make(name: str = "store.db", **kwargs) -> RiskService:
        kwargs.setdefault("clock", "events")
        return RiskService(ckpt, Store.open(f"sqlite:///{tmp_path / name}"), **kwargs)

    return make


@pytest.fixture
def log_items(scored) -> list[dict]:
    return as_items(pd.read_csv(scored[1], dtype={"user_id": str}))


def dump(path) -> str:
    """The store's whole content as SQL text: equal dumps, equal stores."""
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def _batch_tensors(scorer, events: pd.DataFrame, day: int, merge: bool) -> tuple:
    clean, _ = clean_events(events, merge_same_day=merge)
    return scorer.inputs(clean, day)


def _assert_same_inputs(a: tuple, b: tuple) -> None:
    (snaps_a, data_a), (snaps_b, data_b) = a, b
    assert snaps_a["user_id"].tolist() == snaps_b["user_id"].tolist()
    rows = list(range(len(data_a)))
    batch_a, batch_b = data_a[rows], data_b[rows]
    for key in (EVENT_TYPE, MASK, STATIC):
        assert np.array_equal(batch_a[key].numpy(), batch_b[key].numpy()), key
    for key in (NUMERIC, SUMMARY):
        np.testing.assert_allclose(batch_a[key].numpy(), batch_b[key].numpy(), atol=1e-6)


@pytest.mark.parametrize("log", ["synthetic", "cdnow"])
def test_inputs_from_the_store_equal_those_of_the_batch_pipeline(make_service, scored, log):
    service = make_service()
    if log == "cdnow":  # a purchase log whose orders span several rows: merged per day
        raw = read_cdnow()
        raw = raw[raw["user_id"].isin(raw["user_id"].unique()[:250])]
        service.merge = True
        events = clean_events(raw)[0].drop(columns="day")
    else:  # several event types, time of day, same-day events
        events = pd.read_csv(scored[1], dtype={"user_id": str})
    post_all(service, as_items(events), batch=97)
    users = sorted(events["user_id"].unique())
    last = to_day(pd.to_datetime(events["timestamp"]).max())
    for day in (last - 200, last):
        stored = service.inputs(users, day)
        batch = _batch_tensors(service.plain, events, day, service.merge)
        assert len(stored[0]) > 0
        _assert_same_inputs(stored, batch)


def test_ingest_is_idempotent_on_event_id(make_service, log_items, tmp_path):
    service = make_service()
    first = service.ingest(log_items[:150])
    assert first["new"] == 150 and first["users_rescored"] > 0
    before = dump(tmp_path / "store.db")
    again = service.ingest(log_items[:150])  # a retried request
    assert again == {**first, "new": 0, "users_rescored": 0, "alerts": 0}
    assert dump(tmp_path / "store.db") == before
    mixed = service.ingest(log_items[100:200])  # half retried, half new
    assert mixed["new"] == 50
    with service.store.reading() as conn:
        assert service.store.count_events(conn) == 200


def test_risk_is_the_same_whether_ingest_stored_the_reasons_or_not(make_service, log_items):
    stored, lazy = make_service("all.db", store_reasons=True), make_service("lazy.db")
    post_all(stored, log_items[:400])
    post_all(lazy, log_items[:400])
    users = sorted({item["user_id"] for item in log_items[300:400]})[:25]  # scored today
    with stored.store.reading() as conn:
        today = stored.today(conn)
        kept = stored.store.user_rows(conn, users)
    assert (kept["scored_day"] == today).all()  # so `stored` answers from the store
    assert all(json.loads(score)["top_reasons"] for score in kept["score"])
    with lazy.store.reading() as conn:
        rows = lazy.store.user_rows(conn, users)
    # only alerted users' reasons were written by the lazy ingest
    assert any(json.loads(score).get("top_reasons") is None for score in rows["score"])
    assert all(a["reasons"] for a in lazy.alerts(limit=10_000))
    for user in users:
        a, b = stored.risk(user), lazy.risk(user)
        assert a["top_reasons"] and a.keys() == b.keys(), user
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-5, abs=1e-6), (user, key)  # float32
            else:
                assert value == b[key], (user, key)


def test_tier_rises_alert_once_across_restarts_and_sweeps(make_service, log_items):
    service = make_service()
    post_all(service, log_items[:-1])
    service.sweep()
    # The last event moves "today" (clock=events) on: the silent users' risk grows.
    late = dict(log_items[-1], event_id="late", timestamp="2024-01-01T00:00:00")
    service.ingest([late])
    swept = service.sweep()
    assert swept["users_rescored"] > 0 and swept["alerts"] > 0
    alerts = service.alerts(limit=10_000)
    restarted = make_service()  # the same file: a new process would see just this
    assert restarted.sweep()["users_rescored"] == 0
    assert len(restarted.alerts(limit=10_000)) == len(alerts)
    keys = [(a["user_id"], a["as_of"]) for a in alerts]
    assert len(keys) == len(set(keys))
    names = service.tier_names
    for a in alerts:
        assert names.index(a["new_tier"]) < names.index(a["old_tier"])
        assert a["reasons"] and 0 <= a["p_churn"] <= 1 and a["model_version"] == service.version
    assert {a["new_tier"] for a in service.alerts(tier=names[0], limit=10_000)} <= {names[0]}
    assert len(service.alerts(since="2000-01-01T00:00:00+02:00", limit=10_000)) == len(alerts)
    assert service.alerts(since=alerts[0]["raised_at"], limit=10_000)[0] == alerts[0]
    assert service.alerts(since="2999-01-01", limit=10_000) == []


def test_http_risk_score_alerts_health_metrics_and_page(make_service, log_items):
    service = make_service()
    client = TestClient(create_app(service))
    reply = client.post("/events", json={"events": log_items[:300]})
    assert reply.status_code == 200 and reply.json()["new"] == 300
    user = log_items[0]["user_id"]
    risk = client.get(f"/users/{user}/risk").json()
    assert 0 <= risk["p_churn"] <= 1 and risk["risk_tier"] in service.tier_names
    for key in ("tau_median_days", "tau_mean_days", "s_30", "s_90", "s_180", "s_365", "segment"):
        assert key in risk
    assert risk["top_reasons"] and risk["model_version"] == service.version
    later = client.get(f"/users/{user}/risk", params={"as_of": "2030-01-01"}).json()
    assert later["as_of"] == "2030-01-01" and later["p_churn"] >= risk["p_churn"] - 0.5
    conflict = client.get(f"/users/{user}/risk", params={"as_of": "1990-01-01"})
    assert conflict.status_code == 409 and "before" in conflict.json()["error"]
    assert client.get("/users/nobody/risk").status_code == 404
    with service.store.reading() as conn:
        stored = service.store.count_events(conn)
    what_if = client.post(
        "/score", json={"events": [{"user_id": "new", "timestamp": "2021-01-01"}]}
    )
    assert what_if.status_code == 200 and what_if.json()["users"][0]["user_id"] == "new"
    with service.store.reading() as conn:
        assert service.store.count_events(conn) == stored
    assert client.get("/users/new/risk").status_code == 404
    assert client.get("/health").json() == {"status": "ok", "model_version": service.version}
    assert isinstance(client.get("/alerts").json()["alerts"], list)
    metrics = client.get("/metrics").text
    for name in (
        "seqchurn_requests_total",
        "seqchurn_request_seconds_bucket",
        "seqchurn_events_ingested_total 300.0",
        "seqchurn_alerts_raised_total",
        "seqchurn_p_churn_today_bucket",
    ):
        assert name in metrics
    page = client.get("/")
    assert page.status_code == 200 and "Latest alerts" in page.text
    body = client.get("/openapi.json").json()["paths"]["/events"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]["properties"]["events"]["items"]
    assert set(schema["required"]) == {"event_id", "user_id", "timestamp"}


BAD_REQUESTS = [
    (b"{not json", 400),
    (b'{"events": 3}', 422),
    (b'{"events": [], "extra": 1}', 422),
    (b'{"events": []}', 422),
    (b'{"events": [{"user_id": "a", "timestamp": "2021-01-01"}]}', 422),  # no event_id
    (b'{"events": [{"event_id": 1, "user_id": "a", "timestamp": "2021-01-01", "colour": 1}]}', 422),
    (b'{"events": [{"event_id": 1, "user_id": "a", "timestamp": "last week"}]}', 422),
    (b'{"events": [{"event_id": 1, "user_id": "a", "timestamp": "2099-01-01"}]}', 422),
    (
        b'{"events": [{"event_id": 1, "user_id": "a", "timestamp": "2021-01-01", "amount": -5}]}',
        422,
    ),
    (
        b'{"events": [{"event_id": 1, "user_id": "a", "timestamp": "2021-01-01", "amount": NaN}]}',
        422,
    ),
    (b'{"events": [{"event_id": 1, "user_id": "", "timestamp": "2021-01-01"}]}', 422),
    (b'{"events": [{"event_id": 1, "user_id": null, "timestamp": "2021-01-01"}]}', 422),
]


@pytest.mark.parametrize("body,status", BAD_REQUESTS)
def test_bad_events_are_refused_with_one_line_and_store_nothing(
    make_service, log_items, tmp_path, body, status
):
    service = make_service()
    client = TestClient(create_app(service))
    client.post("/events", json={"events": log_items[:50]})
    before = dump(tmp_path / "store.db")
    reply = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    message = reply.json()["error"]
    assert message and "\n" not in message
    assert dump(tmp_path / "store.db") == before
    assert client.get("/health").status_code == 200


def test_a_body_that_is_not_json_is_refused_with_415(make_service, log_items, tmp_path):
    client = TestClient(create_app(make_service()))
    client.post("/events", json={"events": log_items[:50]})
    before = dump(tmp_path / "store.db")
    body = json.dumps({"events": log_items[50:60]})
    reply = client.post("/events", content=body, headers={"content-type": "text/plain"})
    assert reply.status_code == 415 and "application/json" in reply.json()["error"]
    assert dump(tmp_path / "store.db") == before


def test_a_batch_over_the_limit_is_refused_with_413(make_service, log_items, tmp_path):
    from seqchurn.realtime.service import Limits

    client = TestClient(create_app(make_service(limits=Limits(max_batch_events=10))))
    reply = client.post("/events", json={"events": log_items[:11]})
    assert reply.status_code == 413 and "max_batch_events=10" in reply.json()["error"]


REQUIRED = ["event_id", "user_id", "timestamp"]


def _mutate(rng: random.Random, item: dict) -> object:
    """A malformed variant of a good event, or of the request around it: always refusable."""
    bad = dict(item)
    kind = rng.randrange(8)
    if kind == 0:
        del bad[rng.choice(REQUIRED)]
    elif kind == 1:
        bad[rng.choice(["x", "user", "ts", ""])] = rng.choice([1, "a", None, [], {}])
    elif kind == 2:
        bad[rng.choice(REQUIRED)] = rng.choice([None, [], {}, True, 1.5, float("inf")])
    elif kind == 3:
        bad["timestamp"] = rng.choice(
            ["2021-13-45", "yesterday", "3000-01-01", "2150-01-01", "", "x"]
        )
    elif kind == 4:
        bad[rng.choice(["amount", "quantity"])] = rng.choice([-1, -1e-9, "abc", 1e13, [1], "1,5"])
    elif kind == 5:
        return rng.choice([[bad], "events", None, 7, {"events": None}, {"evnts": [bad]}])
    elif kind == 6:
        bad["user_id"] = rng.choice([None, 3.5, [], {"id": 1}, "", "   "])
    else:
        bad["event_id"] = rng.choice([None, 1.5, [], {}, False])
    return {"events": [bad]}


def test_hundreds_of_random_malformed_requests_change_nothing(make_service, log_items, tmp_path):
    service = make_service()
    client = TestClient(create_app(service))
    client.post("/events", json={"events": log_items[:50]})
    before = dump(tmp_path / "store.db")
    rng = random.Random(0)
    good = {**log_items[60], "event_id": "fresh"}
    assert (
        TestClient(create_app(make_service("probe.db")))
        .post("/events", json={"events": [good]})
        .json()["new"]
        == 1
    )  # the event the mutations start from is itself valid
    for i in range(300):
        body = _mutate(rng, good)
        content = json.dumps(body, allow_nan=True).encode()
        if i % 4 == 0:  # cut short: bytes that are not JSON at all
            content = content[: rng.randrange(1, max(len(content) - 1, 2))] + rng.choice(
                [b"\xff", b"{", b","]
            )
        reply = client.post(
            "/events", content=content, headers={"content-type": "application/json"}
        )
        assert 400 <= reply.status_code < 500, (content, reply.text)
        assert "\n" not in reply.json()["error"]
    assert dump(tmp_path / "store.db") == before
    assert client.get("/health").status_code == 200


def test_waiting_requests_are_answered_by_their_own_group(make_service, log_items):
    """Requests queued during a write go out together in the next one, and each is answered
    when that write ends, not after a later write it had no part in."""
    import threading
    import time

    service = make_service(group_wait_s=0.05)
    write, groups, ends = service.commits.write, [], []

    def slow_write(group):
        groups.append(len(group))
        time.sleep(0.4)  # long enough for the next requests to queue behind this one
        write(group)
        ends.append(time.perf_counter())

    service.commits.write = slow_write
    batches = [log_items[i : i + 50] for i in range(0, 300, 50)]
    replied = {}

    def post(k):
        service.ingest(batches[k])
        replied[k] = time.perf_counter()

    threads = [threading.Thread(target=post, args=(k,)) for k in range(len(batches))]
    threads[0].start()
    time.sleep(0.2)  # during the first write: four requests queue
    for t in threads[1:5]:
        t.start()
    time.sleep(0.4)  # during the second write: one more
    threads[5].start()
    for t in threads:
        t.join(timeout=60)
    assert groups == [1, 4, 1]
    assert all(ends[1] <= replied[k] < ends[2] for k in range(1, 5)), (replied, ends)
    with service.store.reading() as conn:
        assert service.store.count_events(conn) == 300


def test_each_request_of_a_group_gets_its_own_counts(make_service, log_items):
    from seqchurn.realtime.groups import Pending

    service = make_service()
    first, second = log_items[:40], log_items[20:70]  # 20 events sent by both
    group = [Pending(first), Pending(second)]
    service._write_group(group)
    users = [{e["user_id"] for e in items} for items in (first, log_items[40:70])]
    assert [p.reply["new"] for p in group] == [40, 30]
    assert [p.reply["users_rescored"] for p in group] == [len(u) for u in users]
    assert all(p.reply["alerts"] == 0 for p in group)  # new users have no tier to rise from


def test_a_refused_request_leaves_its_groups_others_their_counts(make_service, log_items):
    from seqchurn.errors import DataError
    from seqchurn.realtime.groups import Pending

    service = make_service()
    bad = [dict(log_items[0], event_id="bad", amount=-1.0)]
    group = [Pending(log_items[:30]), Pending(bad), Pending(log_items[30:50])]
    service._write_group(group)
    assert isinstance(group[1].error, DataError) and group[1].reply is None
    assert [group[0].reply["new"], group[2].reply["new"]] == [30, 20]
    with service.store.reading() as conn:
        assert service.store.count_events(conn) == 50


def test_a_failed_group_write_fails_its_requests_alone(make_service, log_items):
    service = make_service()
    write = service.commits.write

    def failing(group):
        raise RuntimeError("disk full")

    service.commits.write = failing
    with pytest.raises(RuntimeError, match="disk full"):
        service.ingest(log_items[:50])
    service.commits.write = write
    assert service.ingest(log_items[:50])["new"] == 50


def test_concurrent_requests_are_written_together_once_each(make_service, log_items):
    from concurrent.futures import ThreadPoolExecutor

    service = make_service()
    # overlapping batches: every event is sent by two requests at about the same time
    batches = [log_items[i : i + 60] for i in range(0, 600, 30)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(service.ingest, batches))
    sent = {e["event_id"] for b in batches for e in b}
    assert sum(r["new"] for r in replies) == len(sent) == 630
    assert all(r["received"] == len(b) for r, b in zip(replies, batches))
    with service.store.reading() as conn:
        assert service.store.count_events(conn) == 630
    reference = make_service("one_by_one.db")
    for batch in batches:
        reference.ingest(batch)
    users = sorted({e["user_id"] for e in log_items[:600]})[::10]
    scores = [service.risk(u)["p_churn"] for u in users]
    expected = [reference.risk(u)["p_churn"] for u in users]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
