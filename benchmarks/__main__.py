"""``python -m benchmarks``: run the benchmark suite (see `benchmarks.cli`)."""

from benchmarks.cli import run

run()
