"""A real PostgreSQL server for the tests, started by the suite itself from the machine's
binaries (`/usr/lib/postgresql/*/bin`; `.ci/run` installs them when missing).

One server per test process (each xdist worker has its own), in a temporary directory, on a free
loopback port and a unix socket in that directory, with fsync off (a crash of the test machine
loses nothing of value). Each test gets a fresh database copied from a migrated template, which
takes milliseconds. initdb and postgres refuse to run as root: as root they run as the
`postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

TEMPLATE = "imagine_template"


def find_binaries() -> Path | None:
    """The newest PostgreSQL's bin directory, or None when there is none."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running server; `stop` ends it and removes its files."""

    def __init__(self, binaries: Path) -> None:
        self._bin = binaries
        self._root = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
        self._data = self._root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres"
        self._databases = 0

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as_user, *command], check=True, capture_output=True, timeout=60, text=True
        )

    def start(self) -> None:
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self._data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self._root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=16MB",
                "-c max_connections=200",
            )
        )
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self._data),
            "-o",
            options,
            "-l",
            str(self._root / "log"),
            "-w",
            "start",
        )

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _client(self, program: str, *args: str) -> None:
        address = ("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user)
        subprocess.run(
            [str(self._bin / program), *address, *args],
            check=True,
            capture_output=True,
            timeout=60,
            text=True,
        )

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); its name."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        self._client("createdb", *(["-T", template] if template else []), name)
        return name

    def create_named(self, name: str) -> None:
        self._client("createdb", name)

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._client("dropdb", "--force", name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "stop")
        time.sleep(0.05)
        shutil.rmtree(self._root, ignore_errors=True)
