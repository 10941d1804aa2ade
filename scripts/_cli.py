"""What every script shares: bad input -> one line on stderr, exit code 2, no run folder left behind."""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path
from typing import Callable

from seqchurn.errors import DataError


def discard_empty_run(run_dir: Path) -> None:
    """Leave no run folder behind when nothing but Hydra's own files was written."""
    written = (
        [p for p in run_dir.glob("*") if p.name not in (".hydra",) and not p.name.endswith(".log")]
        if run_dir.exists()
        else []
    )
    if run_dir.exists() and not written:
        shutil.rmtree(run_dir, ignore_errors=True)


def exit_on_bad_input(run_dir: Callable[[object], str | Path]) -> Callable:
    """Decorate a Hydra main(cfg): a DataError prints `error: ...` and exits 2."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(cfg):
            try:
                return fn(cfg)
            except DataError as err:
                discard_empty_run(Path(run_dir(cfg)))
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)

        return inner

    return wrap
