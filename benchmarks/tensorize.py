"""Tensorization throughput: events -> labeled snapshots -> dataset -> one pass of batches.

    python benchmarks/tensorize.py [--events 10000000] [--users 1000000] [--reference-events 1000000]

A synthetic log (lognormal history lengths, median 5, capped at 2,000; four event types;
amounts on purchases) is cut at 12 month-end training cutoffs plus one test cutoff, and the
whole of seqchurn's path runs on it, timed by stage: reading the Parquet log, clean_events, the snapshots with labels,
the tensors of every snapshot (with the Preprocessor fitted on the training ones), and one pass
of padded, length-bucketed batches. Each size runs in a fresh process, so peak RSS is the
run's own (and memory can be checked to grow linearly with the events).

Beside it, a straightforward pandas `groupby().apply` reference computes the same sequences,
labels and RFM features user by user. It is first checked to give identical tensors on a
small log, then timed on `--reference-events`. Results go to benchmarks/results/tensorize.json
and to the README between the tensorize markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from seqchurn.data.events import clean_events, read_raw
from seqchurn.data.features import summary_features
from seqchurn.data.labels import DEFAULT_BIN_EDGES as EDGES
from seqchurn.data.labels import censor_edge, make_snapshots, tau_bin_of
from seqchurn.data.batches import make_loader
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, Preprocessor
from seqchurn.data.timeline import EventIndex

# A sibling in benchmarks/: Python puts a script's own folder first on its path.
from report import RESULTS, cpu_note, peak_rss_mb, write_section

START = pd.Timestamp("2022-01-01")
SPAN_DAYS = 1095
HORIZON = 90
MAX_LEN = 256
TYPES = np.array(["view", "cart", "purchase", "refund"])
TYPE_P = np.array([0.55, 0.2, 0.22, 0.03])
# 12 month ends whose labels end by the test cutoff, and the test cutoff itself
TEST_CUTOFF = pd.Timestamp("2024-09-30")
TRAIN_CUTOFFS = pd.date_range("2023-07-31", "2024-06-30", freq="ME")
OBS_END = pd.Timestamp("2024-12-30")


def synthetic_log(n_events: int, n_users: int, seed: int = 0) -> pd.DataFrame:
    """Raw events of `n_users` users, about `n_events` in all, sorted by user and time."""
    rng = np.random.default_rng(seed)
    # median 5; sigma sets the mean so the total comes out near n_events / n_users per user
    mean = n_events / n_users
    sigma = float(np.sqrt(2.0 * max(np.log(mean / 5.0), 0.05)))
    lengths = np.clip(np.round(rng.lognormal(np.log(5.0), sigma, n_users)), 1, 2000).astype(int)
    user = np.repeat(np.arange(n_users), lengths)
    begin = rng.uniform(0, SPAN_DAYS - 1, n_users)
    life = rng.exponential(300.0, n_users) + 1.0
    end = np.minimum(begin + life, SPAN_DAYS)
    at = begin[user] + rng.random(len(user)) * (end - begin)[user]
    order = np.lexsort((at, user))
    user, at = user[order], at[order]
    kind = rng.choice(len(TYPES), size=len(user), p=TYPE_P)
    kind[np.r_[True, user[1:] != user[:-1]]] = 2  # every history starts with a purchase
    amount = np.where(kind == 2, np.round(rng.lognormal(3.0, 0.8, len(user)), 2), 0.0)
    return pd.DataFrame(
        {
            "user_id": np.char.add("u", user.astype(str)).astype(object),
            "timestamp": START + pd.to_timedelta(np.round(at * 86400), unit="s"),
            "event_type": TYPES[kind],
            "amount": amount,
            "quantity": np.where(kind == 2, 1 + rng.poisson(0.5, len(user)), 0).astype(float),
        }
    )


def _days(ts: pd.Timestamp) -> int:
    return int((ts - pd.Timestamp("1970-01-01")).days)


def seqchurn_path(raw: pd.DataFrame | str, batch_size: int = 1024) -> tuple[dict, dict]:
    """seqchurn's tensorization, timed by stage; returns the seconds and what it built.

    `raw` is the events frame, or the path of a Parquet log to read first (stage "read").
    """
    seconds, t = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name], t = now - t, now
        peak_mb[name] = peak_rss_mb()

    peak_mb: dict[str, float] = {}

    if isinstance(raw, str):
        raw = read_raw("events", raw)
        lap("read")
    events, _ = clean_events(raw)
    del raw
    lap("clean_events")
    index = EventIndex(events, np.ones(len(events), dtype=bool))
    train_cuts, test_cut = [_days(c) for c in TRAIN_CUTOFFS], _days(TEST_CUTOFF)
    train = make_snapshots(events, train_cuts, HORIZON, test_cut, index=index)
    test = make_snapshots(events, [test_cut], HORIZON, _days(OBS_END), index=index)
    lap("snapshots")
    pre, train_set = Preprocessor.fit_transform(index, train, max_len=MAX_LEN)
    datasets = {"train": train_set, "test": pre.transform(index, test)}
    lap("tensors")
    n_batches = 0
    for ds in datasets.values():
        for batch in make_loader(ds, batch_size):
            n_batches += batch[MASK].shape[0] > 0
    lap("batches")
    seconds["total"] = sum(seconds.values())
    built = {"pre": pre, "datasets": datasets, "snapshots": {"train": train, "test": test}}
    return seconds, {**built, "batches": n_batches, "peak_mb_after": peak_mb}


def _user_reference(g: pd.DataFrame, cutoffs: list[int], obs_end: list[int]) -> list[dict]:
    """One user's snapshots the obvious way: filter, tail, diff, scan."""
    g = g.sort_values("timestamp", kind="stable")
    ts = g["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    day = ts // 86_400_000_000_000
    gap = np.r_[0.0, np.diff(ts) / 86_400e9]
    act_days = np.unique(day)
    out = []
    for c, end in zip(cutoffs, obs_end):
        upto = day <= c
        if not upto.any():
            continue
        rows = np.flatnonzero(upto)[-MAX_LEN:]
        known = act_days[act_days <= end]
        after = known[known > c]
        y = not (len(after) and after[0] <= c + HORIZON)
        tau = 0
        if not y:
            nxt = np.flatnonzero(known == after[0])[0]
            gaps = np.r_[np.diff(known[nxt:]), np.iinfo(np.int64).max]
            tau = int(known[nxt:][np.flatnonzero(gaps > HORIZON)[0]] - c)
        m = int(censor_edge(np.array([c]), obs_end=end, horizon=HORIZON, edges=EDGES)[0])
        spend = g["amount"].to_numpy()[upto].sum()
        freq = len(np.unique(day[upto]))
        out.append(
            {
                "cutoff": c,
                "event_type": g["event_type"].to_numpy()[rows],
                "numeric": np.stack(
                    [
                        g["amount"].to_numpy()[rows],
                        g["quantity"].to_numpy()[rows],
                        gap[rows],
                        ((c + 1) * 86_400e9 - ts[rows]) / 86_400e9,
                    ],
                    axis=1,
                ),
                "y": int(y),
                "tau": min(tau, m),
                "observed": tau <= m,
                "tau_bin": int(tau_bin_of(np.array([min(tau, m)]), EDGES)[0]),
                "recency_days": c - day[upto].max(),
                "frequency_days": freq,
                "monetary_mean": spend / freq,
            }
        )
    return out


def reference_path(raw: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The pandas groupby().apply reference over the same cutoffs; returns seconds and rows."""
    t = time.perf_counter()
    train_cuts, test_cut = [_days(c) for c in TRAIN_CUTOFFS], _days(TEST_CUTOFF)
    cutoffs = [*train_cuts, test_cut]
    obs_end = [test_cut] * len(train_cuts) + [_days(OBS_END)]
    per_user = raw.groupby("user_id", sort=True).apply(
        lambda g: _user_reference(g, cutoffs, obs_end), include_groups=False
    )
    rows = [dict(r, user_id=u) for u, snaps in per_user.items() for r in snaps]
    return time.perf_counter() - t, pd.DataFrame(rows)


def check_equal(raw: pd.DataFrame) -> int:
    """Assert the two paths give identical tensors on `raw`; returns the snapshots compared."""
    _, built = seqchurn_path(raw)
    _, ref = reference_path(raw)
    pre, compared = built["pre"], 0
    for split, ds in built["datasets"].items():
        snaps = built["snapshots"][split].reset_index(drop=True)
        key = ref.set_index(["user_id", "cutoff"])
        mine = key.loc[list(zip(snaps["user_id"], snaps["cutoff"]))].reset_index()
        batch = ds[np.arange(len(ds))]
        lengths = batch[MASK].sum(1).numpy()
        assert (lengths == mine["event_type"].map(len).to_numpy()).all(), "sequence lengths"
        ids = np.concatenate(mine["event_type"].to_numpy())
        want_ids = pd.Series(ids).map(pre.vocab).fillna(1).to_numpy(np.int64)
        assert torch.equal(batch[EVENT_TYPE][batch[MASK]], torch.as_tensor(want_ids)), "types"
        raw_numeric = np.concatenate(mine["numeric"].to_numpy())
        want = (np.log1p(raw_numeric).astype(np.float32) - np.float32(pre.numeric_mean)) / (
            np.float32(pre.numeric_std)
        )
        got = batch[NUMERIC][batch[MASK]].numpy()
        assert np.array_equal(got, want.astype(np.float32)), "numeric channels"
        for col in ("y", "tau", "observed", "tau_bin"):
            assert (snaps[col].to_numpy() == mine[col].to_numpy()).all(), col
        index = EventIndex(clean_events(raw)[0], np.ones(len(raw), dtype=bool))
        codes, _ = index.find_users(snaps["user_id"].to_numpy(dtype=object))
        rfm = summary_features(index, codes, snaps["cutoff"].to_numpy(), count_types=())
        for col in ("recency_days", "frequency_days", "monetary_mean"):
            np.testing.assert_allclose(rfm[col], mine[col].astype(float), rtol=1e-12, err_msg=col)
        compared += len(snaps)
    return compared


def _child(args: argparse.Namespace) -> None:
    n_events = len(pd.read_parquet(args.log, columns=["amount"]))
    if args.mode == "seqchurn":
        seconds, built = seqchurn_path(args.log)
        snaps = sum(len(s) for s in built["snapshots"].values())
        extra = {"snapshots": snaps, "batches": built["batches"]}
        extra["peak_mb_after"] = built["peak_mb_after"]
        extra["sequence_events"] = int(sum(ds.lengths.sum() for ds in built["datasets"].values()))
    else:
        total, ref = reference_path(pd.read_parquet(args.log))
        seconds, extra = {"total": total}, {"snapshots": len(ref)}
    print(
        json.dumps({"events": n_events, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra})
    )


def _run_child(mode: str, events: int, users: int, folder: str) -> dict:
    """Write the log, then time `mode` on it in a fresh process (its peak RSS is its own)."""
    log = os.path.join(folder, f"log-{events}.parquet")
    if not os.path.exists(log):
        synthetic_log(events, users, seed=0).to_parquet(log, index=False)
    cmd = [sys.executable, __file__, "--mode", mode, "--log", log]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return {"users": users, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--reference-events", type=int, default=1_000_000)
    parser.add_argument("--check-events", type=int, default=20_000)
    parser.add_argument("--mode", choices=["seqchurn", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return _child(args)

    checked = check_equal(synthetic_log(args.check_events, args.check_events // 10, seed=1))
    print(f"identical tensors, labels and RFM on {checked:,} snapshots", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.events:
            runs.append({"path": "seqchurn", **_run_child("seqchurn", n, n // 10, folder)})
            print(runs[-1], flush=True)
        ref = _run_child("reference", args.reference_events, args.reference_events // 10, folder)
        runs.append({"path": "pandas groupby().apply", **ref})
        print(runs[-1], flush=True)
    for r in runs:
        r["events_per_s"] = r["events"] / r["seconds"]["total"]
    ref_rate = runs[-1]["events_per_s"]
    result = {"checked_snapshots": checked, "runs": runs, "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tensorize.json").write_text(json.dumps(result, indent=2))

    stages = ["read", "clean_events", "snapshots", "tensors", "batches"]
    rows = []
    for r in runs:
        s = r["seconds"]
        rows.append(
            [r["path"], f"{r['events']:,}", f"{r['users']:,}", f"{r['snapshots']:,}"]
            + [f"{s[k]:.1f}" if k in s else "" for k in stages]
            + [
                f"{s['total']:.1f}",
                f"{r['events_per_s']:,.0f}",
                f"{r['events_per_s'] / ref_rate:.0f}x",
                f"{r['peak_rss_mb']:,.0f}",
            ]
        )
    header = [
        "path",
        "events",
        "users",
        "snapshots",
        *(f"{k} s" for k in stages),
        "total s",
        "events/s",
        "vs reference",
        "peak RSS (MB)",
    ]
    lead = (
        f"Tensorize (`python benchmarks/tensorize.py`, {cpu_note()}): 12 monthly training "
        f"cutoffs + 1 test cutoff, max_len {MAX_LEN}, lognormal history lengths (median 5, "
        f"max 2,000). Both paths give identical tensors, labels and RFM on {checked:,} "
        "snapshots, checked in the same run."
    )
    write_section("tensorize", lead, header, rows)


if __name__ == "__main__":
    main()
