"""Peak memory and speed of predict on synthetic logs of growing size (bounded-memory scoring).

    python benchmarks/predict.py [--users 100000 1000000] [--model lstm] [--device cpu]

Writes a Parquet log sorted by user for each size (BG/NBD customers, simulated in blocks of
100,000 so the generator's own memory stays small), trains a small model once on 10,000
synthetic users, then runs `scripts/predict.py` on each log in a fresh process and reads
its peak resident memory. Results go to benchmarks/results/predict_memory.json and to the
README between the predict-memory markers (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seqchurn.simulate.bgnbd import simulate_bgnbd

# A sibling in benchmarks/: Python puts a script's own folder first on its path.
from report import (
    PREDICT_MARKERS,
    README,
    RESULTS,
    ROOT,
    check_markers,
    predict_markdown,
    replace_between_markers,
)

BLOCK = 100_000


def write_log(path: Path, n_users: int, seed: int = 0) -> int:
    """A Parquet log of `n_users` synthetic customers sorted by user id; returns its event count."""
    writer, n_events = None, 0
    for block in range((n_users + BLOCK - 1) // BLOCK):
        size = min(BLOCK, n_users - block * BLOCK)
        events, _ = simulate_bgnbd(size, seed=seed * 10_000 + block)
        events["user_id"] = f"b{block:04d}-" + events["user_id"].astype(str)
        events["event_type"] = events["event_label"]  # as data=synthetic trains on them
        events = events.sort_values(["user_id", "timestamp"], kind="stable")
        columns = ["user_id", "timestamp", "event_type", "amount", "quantity"]
        table = pa.Table.from_pandas(events[columns], preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        n_events += len(events)
    writer.close()
    return n_events


def train_checkpoint(run_dir: Path, model: str) -> Path:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        f"model={model}",
        "data=synthetic",
        "data.synthetic.n_users=10000",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return run_dir / "checkpoints" / "best.ckpt"


def run_predict(ckpt: Path, log: Path, out_dir: Path, device: str, explain: str) -> dict:
    """Predict in a child process; its peak RSS comes from wait4's resource usage."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "predict.py"),
        f"ckpt_path={ckpt}",
        "data=events",
        f"data.path={log}",
        "cutoff=2021-03-31",
        f"output={out_dir / 'pred.parquet'}",
        "scoring.progress=false",
        f"scoring.accelerator={device}",
        f"scoring.explain={explain}",
        f"hydra.run.dir={out_dir}",
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block on it
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"predict failed: {err.read().decode()[-2000:]}")
    rows = pq.ParquetFile(out_dir / "pred.parquet").metadata.num_rows
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--explain", default="grad_x_input")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    if not args.no_readme:  # fail now, not after the measure
        check_markers(README, PREDICT_MARKERS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = train_checkpoint(tmp / "train", args.model)
        for n in args.users:
            log = tmp / f"log_{n}.parquet"
            n_events = write_log(log, n)
            res = run_predict(
                ckpt, log=log, out_dir=tmp / f"pred_{n}", device=args.device, explain=args.explain
            )
            res.update(users=n, events=n_events, users_per_s=res["rows"] / res["seconds"])
            print(json.dumps(res))
            results.append(res)
    base = results[0]["peak_rss_mb"]
    for r in results:
        r["peak_vs_smallest"] = r["peak_rss_mb"] / base
    out = RESULTS / "predict_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": args.model,
        "device": args.device,
        "explain": args.explain,
        "cpus": os.cpu_count(),
    }
    out.write_text(json.dumps({"settings": meta, "runs": results}, indent=2))
    markdown = predict_markdown(results, meta)
    if not args.no_readme:
        replace_between_markers(README, PREDICT_MARKERS, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
