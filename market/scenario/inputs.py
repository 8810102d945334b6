"""The inputs a scenario references, loaded and cross-checked: what a payout needs besides the scenario.

`load_inputs` takes a `market.scenario.schema.LoadedScenario` and returns `ScenarioInputs`:

1. the source-level game: the coalition table ``[valuation] utilities`` (CSV / Parquet), or the game of
   the valuation pipeline run from ``[valuation] config`` / ``[valuation.pipeline]``
   (`market.scenario.valuation.run_scenario_valuation`);
2. the checks that the game fits the scenario (`check_game`);
3. the data sizes and texts: from ``[valuation] data`` (or the valuation's training data), overridden
   by ``[sizes]``;
4. the scenario hash (`scenario_hash`): the ledger's idempotency key, over the scenario file and the
   content of everything it references;
5. the replicate tables of the payout's uncertainty (`scenario_replicates`): a bootstrap over the valuation
   run's eval items, or over ``[valuation] items`` (the item terms of a given table), or normal noise from
   a Parquet table's ``<objective>_std_err`` columns; None when there is nothing to resample.

`market.scenario.valuation` is imported inside `load_inputs`, only for a scenario with a valuation config:
it imports the valuation pipeline and the adapter-training module, which the dashboard (it reaches this
module through `market.rules`) must never load (tests/test_dashboard.py asserts it) and which would add
0.21 s of imports (0.44 s instead of 0.23 s of CPU for importing this module) to ``payoutsim payout`` on a
coalition table; the annotation `ValuationRun` is imported under TYPE_CHECKING for the same reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market.robust import pair_text
from market.scenario.schema import LoadedScenario, Scenario
from valuation.coalition_utility.compact import PairGame
from valuation.errors import InputError
from valuation.files import require_file
from valuation.games.game import Game, TableGame
from valuation.games.replicates import ItemTerms, ReplicateGames, normal_replicates
from valuation.members import check_sources_known
from valuation.sources import load_preferences

if TYPE_CHECKING:
    from valuation.pipeline.outcome import ValuationRun

SCENARIO_HASH_HEADER = b"payoutsim-scenario-v1\n"


@dataclass(frozen=True)
class ScenarioInputs:
    """Everything a payout needs, loaded and cross-checked against the scenario.

    Attributes:
        loaded: the scenario.
        game: the source-level game: a coalition table, or the valuation's compact game (more than 16
            sources; `valuation.coalition_utility.compact.PairGame`).
        sizes: source -> number of preference pairs (from ``data`` or ``[sizes]``), or None.
        texts: source -> the source's texts (prompt, chosen, rejected of each pair), or None.
        scenario_sha256: SHA-256 over the scenario file's bytes and the content hashes of the files it
            references — the ledger's idempotency key (with the period).
        input_hashes: referenced input -> its content hash.
        base_model: the base model the game was computed with (the valuation's, when the scenario runs
            one; else ``[valuation] base_model``), for the ledger.
        provenance: with ``[valuation] config``: the valuation run (run dir, config, base model, adapter,
            data and eval-set hashes) as JSON-ready data, recorded in the ledger; else empty.
        valuation: with ``[valuation] config``: the valuation pipeline's run; else None.
        replicates: the replicate tables of the game (`scenario_replicates`), or None.
    """

    loaded: LoadedScenario
    game: Game
    sizes: dict[str, int] | None
    texts: dict[str, list[str]] | None
    scenario_sha256: str
    input_hashes: dict[str, str] = field(default_factory=dict)
    base_model: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    valuation: ValuationRun | None = None
    replicates: ReplicateGames | None = None

    @property
    def scenario(self) -> Scenario:
        return self.loaded.scenario

    @property
    def weights(self) -> dict[str, float]:
        """Objective weights; a single-objective game without ``[objectives]`` gets weight 1."""
        return self.scenario.weights() or {self.game.objectives[0]: 1.0}


def load_inputs(
    loaded: LoadedScenario,
    *,
    retrain: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Any] = (),
    eval_pairs: int | None = None,
) -> ScenarioInputs:
    """Load the coalition table (and the data, if given) and cross-check them with the scenario.

    With ``[valuation] config`` (or ``[valuation.pipeline]``) the valuation pipeline runs first (see
    `market.scenario.valuation.run_scenario_valuation`; ``retrain``, ``progress``, ``log`` and ``callbacks``
    are passed to `valuation.pipeline.run.run_value`; ``eval_pairs``: the eval size of an adaptive round,
    see `market.scenario.valuation.run_scenario_valuation`) and its source-level coalition table is the game;
    sizes and texts come from its training data.

    Checks: `check_game`; `[sizes]` names known sources. Raises `InputError` naming the scenario field.
    """
    sc = loaded.scenario
    sizes: dict[str, int] | None = None
    texts: dict[str, list[str]] | None = None
    base_model = sc.valuation.base_model
    provenance: dict[str, Any] = {}
    valuation_run: ValuationRun | None = None
    items: ItemTerms | None = None
    std_errs = None
    if sc.valuation.utilities is None:
        # deferred: the valuation pipeline's imports (module docstring)
        from market.scenario.valuation import run_scenario_valuation

        valued = run_scenario_valuation(
            loaded, retrain=retrain, progress=progress, log=log, callbacks=callbacks, eval_pairs=eval_pairs
        )
        game, hashes, valuation_run = valued.game, dict(valued.hashes), valued.run
        sizes, texts, provenance = valued.sizes, valued.texts, valued.provenance
        base_model = valued.base_model
        table_name = "the valuation's game.csv"
        items = None if valued.run.table is None else valued.run.table.items
    else:
        game, hashes, table_name = read_coalition_table(loaded)
        items, std_errs = read_uncertainty(loaded, game, hashes)
    check_game(loaded, game, table_name)
    if sc.valuation.data is not None:
        sizes, texts, hashes["data"] = read_data(loaded)
    if sc.sizes is not None:
        sizes = with_given_sizes(loaded, game, sizes)
    return ScenarioInputs(
        loaded=loaded,
        game=game,
        sizes=sizes,
        texts=texts,
        scenario_sha256=scenario_hash(loaded.file_sha256, hashes),
        input_hashes=hashes,
        base_model=base_model,
        provenance=provenance,
        valuation=valuation_run,
        replicates=scenario_replicates(sc, game, items, std_errs),
    )


#: Largest replicate set built (replicates × coalitions × objectives numbers; 2^14 coalitions, 200, 2).
MAX_REPLICATE_CELLS = 2**14 * 200 * 2


def scenario_replicates(
    sc: Scenario, game: Game, items: ItemTerms | None, std_errs: Any
) -> ReplicateGames | None:
    """The replicate games of the scenario's game: ``[uncertainty] replicates`` bootstrap games of the
    compact game (`PairGame.bootstrap`, over eval pairs) or bootstrap tables of the item terms, else normal
    replicates from the table's standard errors, else None (also when ``replicates = 0`` or a table set
    would exceed `MAX_REPLICATE_CELLS`)."""
    settings = sc.uncertainty
    if settings.replicates == 0:
        return None
    if isinstance(game, PairGame):
        return game.bootstrap(settings.replicates, settings.seed)
    if not isinstance(game, TableGame) or settings.replicates * len(game) * len(game.objectives) > MAX_REPLICATE_CELLS:
        return None
    if items is not None:
        return items.bootstrap(settings.replicates, settings.seed)
    if std_errs is not None:
        return normal_replicates(game, std_errs, settings.replicates, settings.seed)
    return None


def read_uncertainty(loaded: LoadedScenario, game: TableGame, hashes: dict[str, str]) -> tuple[ItemTerms | None, Any]:
    """What a given table says about its own uncertainty: ``[valuation] items`` (checked against the
    game; its hash added to `hashes`), else the ``<objective>_std_err`` columns of a Parquet table (aligned
    with ``game.coalitions``), else nothing."""
    sc = loaded.scenario
    if sc.valuation.items is not None:
        path = loaded.resolve(sc.valuation.items)
        items = ItemTerms.load(path, field="valuation.items")
        items.check_matches(game, file=path, field="valuation.items")
        hashes["items"] = _file_sha256(path)
        return items, None
    assert sc.valuation.utilities is not None
    path = loaded.resolve(sc.valuation.utilities)
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None, None
    import polars as pl  # deferred: only a Parquet table is read here

    from valuation.games.table_io import read_game_parquet

    frame = pl.read_parquet(path)
    columns = [f"{o}_std_err" for o in game.objectives]
    if not all(c in frame.columns for c in columns):
        return None, None
    contents = read_game_parquet(path, players=game.players)
    se = frame.select(columns).fill_null(0.0).fill_nan(0.0).to_numpy()
    aligned = TableGame(game.players, game.objectives, contents.coalitions, se)  # sorted like the game's rows
    return None, aligned.utilities


def read_coalition_table(loaded: LoadedScenario) -> tuple[TableGame, dict[str, str], str]:
    """``[valuation] utilities``: the game, ``{"utilities": sha256 of the file}`` and the file's name."""
    assert loaded.scenario.valuation.utilities is not None
    table_path = require_file(
        loaded.resolve(loaded.scenario.valuation.utilities),
        missing=f"coalition table not found: {loaded.resolve(loaded.scenario.valuation.utilities)}",
        file=str(loaded.path),
        field="valuation.utilities",
    )
    return TableGame.from_file(table_path), {"utilities": _file_sha256(table_path)}, table_path.name


def check_game(loaded: LoadedScenario, game: Game, table_name: str) -> None:
    """Raise `InputError` unless the game fits the scenario: every member's source is a player of the game
    (``members[i].sources``); every weighted objective is an objective of the game (``objectives.<name>``);
    weights are given when the game has several objectives. `table_name` names the game in messages."""
    sc = loaded.scenario
    file = str(loaded.path)
    check_sources_known(sc.members, game.players, file=file, listed_as=f"sources in {table_name}")
    for name in sc.objectives:
        if name not in game.objectives:
            raise InputError(
                f"unknown objective {name!r} (objectives in {table_name}: {', '.join(game.objectives)})",
                file=file,
                field=f"objectives.{name}",
            )
    if not sc.objectives and len(game.objectives) > 1:
        raise InputError(
            f"the game has several objectives ({', '.join(game.objectives)}): give their weights",
            file=file,
            field="objectives",
        )


def read_data(loaded: LoadedScenario) -> tuple[dict[str, int], dict[str, list[str]], str]:
    """``[valuation] data`` (read with `valuation.sources.load_preferences`): per source the number of
    pairs and their texts (`market.robust.pair_text`), and the data's content hash."""
    assert loaded.scenario.valuation.data is not None
    data_path = loaded.resolve(loaded.scenario.valuation.data)
    if not data_path.exists():
        raise InputError(f"data not found: {data_path}", file=str(loaded.path), field="valuation.data")
    prefs = load_preferences(data_path)
    by_source = prefs.sources()
    sizes = {src: len(pairs) for src, pairs in by_source.items()}
    texts = {src: [pair_text(p) for p in pairs] for src, pairs in by_source.items()}
    return sizes, texts, prefs.content_hash()


def with_given_sizes(loaded: LoadedScenario, game: Game, sizes: dict[str, int] | None) -> dict[str, int]:
    """`sizes` overridden by ``[sizes]`` (explicit sizes win over counted ones); `InputError` for a
    ``[sizes]`` key that is not a source of the game."""
    given = loaded.scenario.sizes or {}
    for name in given:
        if name not in game.players:
            raise InputError(f"unknown source {name!r}", file=str(loaded.path), field=f"sizes.{name}")
    return {**(sizes or {}), **given}


def scenario_hash(file_sha256: str, input_hashes: dict[str, str]) -> str:
    """``sha256("payoutsim-scenario-v1\\n" ‖ file hash ‖ "\\nkey=hash" for each input, keys sorted)``."""
    digest = hashlib.sha256()
    digest.update(SCENARIO_HASH_HEADER)
    digest.update(file_sha256.encode())
    for key in sorted(input_hashes):
        digest.update(f"\n{key}={input_hashes[key]}".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
