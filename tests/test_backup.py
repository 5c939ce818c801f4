"""Backups: `imagine-bot backup PATH` copies a running database consistently (WAL included),
and an upgrade copies the database before its migrations run, logging each one."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.domain import NewJob, SpendLimits
from bot.kie import ImageRequest
from bot.store import open_storage
from bot.store.database import Database
from bot.store.migrations import MIGRATIONS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _size(path: Path) -> int:
    return path.stat().st_size


def _backups(folder: Path) -> list[Path]:
    return list(folder.glob("*.bak"))


def _backup(database: Path, target: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_PATH": str(database), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bot", "backup", str(target)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_running_databases_copy_has_every_committed_job_and_is_private(
    tmp_path: Path,
) -> None:
    database = tmp_path / "imagine.db"
    store = await open_storage(database)
    try:
        for n in range(25):
            job = NewJob(n, 1, None, "2026-12-03", 1, ImageRequest(f"picture {n}", "1:1"))
            await store.jobs.reserve(job, SpendLimits(member=100))
        # Still open: the commits are in the WAL file, which a plain file copy would miss.
        assert _size(Path(f"{database}-wal")) > 0
        target = tmp_path / "copy.db"
        done = _backup(database, target, tmp_path)
        assert done.returncode == 0, done.stderr
        with sqlite3.connect(target) as copy:
            assert copy.execute("SELECT COUNT(*) FROM jobs").fetchone() == (25,)
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert copy.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600, "tokens and prompts: owner only"

        again = _backup(database, target, tmp_path)
        assert again.returncode == 1 and "exists already" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        await store.close()


async def test_a_backup_of_a_missing_database_says_so(tmp_path: Path) -> None:
    done = _backup(tmp_path / "nowhere.db", tmp_path / "copy.db", tmp_path)
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert not (tmp_path / "copy.db").exists()


async def test_an_upgrade_is_backed_up_first_and_each_migration_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    older = await Database.open(path, migrations=MIGRATIONS[:-2])
    await older.close()
    caplog.set_level(logging.INFO, logger="bot.store.database")
    database = await Database.open(path)
    await database.close()
    copy = tmp_path / f"old.db.before-v{SCHEMA_VERSION}.bak"
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION - 2,)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"backed up to {copy}" in m for m in messages), messages
    assert f"database migrated to schema version {SCHEMA_VERSION - 1}" in messages
    assert f"database migrated to schema version {SCHEMA_VERSION}" in messages


async def test_a_new_database_is_not_backed_up(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "new.db")
    await database.close()
    assert not _backups(tmp_path)
