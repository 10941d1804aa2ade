"""Predict throughput and peak memory on synthetic logs of growing size.

    python benchmarks/predict.py [--users 100000 1000000] [--models lstm transformer]
                                 [--explain grad_x_input none] [--device cpu]

Writes a Parquet log sorted by user for each size (BG/NBD customers, simulated in blocks of
100,000 so the generator's own memory stays small) and a 100-user log, trains each model
once on 10,000 synthetic users, then runs `scripts/predict.py` on each log in a fresh
process and reads its wall time and peak resident memory. Users/s is counted as users /
(wall time - wall time of the same command on the 100-user log), i.e. without the start-up
(imports, checkpoint load). Results go to benchmarks/results/predict.json and to the README
between the perf-predict markers (benchmarks/report.py).
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
from report import README, RESULTS, ROOT, check_markers, cpu_note, performance_markers
from report import write_section

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


# The child runs scripts/predict.py as its main program, then writes its own peak RSS: the
# resource usage wait4 returns would count this process's peak too (report.peak_rss_mb).
# Started with -c from the repository's root, the child finds benchmarks.report there.
_RUN_AND_WRITE_PEAK = """
import atexit, runpy, sys
from benchmarks.report import peak_rss_mb
out, script = sys.argv[1:3]
atexit.register(lambda: open(out, "w").write(f"{peak_rss_mb()}\\n"))
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def run_predict(ckpt: Path, log: Path, out_dir: Path, device: str, explain: str) -> dict:
    """Predict in a child process, which writes its own peak RSS (`_RUN_AND_WRITE_PEAK`)."""
    peak = out_dir / "peak_rss_mb"
    cmd = [
        sys.executable,
        "-c",
        _RUN_AND_WRITE_PEAK,
        str(peak),
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
        # the script's own folder, which Python would put first had it been started itself
        path = [str(ROOT / "scripts"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        proc.wait()
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"predict failed: {err.read().decode()[-2000:]}")
    rows = pq.ParquetFile(out_dir / "pred.parquet").metadata.num_rows
    return {"peak_rss_mb": float(peak.read_text()), "seconds": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--models", nargs="+", default=["lstm", "transformer"])
    parser.add_argument("--explain", nargs="+", default=["grad_x_input", "none"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    if not args.no_readme:  # fail now, not after the measure
        check_markers(README, performance_markers("predict"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = [100, *args.users]
        logs = {n: (tmp / f"log_{n}.parquet") for n in sizes}
        events = {n: write_log(logs[n], n) for n in sizes}
        for model in args.models:
            ckpt = train_checkpoint(tmp / f"train_{model}", model)
            for explain in args.explain:
                base = None
                for n in sizes:
                    out = tmp / f"pred_{model}_{explain}_{n}"
                    res = run_predict(ckpt, logs[n], out, device=args.device, explain=explain)
                    if base is None:
                        base = res
                        continue
                    net = res["seconds"] - base["seconds"]
                    res.update(model=model, explain=explain, users=n, events=events[n])
                    res.update(startup_s=base["seconds"], users_per_s=res["rows"] / net)
                    print(json.dumps(res), flush=True)
                    results.append(res)
    smallest = {}
    for r in results:
        key = (r["model"], r["explain"])
        smallest.setdefault(key, r["peak_rss_mb"])
        r["peak_vs_smallest"] = r["peak_rss_mb"] / smallest[key]
    out = RESULTS / "predict.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "machine": cpu_note()}
    out.write_text(json.dumps({"settings": meta, "runs": results}, indent=2))
    header = ["model", "reasons", "users", "events", "seconds", "start-up s", "users/s"]
    header += ["peak RSS (MB)", "vs smallest"]
    rows = [
        [
            r["model"],
            r["explain"],
            f"{r['users']:,}",
            f"{r['events']:,}",
            f"{r['seconds']:.1f}",
            f"{r['startup_s']:.1f}",
            f"{r['users_per_s']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['peak_vs_smallest']:.2f}x",
        ]
        for r in results
    ]
    lead = (
        f"Predict (`python benchmarks/predict.py`, device {args.device}, {cpu_note()}): "
        "Parquet log sorted by user -> prediction file, in a fresh process; users/s = users / "
        "(seconds - the same command's seconds on a 100-user log)."
    )
    if not args.no_readme:
        write_section("predict", lead, header, rows)
    print(lead)


if __name__ == "__main__":
    main()
