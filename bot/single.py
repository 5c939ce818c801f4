"""One bot process per database: a second one on the same file would submit and deliver the
same jobs twice, so it refuses to start (until a cluster mode exists).

An exclusive `flock` on a lock file beside the database, held for the life of the process; the
operating system releases it when the process ends, however it ends (even `kill -9`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.store.interfaces import DatabaseInUse

__all__ = ["DatabaseInUse", "SingleProcessLock"]


class SingleProcessLock:
    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises `DatabaseInUse` while another process holds the lock."""
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
