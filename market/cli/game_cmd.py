"""`payoutsim shapley`: value any coalition game given as a table (GAME.csv)."""

from __future__ import annotations

from market.cli import app  # noqa: F401
