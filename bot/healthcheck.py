"""`python -m bot.healthcheck`: exit 0 while the running bot is alive (the Dockerfile's
HEALTHCHECK).

It follows the same settings as the bot: `/healthz` on `WEBHOOK_PORT`, at `WEBHOOK_HOST` (or
loopback when the bot listens on every address or chooses by itself). With `WEBHOOK_PORT=0`
there is no web server, so it checks the heartbeat file the bot then touches beside its
database instead. Liveness only: a Discord outage is no reason to restart the container.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bot.settings import SettingsError, read_one

HEARTBEAT_EVERY = 15.0  # seconds between the bot's touches of the heartbeat file
HEARTBEAT_STALE = 90.0  # no touch for this long: the bot's loop is stuck or gone
_ANY_ADDRESS = ("", "0.0.0.0", "::", "[::]")


def heartbeat_path(database: Path) -> Path:
    return database.with_name(database.name + ".alive")


def touch(path: Path) -> None:
    path.touch(mode=0o600, exist_ok=True)
    os.utime(path)


def main() -> int:
    try:  # read as the bot reads them, defaults included
        port: int = read_one("WEBHOOK_PORT", os.environ)
        host: str = read_one("WEBHOOK_HOST", os.environ)
        database: Path = read_one("DATABASE_PATH", os.environ)
    except SettingsError:
        return 1  # the bot would not have started with these
    if port == 0:
        try:
            age = time.time() - heartbeat_path(database).stat().st_mtime
        except OSError:
            return 1
        return 0 if age < HEARTBEAT_STALE else 1
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
