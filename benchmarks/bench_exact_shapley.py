"""Benchmark: exact Shapley over all 2^n coalitions (n = 16 and 20, 2 objectives).

Times, per n, the median over repeats of
  * ``table``: ``exact_shapley`` on a ready ``float[2^n, 2]`` table (the matrix arithmetic alone);
  * ``game``: ``approximate(TableGame, "exact")`` on a complete table game (what the CLI runs after
    reading the file).
Prints a small table and writes JSON (default ``runs/bench_exact_shapley.json``).

    .venv/bin/python benchmarks/bench_exact_shapley.py [--out PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from valuation.files import atomic_write_text
from valuation.games.estimators import approximate, exact_shapley
from valuation.games.game import TableGame, all_coalitions


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_exact_shapley.json"), help="JSON output")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement (median reported)")
    args = parser.parse_args()

    rows = []
    for n in (16, 20):
        rng = np.random.default_rng(n)
        table = rng.normal(size=(2**n, 2))
        game = TableGame([f"s{i}" for i in range(n)], ["helpfulness", "harmlessness"], all_coalitions(n), table)
        phi = exact_shapley(table)
        assert np.allclose(phi.sum(axis=0), table[-1] - table[0])  # efficiency: a sanity check
        t_table, all_table = _median_seconds(lambda table=table: exact_shapley(table), args.repeats)
        t_game, all_game = _median_seconds(lambda game=game: approximate(game, "exact"), args.repeats)
        rows.append({
            "n_players": n, "n_objectives": 2, "n_coalitions": 2**n,
            "exact_shapley_table_s": t_table, "approximate_exact_game_s": t_game,
            "repeats_table_s": all_table, "repeats_game_s": all_game,
        })
        print(f"n={n:2d}  2^n={2**n:>9,d}  exact_shapley(table) {t_table:7.3f} s   "
              f"approximate(TableGame, 'exact') {t_game:7.3f} s   (median of {args.repeats})")
    report = {
        "benchmark": "exact_shapley",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "results": rows,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
