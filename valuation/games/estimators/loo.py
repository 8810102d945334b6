"""Leave-one-out values: ``loo_i = u(N) − u(N ∖ i)`` (n + 1 evaluations, exact, std err 0)."""

from __future__ import annotations

import numpy as np

from valuation.games.estimators.common import evaluate
from valuation.games.game import Game
from valuation.games.result import ValuationResult


def leave_one_out(game: Game) -> ValuationResult:
    """Leave-one-out values of every player, all objectives in one game call."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n = len(players)
    masks = np.concatenate([np.ones((1, n), dtype=bool), ~np.eye(n, dtype=bool)])
    utils = evaluate(game, masks)
    values = utils[0][None, :] - utils[1:]
    return ValuationResult("loo", players, objectives, values, np.zeros_like(values), None, n + 1, {})
