"""DDP against one process: test AUROC of 2 gloo processes vs the seed spread of 1 process.

    python benchmarks/ddp.py [--users 10000] [--seeds 0 1 2] [--devices 2]

Trains `scripts/train.py data=synthetic` on `users` BG/NBD customers once per seed in one
process and once with trainer=ddp on `devices` CPU processes (seed 0), and reports
|AUROC(DDP) - mean AUROC(1 process)| against the 1-process standard deviation over seeds.
DDP changes the batches each step sees (each rank draws its own rows and gradients are
averaged), so the question is whether the difference stays within seed noise.
Writes benchmarks/results/ddp.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from report import RESULTS, ROOT, cpu_note


def test_auroc(run_dir: str, users: int, seed: int, *extra: str) -> tuple[float, float]:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "data=synthetic",
        f"data.synthetic.n_users={users}",
        f"seed={seed}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"train failed: {proc.stderr[-2000:]}")
    return float(re.search(r"test/auroc=([\d.]+)", proc.stdout)[1]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = [test_auroc(f"{tmp}/one{s}", args.users, s) for s in args.seeds]
        ddp = test_auroc(
            f"{tmp}/ddp",
            args.users,
            args.seeds[0],
            "trainer=ddp",
            "trainer.accelerator=cpu",
            f"trainer.devices={args.devices}",
        )
    aurocs = np.array([a for a, _ in single])
    std = float(aurocs.std(ddof=1)) if len(aurocs) > 1 else float("nan")
    gap = abs(ddp[0] - float(aurocs.mean()))
    result = {
        "machine": cpu_note(),
        "users": args.users,
        "single_process_auroc": aurocs.tolist(),
        "single_process_seconds": [s for _, s in single],
        "single_process_std": std,
        "ddp_processes": args.devices,
        "ddp_auroc": ddp[0],
        "ddp_seconds": ddp[1],
        "abs_gap": gap,
        "gap_over_std": gap / std if std > 0 else float("nan"),
        "within_2_std": bool(gap <= 2 * std),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ddp.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
