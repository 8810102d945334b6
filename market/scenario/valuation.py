"""``[valuation] config`` / ``[valuation.pipeline]``: the valuation pipeline run from a scenario.

A scenario either names a coalition table (``[valuation] utilities``, read by `market.scenario.inputs`) or
a valuation config: a CONFIG.toml file (``config``) or the same tables inline (``[valuation.pipeline]``).
With a config, `run_scenario_valuation` checks the scenario against it, runs (or reuses: the pipeline is
resumable) `valuation.pipeline.run.run_value` and returns what the payout needs: the source-level
coalition table, the hashes that make a changed valuation a new ledger run, the training data's sizes and
texts, and the provenance the ledger records.

This module imports the valuation pipeline (and with it the adapter-training module, not torch) at import
time; `market.scenario.inputs` imports this module only when a scenario has a valuation config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from market.robust import pair_text
from market.scenario.schema import LoadedScenario
from valuation.errors import InputError
from valuation.files import require_file, sha256_file, sha256_json
from valuation.games.game import Game
from valuation.members import check_sources_known
from valuation.pipeline.config import (
    ValuationConfig,
    load_valuation_config,
    parse_valuation_config,
    with_eval_pairs,
)
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.run import run_value


@dataclass(frozen=True)
class ScenarioValuation:
    """The valuation pipeline's output as a scenario uses it.

    Attributes:
        run: the `valuation.pipeline.outcome.ValuationRun` (run dir, adapters, table, values, files).
        game: its source-level game: the coalition table (``RUN/game.csv``), or the compact game
            (``RUN/game.npz``, more than 16 sources).
        hashes: ``valuation_config`` (SHA-256 of the config file's bytes, or of the inline table) and
            ``game`` (`game_hash`): what the scenario hash covers, so a changed valuation is a new ledger run
            and an unchanged one is not.
        sizes, texts: per source, the number of training pairs and their texts (`market.robust.pair_text`).
        base_model: the base model's name.
        provenance: JSON-ready: run dir, config file, the validated config, base model (name, SHA-256,
            preset), adapter and data hashes per source, eval-set hashes.
    """

    run: ValuationRun
    game: Game
    hashes: dict[str, str]
    sizes: dict[str, int]
    texts: dict[str, list[str]]
    base_model: str
    provenance: dict[str, Any]


def scenario_valuation_config(loaded: LoadedScenario) -> tuple[ValuationConfig, str]:
    """The scenario's valuation config and its content hash.

    ``[valuation] config`` is read with `valuation.pipeline.config.load_valuation_config` (paths relative to the
    config file); an inline ``[valuation.pipeline]`` table is validated with
    `valuation.pipeline.config.parse_valuation_config` (paths relative to the scenario file; a bad key is reported
    as ``valuation.pipeline.<key>``). Raises `InputError`.
    """
    v = loaded.scenario.valuation
    file = str(loaded.path)
    if v.config is not None:
        path = require_file(
            loaded.resolve(v.config),
            missing=f"the valuation config {loaded.resolve(v.config)} is not available (no such file)",
            file=file,
            field="valuation.config",
        )
        return load_valuation_config(path), sha256_file(path)
    if v.pipeline is None:
        raise InputError("no valuation config: set 'config' or [valuation.pipeline]", file=file, field="valuation")
    raw = plain_toml(v.pipeline)
    try:
        config = parse_valuation_config(raw, base_dir=loaded.path.parent, file=file)
    except InputError as err:
        field_name = "valuation.pipeline" + (f".{err.field}" if err.field else "")
        raise InputError(err.message, file=file, row=err.row, field=field_name) from None
    return config, sha256_json(raw)


def check_against_config(loaded: LoadedScenario, config: ValuationConfig) -> None:
    """Raise `InputError` unless the scenario fits the config: every member's source is among
    ``data.sources`` (when the config lists them) and every weighted objective among ``utility.objectives``."""
    sc = loaded.scenario
    file = str(loaded.path)
    if config.data.sources is not None:
        check_sources_known(sc.members, config.data.sources, file=file, listed_as="the valuation config values")
    for name in sc.objectives:
        if name not in config.utility.objectives:
            raise InputError(
                f"unknown objective {name!r} (the valuation config's objectives: "
                f"{', '.join(config.utility.objectives)})",
                file=file,
                field=f"objectives.{name}",
            )


def run_scenario_valuation(
    loaded: LoadedScenario,
    *,
    retrain: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Any] = (),
    eval_pairs: int | None = None,
) -> ScenarioValuation:
    """Run (or reuse) the valuation pipeline of the scenario's valuation config.

    The pipeline is resumable: adapters that are up to date are not retrained and cached log-probs are
    not recomputed, so a second call only redoes the (cheap) coalition arithmetic and rewrites the run
    dir's tables with identical content. Before anything is trained, the scenario is checked against the
    config (`check_against_config`). ``retrain``, ``progress``, ``log`` and ``callbacks`` (transformers
    ``TrainerCallback`` objects) are passed to `valuation.pipeline.run.run_value`. ``eval_pairs``:
    evaluate on the first that many pairs of each eval set (`valuation.pipeline.config.with_eval_pairs`;
    the rounds of `market.adaptive`).
    """
    config, config_hash = scenario_valuation_config(loaded)
    if eval_pairs is not None:
        config = with_eval_pairs(config, eval_pairs)
    check_against_config(loaded, config)
    run = run_value(config, retrain=retrain, progress=progress, callbacks=callbacks, log=log)
    prepared = run.prepared
    return ScenarioValuation(
        run=run,
        game=run.game,
        hashes={"valuation_config": config_hash, "game": game_hash(run)},
        sizes={s: len(pairs) for s, pairs in prepared.train.items()},
        texts={s: [pair_text(p) for p in pairs] for s, pairs in prepared.train.items()},
        base_model=str(prepared.base.name),
        provenance=valuation_provenance(run, config),
    )


def game_hash(run: ValuationRun) -> str:
    """The hash of the valuation's game: of ``game.csv``, or, for a run on the compact game (no table), of
    the compact game's content (`valuation.coalition_utility.compact.PairGame.content_sha256`)."""
    if "game_csv" in run.files:
        return sha256_file(run.files["game_csv"])
    assert run.compact is not None
    return run.compact.content_sha256()


def valuation_provenance(run: ValuationRun, config: ValuationConfig) -> dict[str, Any]:
    """The run's provenance as JSON-ready data (see `ScenarioValuation.provenance`)."""
    prepared = run.prepared
    base = prepared.base
    return {
        "run_dir": str(run.run_dir),
        "config_file": None if config.config_path is None else str(config.config_path),
        "config": config.model_dump(mode="json", exclude={"config_path"}),
        "base_model": {"name": base.name, "sha256": base.sha256, "preset": base.preset},
        "adapters": {s: run.adapters[s].sha256 for s in prepared.sources},
        "data_hashes": dict(prepared.data_hashes),
        "eval_sets": {es.objective: es.data_hash for es in prepared.eval_sets},
    }


def plain_toml(value: Any) -> Any:
    """A TOML value read with ``parse_float=Decimal`` with its Decimals back as floats (for the valuation
    config, which validates plain TOML types)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: plain_toml(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_toml(v) for v in value]
    return value
