"""Run a Python script as its own main program, then write its peak resident memory to a file.

    python benchmarks/peak.py OUT_FILE SCRIPT [ARGS ...]

A benchmark that times a script in a child process reads the child's peak from OUT_FILE:
the resource usage that wait4 returns would count the parent's peak too (report.peak_rss_mb).
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path

# A sibling in benchmarks/: Python puts a script's own folder first on its path.
from report import peak_rss_mb

if __name__ == "__main__":
    out, script, *args = sys.argv[1:]
    atexit.register(lambda: Path(out).write_text(f"{peak_rss_mb()}\n"))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
