"""`python -m benchmarks`: the benchmark suite's command line (speed and accuracy figures, not tests).

Runs the parts registered in `benchmarks.suite.PARTS`, prints a rich table per part as it finishes, and
writes one JSON report (machine facts, per-part results, medians over repeats). Exit codes: 0 every part
ran, 1 a part failed (its entry in the report holds the error), 2 bad input (an unknown ``--only`` key,
``--repeats`` below 1). ``payoutsim bench`` (`valuation.cli.bench`) passes its arguments through to this
command in a source checkout; the benchmarks are not part of the installed package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from benchmarks.report import machine_table, print_part, write_report
from benchmarks.suite import parse_only, run_suite
from valuation.cli.exit_codes import run_app

PROG_NAME = "python -m benchmarks"

app = typer.Typer(name="benchmarks", add_completion=False, pretty_exceptions_enable=False)


@app.command("bench")
def bench(
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Smaller sizes, fewer repeats and seeds, no SmolLM2, no n = 6 retraining: "
                     "about 2 minutes in all on 2 cores (the full run: about 20)."),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated part keys to run (default: all). a = arithmetic vs retraining every "
            "coalition (tiny, n = 4, 6), b = coalition evaluation from the log-prob cache, c = batched "
            "multi-adapter forward and composed decoding (tiny, SmolLM2), d = importance-sampled vs direct "
            "reward utilities (tiny, n = 4), e = Shapley estimators vs every shapiq Shapley approximator.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Where to write the JSON report (atomically)."),
    ] = Path("bench.json"),
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats", "-r", min=1,
            help="Repeats per timing (medians are reported) and seeds per estimator cell; default per part.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Seed of every synthetic input and sampler.")] = 0,
) -> None:
    """Run the benchmark suite: print a table per part and write one JSON report.

    Parts: (a) n fine-tunings + arithmetic vs retraining all 2^n − 1 coalitions on the tiny preset (n = 4,
    6): wall times, ratio, Shapley fidelity; (b) all 2^n coalitions' preference utilities from cached
    log-probs vs the n + 1 forward passes that fill the cache (n = 8, 12, 16); (c) one batched forward of
    base + |S| adapters vs |S| + 1 separate passes, and tokens/s of composed decoding for |S| = 1..4 vs the
    base (tiny, SmolLM2); (d) all 16 coalitions' reward utilities from one importance-sampling pool vs
    sampling each directly (time ratio, differences in standard errors, ESS); (e) sampled Shapley (ours:
    size-stratified regression, and permutation sampling) vs every Shapley approximator of shapiq at equal
    budgets, MSE against exact values and calibration of our standard errors (four game families, n = 12,
    32, 64). The machine is
    recorded (cores, torch threads, versions, load average): quote figures with it. Run it alone: other
    torch jobs on the same cores distort every timing.
    """
    keys = parse_only(only)
    console = Console()
    console.print(f"payoutsim bench: parts {', '.join(keys)}{' (quick)' if quick else ''}", highlight=False)
    report = run_suite(
        keys, quick=quick, seed=seed, repeats=repeats,
        on_part_done=lambda key, entry: print_part(console, key, entry),
    )
    console.print(machine_table(report))
    path = write_report(out, report)
    console.print(f"wrote {path}", highlight=False)
    failed = [key for key, entry in report["parts"].items() if entry["status"] != "ok"]
    if failed:
        typer.echo(f"error: benchmark part(s) failed: {', '.join(failed)} (see {path})", err=True)
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); return the exit code.

    0 ok; 1 a part failed; 2 bad input or usage (`PayoutsimError` becomes ``error: <message>`` on stderr).
    """
    return run_app(app, argv, PROG_NAME)


def run() -> None:
    """Process entry point: exit with `main`'s code."""
    sys.exit(main())
