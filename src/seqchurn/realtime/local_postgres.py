"""A throwaway PostgreSQL cluster on loopback, for the tests, the benchmark and trying the
service without a database server: initdb in a folder, trust auth, stopped and gone after.

Debian's packages put the binaries in /usr/lib/postgresql/<version>/bin. initdb refuses to
run as root, so under root the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        # No pipes: the server pg_ctl starts would hold them open and the call never return.
        subprocess.run(
            [*self.prefix, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

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
