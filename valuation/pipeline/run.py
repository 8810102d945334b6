"""The valuation pipeline: config → data → base model → adapters → cached log-probs → coalition table →
values → run directory. ``payoutsim train`` runs the first part (`run_train`), ``payoutsim value`` all of
it (`run_value`).

One walk through `run_value`, naming the function at each step:

1. `valuation.pipeline.inputs.prepare_inputs`: training pairs per source, eval sets, base model (all checked).
2. `run_train`: one DPO LoRA adapter per source (`valuation.adapters.dpo.train_adapters`, resumable).
3. `valuation.pipeline.tables.eval_logprobs`: response log-probs of every model on every eval set (cached).
4. a tabulator, ``masks → CoalitionTable``: `valuation.pipeline.tables.preference_tabulator` (arithmetic on
   the cached log-probs) or, with ``[utility] kind = "reward"``, `valuation.pipeline.reward_tables.reward_tabulator`
   (mean reward of samples from π_S; then ``<objective>_n_pairs`` counts samples).
5. `value_coalitions`: the game of the table, its values (and the members' values); beyond 16 sources
   (`uses_compact_game`) `value_compact` values directly on the compact game
   (`valuation.pipeline.tables.pair_game`), sampling until the target standard error (`compact_stopping`).
6. `valuation.pipeline.outputs.write_run`: the files below, each written atomically.

Run directory (``[output] dir``)::

    adapters/<source>/      peft adapter dir + manifest.json (valuation.adapters.store)
    cache/logprobs/*.npz    per-model response log-probs on each eval set (valuation.composition.logprobs)
    cache/samples/          reward utility only: sampled responses per coalition (valuation.decoding.coalition_responses)
    corpus/                 only with [data] synth: the generated synthetic corpus
    config.toml             the config this run used (a copy)
    game.csv                coalition utilities, GAME.csv format (one column per objective); not written
                            for a run on the compact game (more than 16 sources)
    game.parquet            the same plus <objective>_std_err and <objective>_n_pairs per coalition
    items.npz               the per-item terms of game.csv (eval pairs or prompts; valuation.games.replicates)
    game.npz                ``preference`` utility: the compact game, every objective's per-pair margins
                            Δ[n, pairs] (valuation.coalition_utility.compact.PairGame): all 2ⁿ coalitions,
                            no model needed
    values.json             source-level values with standard errors and 95% intervals (bootstrap over
                            the eval items, [uncertainty]; the `payoutsim shapley` result format)
    values_members.json     member-level values, when the config lists [[members]]
    run.json                provenance: base model, adapters (hashes, metrics), eval sets, timings

The base is the reference point: u_k(∅) = ½ for the ``bt`` and ``accuracy`` metrics. Bad inputs are found
before anything is trained or written.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from valuation.adapters.dpo import train_adapters
from valuation.adapters.store import AdapterRecord
from valuation.coalition_utility.compact import PairGame
from valuation.coalition_utility.preference import LOGLIK_WARNING
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.game import FunctionGame, Game, GroupedGame, TableGame
from valuation.games.methods import LINEAR_METHODS
from valuation.games.result import ValuationResult
from valuation.games.stopping import (
    DEFAULT_MAX_EVALUATIONS,
    DEFAULT_TARGET_SE,
    StoppingRule,
    large_game_stopping,
)
from valuation.games.uncertainty import valued_with_interval
from valuation.members import member_groups, member_values
from valuation.pipeline.config import ValuationConfig, with_eval_pairs
from valuation.pipeline.inputs import PreparedInputs, prepare_inputs
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.outputs import write_run
from valuation.pipeline.reward_tables import reward_objectives, reward_tabulator
from valuation.pipeline.rounds import Measured, RoundsReport, grow_until_known
from valuation.pipeline.tables import CoalitionTable, eval_logprobs, pair_game, preference_tabulator
from valuation.runtime.backend import Backend, open_backend
from valuation.runtime.settings import effective_runtime, overridden

FULL_TABLE_MAX_PLAYERS = 16  # up to here every coalition is tabulated (2^16 rows); beyond, the compact game


def run_train(
    config: ValuationConfig,
    *,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    prepared: PreparedInputs | None = None,
    backend: Backend | None = None,
) -> tuple[PreparedInputs, dict[str, AdapterRecord]]:
    """Train (resumably) one adapter per source into ``RUN/adapters``; see `valuation.adapters.dpo`.

    ``callbacks`` are transformers ``TrainerCallback`` objects passed to every (local) training. ``backend``:
    where the trainings run; default: the config's ``[runtime]`` (`open_backend`, for this call only).
    """
    if backend is None:
        with open_runtime(config) as opened:
            return run_train(
                config, retrain=retrain, progress=progress, callbacks=callbacks, log=log, prepared=prepared,
                backend=opened,
            )
    prepared = prepared or prepare_inputs(config, progress=progress)
    records = train_adapters(
        prepared.base,
        prepared.train,
        prepared.data_hashes,
        config.training,
        prepared.run_dir / "adapters",
        retrain=retrain,
        progress=progress,
        callbacks=callbacks,
        log=log,
        backend=backend,
    )
    return prepared, records


def open_runtime(config: ValuationConfig) -> contextlib.AbstractContextManager[Backend]:
    """The backend of the config's ``[runtime]`` (with ``--backend``/``--address`` applied:
    `valuation.runtime.settings.effective_runtime`), its device placement installed for the block."""
    if overridden("address"):
        return open_backend(effective_runtime(config.runtime), file=None, address_field="--address")
    return open_backend(effective_runtime(config.runtime), file=config.config_path)


def run_value(
    config: ValuationConfig,
    *,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    backend: Backend | None = None,
) -> ValuationRun:
    """Train what is missing, score, tabulate every coalition, value sources (and members), write the run.

    The steps are listed in the module docstring; ``timings`` records seconds per step (``prepare_s``,
    ``train_s``, ``score_s``, ``value_s``, ``total_s``). ``backend``: where training, scoring and decoding
    run (`valuation.runtime.backend`); default: the config's ``[runtime]``, opened for this call.
    """
    if backend is None:
        with open_runtime(config) as opened:
            return run_value(config, retrain=retrain, progress=progress, callbacks=callbacks, log=log, backend=opened)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prepared = prepare_inputs(config, progress=progress)
    rewards = reward_objectives(config, prepared) if config.utility.kind == "reward" else None  # [reward]
    timings["prepare_s"] = time.perf_counter() - started

    t0 = time.perf_counter()
    _, adapters = run_train(
        config, retrain=retrain, progress=progress, callbacks=callbacks, log=log, prepared=prepared, backend=backend
    )
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # the reward utility samples instead of scoring the eval sets
    report = None if rewards is not None else eval_logprobs(prepared, adapters, progress=progress, backend=backend)
    timings["score_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sampling_report: dict[str, dict[str, Any]] = {}
    if rewards is not None:  # [utility] kind = "reward"
        tabulate = reward_tabulator(
            config, prepared, adapters, rewards, progress=progress, sampling_report=sampling_report, backend=backend
        )
    else:
        assert report is not None
        tabulate = preference_tabulator(prepared, report.tables)
        if config.utility.metric == "loglik":
            warnings.warn(LOGLIK_WARNING, UserWarning, stacklevel=2)
            if log is not None:
                log(f"warning: {LOGLIK_WARNING}")

    groups = member_groups(config.members) or None
    compact = None if report is None else pair_game(prepared, report.tables)
    table: CoalitionTable | None
    game: Game
    if compact is not None and uses_compact_game(config, len(prepared.sources)):
        table, game = None, compact
        result, member_result = value_compact(compact, groups, config, progress=progress)
    else:
        table, game, result, member_result = value_coalitions(
            tabulate,
            prepared.sources,
            prepared.objectives,
            groups,
            method=config.shapley.method,
            budget=config.shapley.budget,
            seed=config.shapley.seed,
            progress=progress,
        )
        assert isinstance(game, TableGame)
        result, member_result = with_eval_intervals(config, table, game, result, member_result, groups)
    timings["value_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    run = ValuationRun(
        run_dir=prepared.run_dir,
        prepared=prepared,
        adapters=adapters,
        table=table,
        game=game,
        result=result,
        compact=compact,
        member_result=member_result,
        timings={k: round(v, 3) for k, v in timings.items()},
        sampling_report=sampling_report,
    )
    run.files = write_run(
        run,
        logprobs_computed=0 if report is None else report.computed,
        logprobs_cached=0 if report is None else report.cached,
    )
    return run


def value_until_known(
    config: ValuationConfig,
    *,
    retrain: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    backend: Backend | None = None,
) -> tuple[ValuationRun, RoundsReport]:
    """`run_value` in rounds of growing eval size (`valuation.pipeline.rounds.grow_until_known`) until every
    source value's interval (``[uncertainty] level``, every objective) is at most ``[uncertainty] target``
    wide; returns the last round's run (its directory holds that round's files) and the report. ``backend``:
    as `run_value`'s.

    Raises:
        InputError: no ``[uncertainty] target``, or a utility other than ``preference`` (field
            ``uncertainty.target``).
    """
    settings = config.uncertainty
    if settings.target is None:
        raise InputError("set a target width for the values' intervals", file=config.config_path,
                         field="uncertainty.target")
    if config.utility.kind != "preference":
        raise InputError(
            "a target grows the eval pairs of the preference utility; the reward utility's size is [sampling] "
            "prompts_per_objective", file=config.config_path, field="uncertainty.target",
        )
    trained = False

    def evaluate(pairs: int) -> Measured[ValuationRun]:
        nonlocal trained
        run = run_value(
            with_eval_pairs(config, pairs), retrain=retrain and not trained, progress=progress, log=log, backend=backend
        )
        trained = True
        res = run.result
        widths = np.full(res.values.shape, np.inf) if res.lo is None or res.hi is None else res.hi - res.lo
        i, k = np.unravel_index(int(np.argmax(widths)), widths.shape)
        used = min(len(es.pairs) for es in run.prepared.eval_sets)
        return Measured(run, used, float(widths[i, k]), f"{res.players[i]}, {res.objectives[k]}")

    return grow_until_known(
        evaluate, target=settings.target, start=settings.start_pairs, max_pairs=settings.max_pairs,
        max_seconds=settings.max_seconds, log=log,
    )


def uses_compact_game(config: ValuationConfig, n_sources: int) -> bool:
    """True when a ``preference`` run values on the compact game instead of a coalition table: more than
    `FULL_TABLE_MAX_PLAYERS` sources and a sampled method (``exact`` would need all 2ⁿ coalitions)."""
    return n_sources > FULL_TABLE_MAX_PLAYERS and config.shapley.method != "exact"


def compact_stopping(game: Game, config: ValuationConfig) -> StoppingRule:
    """The stopping rule of a sampled method on the compact game: every standard error at most
    ``[shapley] target_se`` (default `DEFAULT_TARGET_SE`) × |u_k(N) − u_k(∅)| of its objective, or
    ``[shapley] budget`` evaluations (default `DEFAULT_MAX_EVALUATIONS`), or — only when set —
    ``max_seconds`` of sampling (`valuation.games.stopping.large_game_stopping`)."""
    settings = config.shapley
    return large_game_stopping(game, settings.target_se, settings.budget, settings.max_seconds)


def value_compact(
    game: PairGame,
    groups: Mapping[str, Sequence[str]] | None,
    config: ValuationConfig,
    *,
    progress: bool = False,
) -> tuple[ValuationResult, ValuationResult | None]:
    """Source (and member) values by ``[shapley] method`` directly on the compact game, stopping on the
    target standard error (`compact_stopping`), with eval-pair intervals from its bootstrap
    (``[uncertainty] replicates``; the replicates share the estimator's sampled coalitions and its standard
    errors are added, `valuation.games.uncertainty.valued_with_interval`)."""
    method, seed = config.shapley.method, config.shapley.seed
    result = approximate(game, method, seed=seed, stopping=compact_stopping(game, config), progress=progress)
    member_result = None
    if groups:
        member_game = GroupedGame(game, groups)
        member_result = approximate(
            member_game, method, seed=seed, stopping=compact_stopping(member_game, config), progress=progress
        )
    unc = config.uncertainty
    if unc.replicates > 0 and method in LINEAR_METHODS:
        replicates = game.bootstrap(unc.replicates, unc.seed)
        result = valued_with_interval(result, replicates, seed=seed, level=unc.level)
        if member_result is not None and groups:
            member_result = valued_with_interval(member_result, replicates, seed=seed, groups=groups, level=unc.level)
    return result, member_result


def with_eval_intervals(
    config: ValuationConfig,
    table: CoalitionTable,
    game: TableGame,
    result: ValuationResult,
    member_result: ValuationResult | None,
    groups: Mapping[str, Sequence[str]] | None,
) -> tuple[ValuationResult, ValuationResult | None]:
    """Source (and member) values with standard errors and intervals from ``[uncertainty] replicates``
    bootstrap tables of the eval items (`valuation.games.uncertainty.valued_with_interval`; a sampled
    estimator re-seeded per replicate). Unchanged without item terms, with ``replicates = 0``, or on a
    partial table (a sampled run at large n: its standard errors stay the estimator's)."""
    settings = config.uncertainty
    if table.items is None or settings.replicates == 0 or not game.is_complete():
        return result, member_result
    replicates = table.items.bootstrap(settings.replicates, settings.seed)
    budget, seed = config.shapley.budget, config.shapley.seed
    result = valued_with_interval(result, replicates, budget=budget, seed=seed, level=settings.level)
    if member_result is not None and groups:
        member_result = valued_with_interval(
            member_result, replicates, budget=budget, seed=seed, groups=groups, level=settings.level
        )
    return result, member_result


def value_coalitions(
    tabulate: Callable[[np.ndarray], CoalitionTable],
    players: Sequence[str],
    objectives: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None,
    *,
    method: str,
    budget: int | None,
    seed: int,
    progress: bool = False,
    full_table_max: int = FULL_TABLE_MAX_PLAYERS,
) -> tuple[CoalitionTable, TableGame, ValuationResult, ValuationResult | None]:
    """Value the players (and the member groups) of the game whose utilities ``tabulate`` computes.

    With ``method = "exact"`` or at most ``full_table_max`` players every coalition is tabulated first (one
    vectorised call) and valued from the table; otherwise the estimator asks for the coalitions it samples
    and the returned table holds exactly those. Returns (table, table game, source values, member values).
    """
    n = len(players)
    source_game: Game
    if n <= full_table_max or method == "exact":
        table = tabulate(all_coalitions(n))
        game = TableGame(players, table.objectives, table.coalitions, table.values)
        result = approximate(game, method, budget, seed=seed, progress=progress)
        source_game = game
    else:
        asked: list[np.ndarray] = []

        def fn(masks: np.ndarray) -> np.ndarray:
            asked.append(np.asarray(masks, dtype=bool))
            return tabulate(masks).values

        source_game = FunctionGame(players, objectives, fn)
        result = approximate(source_game, method, budget, seed=seed, progress=progress)
        masks = np.unique(np.concatenate(asked), axis=0) if asked else np.zeros((0, n), dtype=bool)
        table = tabulate(masks)
        game = TableGame(players, table.objectives, table.coalitions, table.values)
    member_result = None
    if groups:
        member_result = member_values(source_game, groups, method, budget, seed=seed, progress=progress)
    return table, game, result, member_result


__all__ = [
    "DEFAULT_MAX_EVALUATIONS",
    "DEFAULT_TARGET_SE",
    "FULL_TABLE_MAX_PLAYERS",
    "compact_stopping",
    "open_runtime",
    "run_train",
    "run_value",
    "uses_compact_game",
    "value_coalitions",
    "value_compact",
    "value_until_known",
    "with_eval_intervals",
]
