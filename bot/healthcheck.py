"""`python -m bot.healthcheck`: exit 0 when the running bot's /healthz says it is healthy.

Used by the Dockerfile's HEALTHCHECK; reads the same WEBHOOK_PORT as the bot.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("WEBHOOK_PORT", "").strip() or "8080"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
