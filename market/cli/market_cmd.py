"""`payoutsim payout`, `payoutsim pool …`, `payoutsim ledger …`: the market layer's commands."""

from __future__ import annotations

from market.cli import app  # noqa: F401
