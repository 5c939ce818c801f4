"""Load benchmarks for the bot; run with `python -m bench.run` (see bench/README.md)."""
