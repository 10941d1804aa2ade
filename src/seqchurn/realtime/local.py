"""Local processes for the tests and the benchmarks, on loopback, in a checkout of the repo:
the service (scripts/serve.py) as a child process, and a throwaway PostgreSQL cluster
(initdb in a folder, trust auth, stopped and removed after) for trying the service
without a database server.

Debian's packages put PostgreSQL in /usr/lib/postgresql/<version>/bin. initdb refuses to
run as root, so under root the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVE = Path(__file__).resolve().parents[3] / "scripts" / "serve.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(ckpt, store_url: str, port: int, run_dir: Path, *extra: str) -> subprocess.Popen:
    """scripts/serve.py in a child process: clock=events, no timed sweep, its output in
    run_dir/server.out (a file: a chatty child cannot block on a full pipe)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SERVE), f"ckpt_path={ckpt}", f"store.url={store_url}"]
    cmd += [f"port={port}", "clock=events", "sweep.interval_s=0", f"hydra.run.dir={run_dir}"]
    with open(run_dir / "server.out", "ab") as out:
        return subprocess.Popen([*cmd, *extra], stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(
    url: str, proc: subprocess.Popen | None = None, run_dir: Path | None = None, timeout=180
) -> None:
    """Return once `url`/health answers; RuntimeError (with the output of `proc` when it runs
    in `run_dir`) if it never does."""
    deadline = time.monotonic() + timeout
    while (proc is None or proc.poll() is None) and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    out = Path(run_dir) / "server.out" if run_dir is not None else None
    tail = out.read_text(errors="replace")[-2000:] if out is not None and out.exists() else ""
    raise RuntimeError(f"no answer at {url}/health in {timeout} s:\n{tail}")


class LocalPostgres:
    """`start()`, `create_database(name)` -> a store.url, `stop()`; FileNotFoundError without
    PostgreSQL's binaries."""

    def __init__(self, folder: str | Path):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL's initdb (Debian package postgresql)")
        self.bin = Path(found[-1]).parent
        self.folder, self.port = Path(folder), free_port()
        self.data = self.folder / "data"
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:  # the server's user must own its folder and reach it
            shutil.chown(self.folder, "postgres")
            for path in (self.folder, *self.folder.parents):
                if path == Path("/"):
                    break
                path.chmod(path.stat().st_mode | 0o005 | (0o050 if path == self.folder else 0))

    def _run(self, tool: str, *args: str) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would hold a pipe open and
        # the call never return.
        log = self.folder.parent / f"{self.folder.name}.tools.log"
        with open(log, "ab") as out:
            done = subprocess.run(
                [*self.prefix, str(self.bin / tool), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                cwd="/",  # a folder the postgres user may enter
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-1000:]
            raise RuntimeError(f"{tool} failed with exit code {done.returncode}:\n{tail}")

    def start(self) -> "LocalPostgres":
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-o",
            options,
            "-w",
            "start",
        )
        return self

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
