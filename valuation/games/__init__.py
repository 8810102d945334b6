"""The game engine: cooperative games with several objectives, and how to value them.

A small library (numpy and scipy; polars only to read table files) that knows nothing of language
models or money: it imports nothing of the project but `valuation.errors` and `valuation.files`.

The seam:

* a **game** is anything with ``players``, ``objectives`` and a vectorised utility
  ``game(coalitions: bool[k, n]) -> float[k, m]`` (row = coalition, column j = player j present; one
  utility per objective) — the `valuation.games.game.Game` protocol. The model side produces one (a
  GAME.csv table of coalition utilities, or a function that composes models on demand).
* a **ValuationResult** (`valuation.games.result`) holds a value and a standard error per player and
  objective (``float[n, m]`` each), the method, the evaluations spent and method details; it is what
  the market side pays out from.

Modules and their entry points:

* `coalitions` — coalitions as bit masks (player j = bit j): `all_coalitions`, `coalition_index`,
  `coalition_label`, `popcount`, `validate_names`.
* `game` — `Game`, `TableGame` (``from_csv`` / ``from_file`` / ``to_csv``), `FunctionGame`,
  `CachedGame`, `GroupedGame` (member game from a source game), `scalarised_game`, `objective_weights`.
* `table_io` — the GAME.csv / Parquet table format: reading with errors that name the row, writing.
* `estimators` — ``approximate(game, method, budget, seed=, stopping=)``: exact / permutation Shapley,
  Banzhaf, leave-one-out, least core; `exact_shapley` on a full table.
* `methods` — the method names (`METHODS`) and which are linear (`LINEAR_METHODS`).
* `stopping` — composable stopping rules for the sampled estimators (`MaxEvaluations`,
  `StandardError`, `MaxTime`, combined with ``|`` and ``&``).
* `result` — `ValuationResult` (JSON form, ``scalarised`` by linearity).
* `players` — null players, interchangeable players, `symmetrise` (equal treatment of equals).
* `stability` — individual rationality, the core, blocking coalitions, the least-core ε of a payout
  (`check_stability`, `StabilityReport`).

Nothing is re-exported here: import from the module that holds a name, so importing one light module
(``coalitions``, say) never loads scipy.
"""
