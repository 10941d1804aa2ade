"""What every script shares: bad input -> one line on stderr, exit code 2, no debris.

`run(main)` is each script's entry point: it refuses an unknown config choice before Hydra
composes anything, turns SIGTERM and SIGINT into a clean exit (the atomic writers remove
their temp files on the way out), and maps a config Hydra could not compose to exit 2.
`exit_on_bad_input` wraps the task function: a DataError or a bad config value prints
`error: ...` and exits 2, and whatever the failed run added to its run folder is removed.
"""

from __future__ import annotations

import functools
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable

from omegaconf.errors import OmegaConfBaseException

from seqchurn.errors import DataError

CONF = Path(__file__).resolve().parents[1] / "conf"
_state = {"entered": False}


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_choices(argv: list[str], conf: Path = CONF) -> None:
    """Refuse `group=name` overrides that name no file of the config group, listing the choices."""
    for arg in argv:
        key, eq, value = arg.lstrip("+").partition("=")
        group = conf / key
        # hydra/* groups also hold the plugins' options (hydra/launcher=submitit_slurm), which
        # are not files here; Hydra itself lists the choices when one is unknown.
        plugin_group = key.startswith("hydra/")
        if not eq or arg.startswith("~") or "." in key or plugin_group or not group.is_dir():
            continue
        choices = sorted(p.stem for p in group.glob("*.yaml"))
        for name in value.split(","):
            if name not in choices and name != "null":
                _fail(f"unknown {key} {name!r}; choose one of {', '.join(choices)}")


def _on_signal(signum, frame) -> None:
    # SystemExit unwinds through every `finally`, so temp files are removed before exit.
    raise SystemExit(128 + signum)


def run(main: Callable[[], object]) -> None:
    """Run a @hydra.main function as a command-line script with the rules above."""
    check_choices(sys.argv[1:])
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        main()
    except SystemExit as stop:
        # Hydra exits 1 when it cannot compose the config (bad key, bad override syntax); it
        # has printed why. A failure inside the task itself keeps its own code.
        if stop.code == 1 and not _state["entered"]:
            sys.exit(2)
        raise


def _discard_new(run_dir: Path, before: set[str]) -> None:
    """Remove what a failed run added to its run folder; the folder too if nothing else is left."""
    if not run_dir.exists():
        return
    for entry in run_dir.iterdir():
        if entry.name not in before and not entry.name.endswith(".log"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
    left = [p for p in run_dir.iterdir() if p.name != ".hydra" and not p.name.endswith(".log")]
    if not left and not (before - {".hydra"} - {p for p in before if p.endswith(".log")}):
        shutil.rmtree(run_dir, ignore_errors=True)


def exit_on_bad_input(run_dir: Callable[[object], str | Path]) -> Callable:
    """Decorate a Hydra main(cfg): a DataError or a bad config value prints one line, exits 2."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(cfg):
            _state["entered"] = True
            folder = Path(run_dir(cfg))
            before = {p.name for p in folder.iterdir()} if folder.exists() else set()
            try:
                return fn(cfg)
            except (DataError, OmegaConfBaseException) as err:
                _discard_new(folder, before)
                lines = str(err).strip().splitlines() or [type(err).__name__]
                message = lines[0]
                if "Missing mandatory value" in message:
                    key = message.rsplit(":", 1)[-1].strip()
                    message = f"missing mandatory value {key}: add {key}=... to the command"
                _fail(message)

        return inner

    return wrap
