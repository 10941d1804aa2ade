"""The real-time service on loopback: POST /events throughput, GET /risk under load, POST /sweep.

    python benchmarks/serve.py [--models lstm transformer] [--ckpt lstm=PATH transformer=PATH]
                               [--postgres-url postgresql+psycopg://USER@HOST/DB | --no-postgres]
                               [--quick] [--no-readme] [--report]

For each model (a checkpoint trained here on synthetic BG/NBD customers unless --ckpt) and
each store (a fresh SQLite file; PostgreSQL on a throwaway local server, or in fresh
databases created through --postgres-url), `scripts/serve.py` runs as a child process on a
free 127.0.0.1 port with clock=events and no background sweep, and this process measures:

a. POST /events: a synthetic log in time order, batches of 100, each POST waited for, from
   one client (half the log) then 4 concurrent ones (the other half); events/s = events /
   wall time, and the POSTs' p50/p99 latency.
b. GET /users/{id}/risk (reasons included, as served) for random stored users, one at a
   time, while a thread POSTs 100 new events every 0.1 s (1,000 events/s when the server
   keeps up; the rate reached is reported). The extra events are dated on the store's
   latest day, so the clock does not move under the reads.
c. POST /sweep: a fresh store holding N users' events, written by this process through the
   store as ingest writes them but without scoring them, then one sweep that scores every
   user (reasons included) in batches; its time is scaled to 100,000 users (N = 100,000
   unless --quick).

Every phase is bounded in requests and seconds. Results go to benchmarks/results/serve.json
and to the README between the perf-serve markers (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.realtime.local import LocalPostgres, free_port, serve_process, wait_healthy
from seqchurn.simulate.bgnbd import simulate_bgnbd

from report import README, RESULTS, ROOT, check_markers, cpu_note, performance_markers
from report import write_section

GOALS = {"events_per_s": 5000, "risk_p99_ms": 50, "sweep_s_per_100k": 60}
_SIZE_KEYS = ("train_users", "epochs", "log_users", "ingest_requests", "risk_requests",
              "sweep_users", "phase_s")  # fmt: skip
FULL = dict(zip(_SIZE_KEYS, (10_000, 2, 20_000, 600, 2000, 100_000, 120)))
QUICK = dict(zip(_SIZE_KEYS, (1000, 1, 2000, 150, 200, 2000, 30)))
BG_BATCH, BG_EVERY_S = 100, 0.1  # the concurrent writer of (b): 1,000 events/s
CLIENTS = 4  # the concurrent clients of the second ingest measure


def train_checkpoint(run_dir: Path, model: str, n_users: int, epochs: int) -> Path:
    fixed = "data=synthetic trainer.enable_progress_bar=false logger=csv".split()
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"model={model}", *fixed]
    cmd += [f"data.synthetic.n_users={n_users}", f"trainer.max_epochs={epochs}"]
    subprocess.run([*cmd, f"hydra.run.dir={run_dir}"], check=True, capture_output=True, cwd=ROOT)
    return run_dir / "checkpoints" / "best.ckpt"


def synthetic_events(n_users: int, seed: int, prefix: str) -> list[dict]:
    """BG/NBD customers as POST /events items, in time order, ids unique per prefix."""
    events, _ = simulate_bgnbd(n_users, seed=seed)
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    items = pd.DataFrame(
        {
            "event_id": f"{prefix}-" + events.index.astype(str),
            "user_id": f"{prefix}-" + events["user_id"].astype(str),
            "timestamp": np.datetime_as_string(events["timestamp"].to_numpy(), unit="s"),
            "event_type": events["event_label"],  # as data=synthetic trains on them
            "amount": events["amount"],
            "quantity": events["quantity"],
        }
    )
    return items.to_dict("records")


def _ms(seconds: list[float]) -> dict:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99]) if seconds else (np.nan,) * 2
    return {"p50_ms": float(p50), "p99_ms": float(p99), "requests": len(seconds)}


@contextmanager
def serving(ckpt: Path, store_url: str, run_dir: Path):
    """scripts/serve.py in a child process; yields its base URL once /health answers."""

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(ckpt, store_url, port, run_dir)
    try:
        wait_healthy(url, proc, run_dir)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post(client, events: list[dict]) -> dict:
    response = client.post("/events", json={"events": events})
    if response.status_code != 200:
        raise RuntimeError(f"POST /events answered {response.status_code}: {response.text[:300]}")
    return response.json()


def measure_ingest(url: str, events: list[dict], size: dict, clients: int = 1) -> dict:
    """(a) `clients` clients, batches of 100 in time order dealt round-robin, each POST waited
    for; concurrent POSTs are written together by the server (group commit)."""
    import httpx

    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    batches = batches[: size["ingest_requests"]]
    latencies, sent, lock = [], [0], threading.Lock()
    start = time.perf_counter()

    def client(j: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            for batch in batches[j::clients]:
                if time.perf_counter() - start > size["phase_s"]:
                    break
                t0 = time.perf_counter()
                _post(c, batch)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    sent[0] += len(batch)

    threads = [threading.Thread(target=client, args=(j,)) for j in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "events": sent[0],
        "seconds": wall,
        "events_per_s": sent[0] / wall,
        **_ms(latencies),
    }


def _background_writer(url: str, users: list[str], stamp: str, stop: threading.Event, out: dict):
    """POST BG_BATCH events every BG_EVERY_S seconds (or as fast as the server allows)."""
    import httpx

    rng, n, latencies, failed = random.Random(1), 0, [], []
    with httpx.Client(base_url=url, timeout=600) as client:
        start = next_at = time.perf_counter()
        while not stop.is_set():
            picks = rng.choices(users, k=BG_BATCH)
            batch = [
                {"event_id": f"bg-{n + k}", "user_id": u, "timestamp": stamp}
                for k, u in enumerate(picks)
            ]
            t0 = time.perf_counter()
            try:  # a failed write is counted and shown, not hidden by a dead thread
                _post(client, batch)
                latencies.append(time.perf_counter() - t0)
                n += BG_BATCH
            except (RuntimeError, httpx.TransportError) as err:
                failed.append(str(err).splitlines()[0][:300])
            next_at += BG_EVERY_S
            stop.wait(max(0.0, next_at - time.perf_counter()))
        out.update(events=n, events_per_s=n / (time.perf_counter() - start))
        out.update(post=_ms(latencies), failed_posts=len(failed), first_error=failed[:1])


def measure_risk(url: str, users: list[str], stamp: str, size: dict) -> dict:
    """(b) sequential GET /risk while `_background_writer` posts 1,000 events/s."""
    import httpx

    stop, background = threading.Event(), {}
    writer = threading.Thread(
        target=_background_writer, args=(url, users, stamp, stop, background), daemon=True
    )
    writer.start()
    rng, latencies, failed = random.Random(0), [], []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            time.sleep(2 * BG_EVERY_S)  # the writer is under way before the first read
            start = time.perf_counter()
            while len(latencies) + len(failed) < size["risk_requests"]:
                if time.perf_counter() - start > size["phase_s"]:
                    break
                t0 = time.perf_counter()
                response = client.get(f"/users/{rng.choice(users)}/risk")
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed.append(f"GET /risk answered {response.status_code}: {response.text}")
    finally:
        stop.set()
        writer.join()
    return {
        **_ms(latencies),
        "failed": len(failed),
        "first_error": failed[:1],
        "background": background,
    }


def measure_sweep(ckpt: Path, store_url: str, run_dir: Path, size: dict) -> dict:
    """(c) a store of N never-scored users, bulk-loaded here; the time of one POST /sweep."""
    import httpx

    from seqchurn.realtime.store import Store

    events = pd.DataFrame(synthetic_events(size["sweep_users"], seed=7, prefix="s"))
    ts = pd.to_datetime(events["timestamp"])
    events["ts_ns"] = ts.astype("datetime64[ns]").astype(np.int64)
    events["day"] = ts.to_numpy().astype("datetime64[D]").astype(np.int64)
    store, start = Store.open(store_url), time.perf_counter()
    with store.transaction() as conn:  # the events as ingest stores them, without the scoring
        store.add_events(conn, events)
    load_s = time.perf_counter() - start
    store.engine.dispose()
    with serving(ckpt, store_url, run_dir) as url, httpx.Client(base_url=url, timeout=7200) as c:
        t0 = time.perf_counter()
        response = c.post("/sweep")
        seconds = time.perf_counter() - t0
        if response.status_code != 200:
            raise SystemExit(f"POST /sweep answered {response.status_code}: {response.text}")
        users = response.json()["users_rescored"]
    scaled = seconds * 100_000 / max(users, 1)
    return dict(
        users=users, events_loaded=len(events), load_s=load_s, seconds=seconds, s_per_100k=scaled
    )


@contextmanager
def postgres(url: str | None, tmp: Path):
    """Yields a function that creates a fresh database and returns its URL (None: no server)."""
    import sqlalchemy as sa

    server = None
    if url is None:
        try:
            server = LocalPostgres(Path(tempfile.mkdtemp(prefix="pg-", dir=tmp))).start()
        except (FileNotFoundError, RuntimeError) as err:
            print(f"no PostgreSQL: {err}", file=sys.stderr)
            yield None
            return
        url = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/postgres"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    created = []

    def fresh() -> str:
        name = f"seqchurn_bench_{os.getpid()}_{len(created)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        created.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    try:
        yield fresh
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
        if server is not None:
            server.stop()


def run_one(ckpt: Path, model: str, backend: str, store_url, tmp: Path, size: dict) -> dict:
    events = synthetic_events(size["log_users"], seed=3, prefix="a")
    with serving(ckpt, store_url(), tmp / f"serve_{model}_{backend}_ab") as url:
        half = len(events) // 2
        ingest = measure_ingest(url, events[:half], size)
        grouped = measure_ingest(url, events[half:], size, clients=CLIENTS)
        stored = events[: ingest["events"]] + events[half : half + grouped["events"]]
        users = sorted({e["user_id"] for e in stored})
        risk = measure_risk(url, users, stored[-1]["timestamp"], size)
    sweep = measure_sweep(ckpt, store_url(), tmp / f"serve_{model}_{backend}_c", size)
    runs = {"ingest": ingest, "ingest_concurrent": grouped, "risk": risk, "sweep": sweep}
    return {"model": model, "store": backend, **runs}


def _writes(risk: dict) -> str:
    bg = risk["background"]
    cell = f"{bg.get('events_per_s', 0):,.0f}"
    fails = [f"{bg.get('failed_posts', 0)} POSTs", f"{risk['failed']} /risk"]
    if bg.get("failed_posts") or risk["failed"]:
        cell += f" ✗ failed: {' and '.join(fails)} (benchmarks/results/serve.json)"
    return cell


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = (
        f"model|store|POST /events events/s, 1 / {CLIENTS} clients|POST p50 / p99 ms, 1 client|"
    )
    header += "/risk p50 / p99 ms|"
    header += "writes during /risk (events/s)|sweep s per 100k users|sweep measured"
    header = header.split("|")
    goal = f"goal||≥ {GOALS['events_per_s']:,}||p99 < {GOALS['risk_p99_ms']} (LSTM, SQLite)|1,000|"
    rows = [(goal + f"< {GOALS['sweep_s_per_100k']}|").split("|")]
    for r in runs:
        a, g, b, c = r["ingest"], r["ingest_concurrent"], r["risk"], r["sweep"]
        best = max(a["events_per_s"], g["events_per_s"])
        risk_goal = r["model"] == "lstm" and r["store"] == "sqlite"
        risk_cell = f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}"
        risk_cell += f" {_mark(b['p99_ms'] < GOALS['risk_p99_ms'])}" if risk_goal else ""
        rows.append(
            [
                r["model"],
                r["store"],
                f"{a['events_per_s']:,.0f} / {g['events_per_s']:,.0f} "
                + _mark(best >= GOALS["events_per_s"]),
                f"{a['p50_ms']:.0f} / {a['p99_ms']:.0f}",
                risk_cell,
                _writes(b),
                f"{c['s_per_100k']:,.1f} {_mark(c['s_per_100k'] < GOALS['sweep_s_per_100k'])}",
                f"{c['users']:,} users in {c['seconds']:.1f} s",
            ]
        )
    return header, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lstm", "transformer"])
    parser.add_argument("--ckpt", nargs="*", default=[], help="MODEL=PATH: skip its training")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small store")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--report", action="store_true", help="README from the last results")
    args = parser.parse_args()
    if args.report:
        path = RESULTS / "serve.json"
        if not path.exists():
            print(f"error: no results to report: {path} is written by a run", file=sys.stderr)
            raise SystemExit(2)
        saved = json.loads(path.read_text())
        return report(saved["runs"], saved["settings"]["quick"])
    if not args.no_readme:  # fail now, not after the measure
        check_markers(README, performance_markers("serve"))
    size = QUICK if args.quick else FULL
    given = dict(item.split("=", 1) for item in args.ckpt)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpts = {
            m: Path(given[m])
            if m in given
            else train_checkpoint(tmp / f"train_{m}", m, size["train_users"], size["epochs"])
            for m in args.models
        }
        pg_url = None if args.no_postgres else args.postgres_url
        with nullcontext() if args.no_postgres else postgres(pg_url, tmp) as fresh_pg:
            numbers = itertools.count()
            stores = {"sqlite": lambda: f"sqlite:///{tmp / f'store_{next(numbers)}.db'}"}
            if fresh_pg is not None:
                stores["postgresql"] = fresh_pg
            for model, ckpt in ckpts.items():
                for backend, store_url in stores.items():
                    res = run_one(ckpt, model, backend, store_url, tmp, size)
                    print(json.dumps(res), flush=True)
                    runs.append(res)
    out = RESULTS / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": cpu_note(), "quick": args.quick, "sizes": size, "goals": GOALS}
    out.write_text(json.dumps({"settings": meta, "runs": runs}, indent=2))
    report(runs, args.quick, readme=not args.no_readme)


def report(runs: list[dict], quick: bool, readme: bool = True) -> None:
    """The README section of measured `runs` (also `--report`: from benchmarks/results/serve.json)."""
    header, rows = table(runs)
    lead = (
        f"Service (`python benchmarks/serve.py{' --quick' if quick else ''}`, loopback, "
        f"{cpu_note()}): scripts/serve.py in its own process; POSTs of 100 events from one "
        f"client, then from {CLIENTS} at once; /risk with reasons "
        "while a second client posts 100 events every 0.1 s; sweep time scaled to 100,000 users"
        + (" (quick run: small store, not the measure)." if quick else ".")
    )
    if readme:
        write_section("serve", lead, header, rows)
    print(lead)


if __name__ == "__main__":
    main()
