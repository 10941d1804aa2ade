"""Kill-and-restart cycles of the real-time service: acknowledged events lost or duplicated.

    python benchmarks/faults.py [--kills 20]

Runs tests/test_serve_process.py::test_sigkill_mid_stream_loses_and_doubles_nothing with
`--kills` cycles instead of CI's 2: scripts/serve.py on SQLite takes a synthetic log in
batches, is killed with SIGKILL while a batch is in flight, restarts, and the client sends
again every batch not acknowledged. The test passes only when every event is stored exactly
once and the alerts equal those of an uninterrupted service fed the same batches.
Results go to benchmarks/results/faults.json and to the README between the perf-faults markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from report import README, RESULTS, ROOT, check_markers, cpu_note, performance_markers
from report import write_section

TEST = "tests/test_serve_process.py::test_sigkill_mid_stream_loses_and_doubles_nothing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    if not args.no_readme:
        check_markers(README, performance_markers("faults"))
    env = {**os.environ, "SEQCHURN_KILLS": str(args.kills)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    passed = done.returncode == 0
    result = {"kills": args.kills, "passed": passed, "seconds": seconds, "machine": cpu_note()}
    if not passed:
        result["output"] = done.stdout[-4000:]
    (RESULTS / "faults.json").write_text(json.dumps(result, indent=2))
    verdict = (
        "every acknowledged event stored exactly once, alerts equal to an uninterrupted run"
        if passed
        else "FAILED: see benchmarks/results/faults.json"
    )
    row = [f"{args.kills}", "SQLite", verdict, f"{seconds:.0f}"]
    lead = (
        f"Faults (`python benchmarks/faults.py --kills {args.kills}`, {cpu_note()}): "
        "scripts/serve.py killed with SIGKILL mid-stream and restarted, the unacknowledged "
        "batches sent again (the test CI runs with 2 kills)."
    )
    if not args.no_readme:
        write_section("faults", lead, ["kills", "store", "result", "seconds"], [row])
    print(lead, "\n", row)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
