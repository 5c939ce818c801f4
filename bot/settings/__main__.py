"""`python -m bot.settings --markdown | --env-example`: print a document to paste."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot.settings.documents import render_env_example, render_markdown_table


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bot.settings --markdown | --env-example`: print a document to paste."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.settings",
        description="Print the configuration documents rendered from bot/settings/declaration.py.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--markdown", action="store_true", help="the README's configuration table")
    which.add_argument("--env-example", action="store_true", help="the contents of .env.example")
    args = parser.parse_args(argv)
    sys.stdout.write(render_markdown_table() if args.markdown else render_env_example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
