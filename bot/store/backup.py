"""Consistent copies of a (possibly running) SQLite database, through SQLite's online backup.

A file copy of a database in WAL mode misses what is still in the `-wal` file, and may catch a
page half-written; SQLite's backup API copies a consistent snapshot, WAL included, while the
bot keeps writing. Used by `imagine-bot backup PATH` and, before any migration, by the store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

# Pages copied per step: the source is locked only for a step at a time, so a running bot's
# writes wait at most a few milliseconds (the busy timeout covers it).
PAGES_PER_STEP = 1024


class BackupError(Exception):
    """The copy could not be made; the message is one sentence for the operator."""


def backup_database(source: Path, target: Path) -> None:
    """Copy `source` into a new file `target` (readable by its owner only: the database holds
    interaction tokens and prompts). Refuses to overwrite; a failed copy leaves no file."""
    if not source.exists():
        raise BackupError(f"{source} does not exist")
    try:
        # O_EXCL: an existing file is never overwritten, even one created a moment ago.
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{target} exists already; choose a new file name") from None
    except OSError as error:
        raise BackupError(f"{target} cannot be created: {error.strerror}") from None
    os.close(descriptor)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            with contextlib.closing(sqlite3.connect(target)) as copy:
                db.backup(copy, pages=PAGES_PER_STEP)
    except sqlite3.Error as error:
        with contextlib.suppress(OSError):
            target.unlink()
        raise BackupError(f"{source} could not be copied: {error}") from None
