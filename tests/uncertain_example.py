"""The bundled example scenario with its uncertainty: eval items whose point utilities are exactly the
example's coalition table (`data/examples/market/game.csv`), so the payouts equal the example's and each
run also records its intervals and rank confidence (`market.uncertainty`, the ledger's optional tables).

Used by the dashboard tests (AppTest and the real browser). The item terms are seeded noise around the
table, centred per coalition: 60 "eval pairs" per objective, a shared per-item effect (coalitions are
correlated, as on a real eval set) plus independent noise, scaled so that in the newest period (2025-Q3)
alice's and bob's order is not resolved while carol's and dave's is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from valuation.games.replicates import ItemTerms
from valuation.games.table_io import read_game_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "data" / "scenarios" / "example.toml"
GAME = REPO_ROOT / "data" / "examples" / "market" / "game.csv"
ITEMS = 60


def write_uncertain_example(folder: Path, *, noise: float = 0.15, shared: float = 0.1, seed: int = 0) -> Path:
    """Write ``items.npz`` and ``scenario.toml`` (the example with ``[valuation] items``) into `folder`;
    return the scenario's path."""
    folder.mkdir(parents=True, exist_ok=True)
    table = read_game_csv(GAME)
    rng = np.random.default_rng(seed)
    numerators = []
    for k in range(len(table.objectives)):
        e = rng.normal(0.0, noise, (table.utilities.shape[0], ITEMS)) + rng.normal(0.0, shared, (1, ITEMS))
        e -= e.mean(axis=1, keepdims=True)  # the mean of each coalition's items is its tabulated utility
        numerators.append(table.utilities[:, k : k + 1] + e)
    ItemTerms(
        tuple(table.players),
        tuple(table.objectives),
        table.coalitions,
        tuple(numerators),
        tuple(np.ones_like(n) for n in numerators),
    ).save(folder / "items.npz")
    text = EXAMPLE.read_text().replace(
        'utilities = "../examples/market/game.csv"', f'utilities = "{GAME.as_posix()}"\nitems = "items.npz"'
    )
    assert 'items = "items.npz"' in text
    scenario = folder / "scenario.toml"
    scenario.write_text(text)
    return scenario
