"""`payoutsim data synth`: the synthetic market corpus with planted ground truth."""

from __future__ import annotations

from market.cli.data_cmd import data_app  # noqa: F401
