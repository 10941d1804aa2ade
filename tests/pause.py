"""Run a script that stops inside the atomic write of one of its outputs, so a test can
signal it exactly there (tests/test_interrupt.py).

    python tests/pause.py NAME READY SCRIPT [ARGS...]

When the temp file of the output named NAME is fully written, READY is created and the
process sleeps until it is signalled.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

import seqchurn.io as io

name, ready, script = sys.argv[1:4]
original = io.atomic_write


def paused_write(path, write):
    def write_then_wait(tmp: str) -> None:
        write(tmp)
        if Path(path).name == name:
            Path(ready).touch()
            time.sleep(600)

    return original(path, write_then_wait)


io.atomic_write = paused_write
sys.argv = [script, *sys.argv[4:]]
sys.path.insert(0, str(Path(script).parent))
runpy.run_path(script, run_name="__main__")
