"""Where the ledger is when nobody says: the one home of these defaults, light enough for `--help`.

`DEFAULT_LEDGER` is the ledger path of `payout`, `ledger …` and the dashboard (relative to the current
folder); `LEDGER_ENV` names the environment variable the dashboard reads its ledger path from.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_LEDGER = Path("runs") / "ledger.duckdb"
LEDGER_ENV = "PAYOUTSIM_LEDGER"
