"""Real services for the tests, started and stopped by them on loopback in temp folders.

PostgreSQL and Chromium come from Debian's packages (.ci/run installs them). Where they are
missing a test is skipped, except when SEQCHURN_REQUIRE_SERVICES=1 (as in CI): then a
missing service fails the test, so CI can never go green by skipping it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def missing(what: str) -> None:
    if os.environ.get("SEQCHURN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here (SEQCHURN_REQUIRE_SERVICES=1) but not installed")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer /health in {timeout} s")


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb in a temp folder, loopback only, trust auth."""

    def __init__(self, folder: Path):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            missing("PostgreSQL (Debian package postgresql)")
        self.bin = Path(bins[-1]).parent
        self.folder, self.port = folder, free_port()
        self.data = folder / "data"
        # initdb refuses to run as root: the cluster belongs to the postgres user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(folder, "postgres")
            folder.chmod(0o755)
            for parent in folder.parents:  # the postgres user must reach its folder
                if str(parent).startswith(("/tmp", "/var/tmp")) and parent != Path("/tmp"):
                    parent.chmod(parent.stat().st_mode | 0o005)

    def _run(self, *args: str) -> None:
        # No pipes: the server started by pg_ctl would hold them open and the call never returns.
        subprocess.run(
            [*self.prefix, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> "PostgresServer":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.folder / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )
        return self

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            name,
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )


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


def serve_process(ckpt, store_url: str, port: int, run_dir: Path, *extra: str) -> subprocess.Popen:
    """scripts/serve.py in its own process (clock=events, no timed sweep)."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "serve.py"),
        f"ckpt_path={ckpt}",
        f"store.url={store_url}",
        f"port={port}",
        "clock=events",
        "sweep.interval_s=0",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
