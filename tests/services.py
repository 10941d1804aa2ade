"""Real services for the tests, started and stopped by them on loopback in temp folders.

PostgreSQL and Chromium come from Debian's packages (.ci/run installs them). Where they are
missing a test is skipped, except when SEQCHURN_REQUIRE_SERVICES=1 (as in CI): then a
missing service fails the test, so CI can never go green by skipping it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from seqchurn.realtime.local import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def missing(what: str) -> None:
    if os.environ.get("SEQCHURN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here (SEQCHURN_REQUIRE_SERVICES=1) but not installed")
    pytest.skip(f"{what} is not installed")


def postgres_server(folder: Path):
    """A started throwaway PostgreSQL (seqchurn.realtime.local_postgres)."""
    from seqchurn.realtime.local import LocalPostgres

    try:
        return LocalPostgres(folder).start()
    except FileNotFoundError:
        missing("PostgreSQL (Debian package postgresql)")


class LiveServer:
    """uvicorn serving an app in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        wait_healthy(self.url, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def chromium_dom(url: str, profile: Path, budget_ms: int = 10_000) -> str:
    """The page's DOM after its scripts ran, as headless Chromium renders it."""
    if not Path(CHROMIUM).exists():
        missing("Chromium (Debian package chromium)")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout
