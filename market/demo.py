"""`make demo` / ``python -m market.demo``: run the bundled demo scenario end to end.

Runs ``payoutsim run data/scenarios/demo.toml`` (through `market.cli.main`, so errors print as they do on
the command line), then says where the payout table, ledger, CSV, PNG and values are and how to open the
dashboard. The exit code is the command's: 0 on success, non-zero on failure. Extra arguments are passed
on (``python -m market.demo --out DIR``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from market.cli import main as cli_main
from market.run import CSV_NAME, LEDGER_NAME, PLOT_NAME, RECEIPT_NAME, VALUES_NAME, default_out_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_SCENARIO = REPO_ROOT / "data" / "scenarios" / "demo.toml"
DEMO_NAME = "demo"


def demo_out_dir(argv: list[str]) -> Path:
    """The output folder the run will use: ``--out``/``-o`` when given, else ``runs/demo``."""
    for i, arg in enumerate(argv):
        if arg in ("--out", "-o") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    return default_out_dir(DEMO_NAME)


def demo_ledger(argv: list[str], out_dir: Path) -> Path:
    """The ledger the run will use: ``--ledger`` when given, else ``OUT/ledger.duckdb``."""
    for i, arg in enumerate(argv):
        if arg == "--ledger" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--ledger="):
            return Path(arg.split("=", 1)[1])
    return out_dir / LEDGER_NAME


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code (0: every output written)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not DEMO_SCENARIO.is_file():
        print(f"error: the demo scenario is missing: {DEMO_SCENARIO}", file=sys.stderr)
        return 2
    print(f"payoutsim demo: payoutsim run {shlex.quote(str(DEMO_SCENARIO))} {shlex.join(args)}".rstrip(), flush=True)
    code = cli_main(["run", str(DEMO_SCENARIO), *args])
    if code != 0:
        print(f"payoutsim demo: FAILED (exit code {code})", file=sys.stderr)
        return code
    out_dir = demo_out_dir(args)
    ledger = demo_ledger(args, out_dir)
    missing = [p for p in (ledger, out_dir / CSV_NAME, out_dir / VALUES_NAME, out_dir / PLOT_NAME) if not p.is_file()]
    if missing:
        print(f"payoutsim demo: FAILED: missing output {missing[0]}", file=sys.stderr)
        return 1
    print()
    print("payoutsim demo: done.")
    print("  payout table:  printed above (also in the CSV and the ledger)")
    print(f"  ledger:        {ledger}")
    print(f"  receipt:       {out_dir / RECEIPT_NAME}  (keep it: payoutsim ledger verify --receipt checks the ledger)")
    print(f"  payouts CSV:   {out_dir / CSV_NAME}")
    print(f"  values JSON:   {out_dir / VALUES_NAME}")
    print(f"  plot (PNG):    {out_dir / PLOT_NAME}")
    print(f"  dashboard:     payoutsim dashboard --ledger {shlex.quote(str(ledger))}")
    print("  run it again: nothing is retrained and no ledger row is added.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
