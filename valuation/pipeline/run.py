"""The valuation pipeline: config → data → base model → adapters → cached log-probs → coalition table →
values → run directory. ``payoutsim train`` runs the first part, ``payoutsim value`` all of it.

Run directory (``[output] dir``)::

    adapters/<source>/      peft adapter dir + manifest.json (valuation.adapters.store)
    cache/logprobs/*.npz    per-model response log-probs on each eval set (valuation.composition.logprobs)
    corpus/                 only with [data] synth: the generated synthetic corpus
    config.toml             the config this run used (a copy)
    game.csv                coalition utilities, GAME.csv format (one column per objective)
    game.parquet            the same plus <objective>_std_err and <objective>_n_pairs per coalition
    values.json             source-level values (the `payoutsim shapley` result format)
    values_members.json     member-level values, when the config lists [[members]]
    run.json                provenance: base model, adapters (hashes, metrics), eval sets, timings

Utilities (``preference``): for objective k with eval pairs E_k and coalition S, the margin of pair i is
``Σ_{ℓ∈S} w_ℓ^S Δ_ℓ[i]`` with Δ_ℓ the adapter's log-ratio margin to the base; u_k(S) is the mean over E_k of
σ(β·margin) (``bt``), of 1[margin>0] + ½·1[margin=0] (``accuracy``) or of log σ(β·margin) (``loglik``).
The base is the reference point: u_k(∅) = ½ (``bt``/``accuracy``). With ``[utility] kind = "reward"`` u_k(S) is
the mean reward of samples from π_S instead (`reward_tabulator`; samples cached under ``cache/samples/``;
``<objective>_n_pairs`` then counts samples). Every output file is written atomically;
bad inputs are found before anything is trained or written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valuation.adapters.dpo import train_adapters
from valuation.adapters.store import AdapterRecord
from valuation.coalition_utility.preference import pair_scores, preference_utility
from valuation.composition.arithmetic import coalition_margins, coalition_weights
from valuation.composition.logprobs import EvalLogProbs, EvalSet, compute_eval_logprobs
from valuation.errors import InputError
from valuation.files import atomic_path, atomic_write_text, sha256_file, sha256_json
from valuation.games.coalitions import coalition_label
from valuation.pipeline.config import ValuationConfig

if TYPE_CHECKING:
    from valuation.games.game import TableGame
    from valuation.games.result import ValuationResult
    from valuation.models import BaseModelInfo
    from valuation.sources import PreferencePair

FULL_TABLE_MAX_PLAYERS = 16  # up to here every coalition is tabulated (2^16 rows); beyond, only sampled ones
EXACT_MAX_SOURCES = 22  # exact Shapley's limit in valuation.estimators


@dataclass(frozen=True)
class PreparedInputs:
    """Everything loaded and validated before training: the players' data, eval sets and base model."""

    config: ValuationConfig
    run_dir: Path
    corpus_dir: Path | None
    train: dict[str, list[PreferencePair]]
    data_hashes: dict[str, str]
    eval_sets: list[EvalSet]
    base: BaseModelInfo

    @property
    def sources(self) -> list[str]:
        return list(self.train)

    @property
    def objectives(self) -> list[str]:
        return [es.objective for es in self.eval_sets]


@dataclass(frozen=True)
class CoalitionTable:
    """Utilities of evaluated coalitions: values, std errs and pair counts, each ``[k, m]``."""

    players: tuple[str, ...]
    objectives: tuple[str, ...]
    coalitions: np.ndarray
    values: np.ndarray
    std_errs: np.ndarray
    counts: np.ndarray


@dataclass
class ValuationRun:
    """The outcome of `run_value`: the table, the results and where they were written."""

    run_dir: Path
    prepared: PreparedInputs
    adapters: dict[str, AdapterRecord]
    table: CoalitionTable
    game: TableGame
    result: ValuationResult
    member_result: ValuationResult | None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sampling_report: dict[str, dict[str, Any]] = field(default_factory=dict)  # reward: coalition → method, ESS


# ---------------------------------------------------------------------------------------------------
# inputs


def prepare_inputs(config: ValuationConfig, *, progress: bool = True) -> PreparedInputs:
    """Load the training data and eval sets, check sources/objectives/members, prepare the base model.

    Raises:
        InputError: unknown source, missing eval set for an objective, a member owning an unknown source,
            too many sources, or any data/model problem the loaders report.
    """
    from valuation.sources import load_corpus_eval_sets, load_preferences

    run_dir = config.output.dir
    cfg_file = config.config_path
    data = config.data
    corpus_dir = data.corpus
    if data.synth is not None:
        corpus_dir = _synthesise_corpus(run_dir / "corpus", data.synth.model_dump(exclude_none=True))
    origin = corpus_dir if corpus_dir is not None else data.path
    assert origin is not None  # the config validator guarantees one origin
    if not origin.exists():
        raise InputError("no such file or folder", file=origin, field="data.corpus" if data.corpus else "data.path")
    pset = load_preferences(
        origin,
        format=data.format,
        source_column=data.source_column,
        drop_duplicates=data.drop_duplicates,
    )
    by_source = pset.sources()
    if data.sources is not None:
        unknown = [s for s in data.sources if s not in by_source]
        if unknown:
            raise InputError(
                f"unknown source {unknown[0]!r} (the data has: {', '.join(by_source) or 'none'})",
                file=cfg_file,
                field="data.sources",
            )
        chosen = list(data.sources)
    else:
        chosen = list(by_source)
    if not chosen:
        raise InputError("the data holds no preference pairs", file=origin)
    if len(chosen) > 62:
        raise InputError(f"at most 62 sources can be valued, got {len(chosen)}", file=cfg_file, field="data.sources")
    if config.shapley.method == "exact" and len(chosen) > EXACT_MAX_SOURCES:
        raise InputError(
            f"exact Shapley over {len(chosen)} sources needs 2^{len(chosen)} coalitions: "
            'use method = "permutation" (or "banzhaf", "loo")',
            file=cfg_file,
            field="shapley.method",
        )
    train = {s: by_source[s] for s in chosen}
    data_hashes = {s: pset.content_hash(s) for s in chosen}

    for i, member in enumerate(config.members):
        for src in member.sources:
            if src not in train:
                raise InputError(
                    f"member {member.name!r} owns unknown source {src!r} (sources: {', '.join(chosen)})",
                    file=cfg_file,
                    field=f"members[{i}].sources",
                )

    eval_sets = _load_eval_sets(config, corpus_dir, load_preferences, load_corpus_eval_sets)
    base = _prepare_base(config, corpus_dir, progress=progress)
    return PreparedInputs(config, run_dir, corpus_dir, train, data_hashes, eval_sets, base)


def _load_eval_sets(
    config: ValuationConfig,
    corpus_dir: Path | None,
    load_preferences: Callable[..., Any],
    load_corpus_eval_sets: Callable[[Path], dict[str, Any]],
) -> list[EvalSet]:
    explicit = config.eval.sets()
    stray = [k for k in explicit if k not in config.utility.objectives]
    if stray:
        raise InputError(
            f"eval set given for objective {stray[0]!r}, which is not in utility.objectives "
            f"({', '.join(config.utility.objectives)})",
            file=config.config_path,
            field=f"eval.{stray[0]}",
        )
    corpus_sets = load_corpus_eval_sets(corpus_dir) if corpus_dir is not None else {}
    out: list[EvalSet] = []
    for objective in config.utility.objectives:
        if objective in explicit:
            path = explicit[objective]
            if not path.exists():
                raise InputError("no such eval file or folder", file=path, field=f"eval.{objective}")
            pset = load_preferences(path, format=config.eval.format)
        elif objective in corpus_sets:
            pset = corpus_sets[objective]
        else:
            where = f"the corpus has {', '.join(corpus_sets) or 'none'}" if corpus_dir else "no corpus is used"
            raise InputError(
                f"no eval set for objective {objective!r} ({where}); give one as eval.{objective} = \"PATH\"",
                file=config.config_path,
                field=f"eval.{objective}",
            )
        pairs = list(pset.pairs)
        if config.eval.max_pairs:
            pairs = pairs[: config.eval.max_pairs]
        if not pairs:
            raise InputError(f"the eval set of objective {objective!r} is empty", field=f"eval.{objective}")
        data_hash = sha256_json({"set": pset.content_hash(), "max_pairs": config.eval.max_pairs})
        out.append(EvalSet(objective=objective, pairs=pairs, data_hash=data_hash))
    return out


def _prepare_base(config: ValuationConfig, corpus_dir: Path | None, *, progress: bool) -> BaseModelInfo:
    from valuation.models import TinyConfig, prepare_base_model

    tiny_config = None
    if config.model.tiny is not None:
        if config.model.base != "tiny":
            raise InputError("[model.tiny] only applies to base = \"tiny\"", file=config.config_path, field="model.tiny")
        try:
            tiny_config = TinyConfig(**config.model.tiny)
        except TypeError as err:
            raise InputError(f"bad tiny-model setting ({err})", file=config.config_path, field="model.tiny") from None
    return prepare_base_model(
        config.model.base,
        cache_dir=config.model.cache_dir,
        corpus_dir=corpus_dir,
        seed=config.model.seed,
        progress=progress,
        tiny_config=tiny_config,
    )


def _synthesise_corpus(corpus_dir: Path, kwargs: dict[str, Any]) -> Path:
    """(Re)generate the synthetic corpus (deterministic for a seed) into ``corpus_dir``, swapped in whole.

    ``kwargs`` are `valuation.synth.SynthConfig` fields. An identical existing corpus is left untouched.
    """
    from valuation.synth import SynthConfig, write_corpus

    corpus_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".corpus-", dir=corpus_dir.parent))
    try:
        write_corpus(tmp, SynthConfig(**kwargs))
        if corpus_dir.exists() and _same_tree(tmp, corpus_dir):
            return corpus_dir
        old = corpus_dir.with_name(f".old-corpus-{int(time.time() * 1000)}")
        if corpus_dir.exists():
            corpus_dir.rename(old)
        tmp.rename(corpus_dir)
        shutil.rmtree(old, ignore_errors=True)
        return corpus_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(sha256_file(a / f) == sha256_file(b / f) for f in files_a)


# ---------------------------------------------------------------------------------------------------
# train / value


def run_train(
    config: ValuationConfig,
    *,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    prepared: PreparedInputs | None = None,
) -> tuple[PreparedInputs, dict[str, AdapterRecord]]:
    """Train (resumably) one adapter per source into ``RUN/adapters``; see `valuation.adapters.dpo`."""
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
    )
    return prepared, records


def coalition_table(
    tables: dict[str, EvalLogProbs],
    sources: Sequence[str],
    coalitions: np.ndarray,
    *,
    weighting: str,
    sizes: Sequence[int],
    metric: str,
    beta: float,
) -> CoalitionTable:
    """Utilities of the given coalitions (``bool[k, n]``) for every objective: pure arithmetic on the cache."""
    weights = coalition_weights(coalitions, weighting, sizes)
    objectives = tuple(tables)
    k, m = coalitions.shape[0], len(objectives)
    values, std_errs = np.zeros((k, m)), np.zeros((k, m))
    counts = np.zeros((k, m), dtype=np.int64)
    for j, objective in enumerate(objectives):
        column = preference_utility(weights, tables[objective].deltas(list(sources)), metric=metric, beta=beta)
        values[:, j], std_errs[:, j], counts[:, j] = column.values, column.std_errs, column.counts
    return CoalitionTable(tuple(sources), objectives, np.asarray(coalitions, dtype=bool), values, std_errs, counts)


# --- [utility] kind = "reward" (valuation.utilities.reward_coalition_utilities) -----------------------


def reward_objectives(config: ValuationConfig, prepared: PreparedInputs) -> list[Any]:
    """Per objective: the first ``[sampling] prompts_per_objective`` distinct prompts of its eval set and its
    reward scorer (loaded now, so a bad ``[reward]`` entry fails before anything is trained).

    Raises:
        InputError: a scorer that cannot be loaded, naming ``reward.<objective>``.
    """
    from valuation.coalition_utility.reward import RewardObjective
    from valuation.coalition_utility.scorers import load_reward_scorer

    specs = config.reward.specs()
    out = []
    for es in prepared.eval_sets:
        seen: dict[str, Any] = {}
        for pair in es.pairs:
            key = json.dumps(pair.prompt, sort_keys=True, ensure_ascii=False)
            if key not in seen:
                seen[key] = pair.prompt
            if len(seen) >= config.sampling.prompts_per_objective:
                break
        scorer = load_reward_scorer(specs[es.objective], file=config.config_path, field=f"reward.{es.objective}")
        out.append(RewardObjective(es.objective, list(seen.values()), scorer))
    return out


def reward_tabulator(
    config: ValuationConfig,
    prepared: PreparedInputs,
    adapters: dict[str, AdapterRecord],
    objectives: list[Any],
    *,
    progress: bool,
    sampling_report: dict[str, dict[str, Any]] | None = None,
) -> Callable[[np.ndarray], CoalitionTable]:
    """``tabulate(masks)`` for the `reward` utility: samples from every coalition's π_S (cached on disk under
    ``RUN/cache/samples``, keyed by base, adapter hashes of S, weights, sampling config and prompts), scores
    them per objective; std errs are those of the mean reward, counts the number of samples (the effective
    sample size for importance-sampled coalitions). ``sampling_report`` (if given) receives, per coalition
    label, how it was estimated (``importance`` / ``direct``) and its ESS per objective."""
    from valuation.coalition_utility.reward import reward_coalition_utilities

    sources = prepared.sources
    sizes = [len(prepared.train[s]) for s in sources]
    sc = config.sampling
    sampler = reward_sampler(config, prepared, adapters, cache_dir=prepared.run_dir / "cache" / "samples")
    importance = importance_settings(config, prepared)

    def tabulate(masks: np.ndarray) -> CoalitionTable:
        masks = np.asarray(masks, dtype=bool)
        weights = coalition_weights(masks, sc.weighting, sizes)
        found: list[dict[str, Any]] = []
        columns = reward_coalition_utilities(
            sampler, masks, weights, objectives, progress=progress, importance=importance, diagnostics=found
        )
        if sampling_report is not None:
            for mask, entry in zip(masks, found, strict=True):
                sampling_report[coalition_label(mask, sources)] = entry
        names = tuple(o.objective for o in objectives)
        return CoalitionTable(
            tuple(sources),
            names,
            masks,
            np.stack([columns[o].values for o in names], axis=1),
            np.stack([columns[o].std_errs for o in names], axis=1),
            np.stack([columns[o].counts for o in names], axis=1),
        )

    return tabulate


def reward_sampler(
    config: ValuationConfig, prepared: PreparedInputs, adapters: dict[str, AdapterRecord], *, cache_dir: Path | None
) -> Any:
    """The `valuation.decoding.coalition_responses.CoalitionSampler` of the `reward` utility: the base, every source's adapter and the
    ``[sampling]`` settings; samples cached under ``cache_dir`` (None: no cache)."""
    from valuation.decoding.coalition_responses import AdapterSpec, CoalitionSampler
    from valuation.decoding.decoder import SamplingParams

    sc = config.sampling
    return CoalitionSampler(
        prepared.base,
        [AdapterSpec(s, adapters[s].path, adapters[s].sha256) for s in prepared.sources],
        params=SamplingParams(
            max_new_tokens=sc.max_new_tokens, temperature=sc.temperature, top_p=sc.top_p, seed=sc.seed
        ),
        samples_per_prompt=sc.samples_per_prompt,
        cache_dir=cache_dir,
        max_batch_rows=sc.max_batch_rows,
        max_prompt_tokens=sc.max_prompt_tokens,
        packed_gemm=sc.packed_gemm,
    )


def importance_settings(config: ValuationConfig, prepared: PreparedInputs) -> Any:
    """`valuation.coalition_utility.reward.ImportanceSettings` from ``[sampling]`` (None when ``importance = false``): the
    proposal mixture's components (`valuation.decoding.importance.proposal_components`) weighted like coalitions."""
    sc = config.sampling
    if not sc.importance:
        return None
    from valuation.coalition_utility.reward import ImportanceSettings
    from valuation.decoding.importance import proposal_components

    sizes = [len(prepared.train[s]) for s in prepared.sources]
    return ImportanceSettings(
        component_weights=coalition_weights(proposal_components(len(sizes)), sc.weighting, sizes),
        min_ess=sc.min_ess,
        samples_per_prompt=sc.pool_samples_per_prompt or 2 * sc.samples_per_prompt,
    )


# --- end [utility] kind = "reward" --------------------------------------------------------------------


def run_value(
    config: ValuationConfig,
    *,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
) -> ValuationRun:
    """Train what is missing, score, tabulate every coalition, value sources (and members), write the run."""
    import warnings

    started = time.perf_counter()
    timings: dict[str, float] = {}
    prepared = prepare_inputs(config, progress=progress)
    rewards = reward_objectives(config, prepared) if config.utility.kind == "reward" else None  # [reward]
    timings["prepare_s"] = time.perf_counter() - started

    t0 = time.perf_counter()
    _, adapters = run_train(config, retrain=retrain, progress=progress, callbacks=callbacks, log=log, prepared=prepared)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = None if rewards is not None else compute_eval_logprobs(  # the reward utility samples instead
        prepared.base,
        adapters,
        prepared.eval_sets,
        cache_dir=prepared.run_dir / "cache" / "logprobs",
        max_length=config.training.max_length,
        batch_size=config.eval.batch_size,
        progress=progress,
    )
    timings["score_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sources = prepared.sources
    sizes = [len(prepared.train[s]) for s in sources]

    sampling_report: dict[str, dict[str, Any]] = {}
    reward_tabulate = (
        None if rewards is None else reward_tabulator(
            config, prepared, adapters, rewards, progress=progress, sampling_report=sampling_report
        )
    )

    def tabulate(masks: np.ndarray) -> CoalitionTable:
        if reward_tabulate is not None:  # [utility] kind = "reward"
            return reward_tabulate(masks)
        assert report is not None
        with warnings.catch_warnings():
            if config.utility.metric == "loglik":
                warnings.simplefilter("ignore", UserWarning)  # warned once below
            return coalition_table(
                report.tables,
                sources,
                masks,
                weighting=config.arithmetic.weighting,
                sizes=sizes,
                metric=config.utility.metric,
                beta=config.utility_beta,
            )

    if config.utility.metric == "loglik" and rewards is None:
        from valuation.coalition_utility.preference import LOGLIK_WARNING

        warnings.warn(LOGLIK_WARNING, UserWarning, stacklevel=2)
        if log is not None:
            log(f"warning: {LOGLIK_WARNING}")

    groups = {m.name: list(m.sources) for m in config.members} or None
    table, game, result, member_result = value_coalitions(
        tabulate,
        sources,
        prepared.objectives,
        groups,
        method=config.shapley.method,
        budget=config.shapley.budget,
        seed=config.shapley.seed,
        progress=progress,
    )
    timings["value_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    run = ValuationRun(
        run_dir=prepared.run_dir,
        prepared=prepared,
        adapters=adapters,
        table=table,
        game=game,
        result=result,
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


def value_coalitions(
    tabulate: Callable[[np.ndarray], CoalitionTable],
    players: Sequence[str],
    objectives: Sequence[str],
    groups: dict[str, list[str]] | None,
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
    from valuation.games.coalitions import all_coalitions
    from valuation.games.estimators import approximate
    from valuation.games.game import FunctionGame, GroupedGame, TableGame

    n = len(players)
    if n <= full_table_max or method == "exact":
        table = tabulate(all_coalitions(n))
        game = TableGame(players, table.objectives, table.coalitions, table.values)
        result = approximate(game, method, budget, seed=seed, progress=progress)
        source_game: Any = game
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
        member_result = approximate(GroupedGame(source_game, groups), method, budget, seed=seed, progress=progress)
    return table, game, result, member_result


# ---------------------------------------------------------------------------------------------------
# outputs


def write_run(run: ValuationRun, *, logprobs_computed: int = 0, logprobs_cached: int = 0) -> dict[str, Path]:
    """Write game.csv, game.parquet, values.json, values_members.json, config.toml and run.json (atomic)."""

    run_dir = run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["game_csv"] = run_dir / "game.csv"
    run.game.to_csv(files["game_csv"])
    files["game_parquet"] = run_dir / "game.parquet"
    _write_parquet(run.table, files["game_parquet"], coalition_label)
    files["values"] = run_dir / "values.json"
    atomic_write_text(files["values"], json.dumps(run.result.to_json_dict(), indent=2) + "\n")
    if run.member_result is not None:
        files["values_members"] = run_dir / "values_members.json"
        atomic_write_text(files["values_members"], json.dumps(run.member_result.to_json_dict(), indent=2) + "\n")
    config = run.prepared.config
    if config.config_path is not None and config.config_path.is_file():
        files["config"] = run_dir / "config.toml"
        atomic_write_text(files["config"], config.config_path.read_text(encoding="utf-8"))
    files["run"] = run_dir / "run.json"
    atomic_write_text(files["run"], json.dumps(_provenance(run, logprobs_computed, logprobs_cached), indent=2) + "\n")
    return files


def _write_parquet(table: CoalitionTable, path: Path, label: Callable[[np.ndarray, Sequence[str]], str]) -> None:
    import polars as pl

    columns: dict[str, Any] = {
        "coalition": [label(row, table.players) for row in table.coalitions],
        "size": table.coalitions.sum(axis=1).astype(np.int64),
    }
    for j, objective in enumerate(table.objectives):
        columns[objective] = table.values[:, j]
        columns[f"{objective}_std_err"] = table.std_errs[:, j]
        columns[f"{objective}_n_pairs"] = table.counts[:, j]
    with atomic_path(path) as tmp:
        pl.DataFrame(columns).write_parquet(tmp)


def _provenance(run: ValuationRun, computed: int, cached: int) -> dict[str, Any]:
    prepared = run.prepared
    config = prepared.config
    base = prepared.base
    return {
        "format": "payoutsim-valuation-run/1",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": config.name,
        "config_file": None if config.config_path is None else str(config.config_path),
        "config_hash": sha256_json(config.model_dump(mode="json", exclude={"config_path"})),
        "base_model": {"name": base.name, "path": str(base.path), "sha256": base.sha256, "preset": base.preset},
        "sources": {
            s: {
                "n_pairs": len(prepared.train[s]),
                "data_hash": prepared.data_hashes[s],
                "adapter_sha256": run.adapters[s].sha256,
                "adapter_status": run.adapters[s].status,
                "metrics": run.adapters[s].manifest.get("metrics", {}),
                "train_wall_time_s": run.adapters[s].manifest.get("wall_time_s"),
            }
            for s in prepared.sources
        },
        "eval_sets": {es.objective: {"n_pairs": len(es.pairs), "data_hash": es.data_hash} for es in prepared.eval_sets},
        "utility": config.utility.model_dump(mode="json") | {"beta": config.utility_beta},
        **(  # [utility] kind = "reward": the scorers and the sampling settings
            {"reward": config.reward.specs(), "sampling": config.sampling.model_dump(mode="json"),
             "sampled_coalitions": _sampling_summary(run.sampling_report)}
            if config.utility.kind == "reward"
            else {}
        ),
        "arithmetic": config.arithmetic.model_dump(mode="json"),
        "shapley": config.shapley.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"),
        "members": [m.model_dump(mode="json") for m in config.members],
        "coalitions_evaluated": int(run.table.coalitions.shape[0]),
        "logprob_tables": {"computed": computed, "cached": cached},
        "timings": run.timings,
    }


def _sampling_summary(report: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How the `reward` coalitions were estimated: counts per method, the smallest ESS, and every coalition."""
    methods = [entry["method"] for entry in report.values()]
    ess = [v for entry in report.values() for v in entry.get("ess", {}).values()]
    return {
        "importance": methods.count("importance"),
        "direct": methods.count("direct"),
        "min_ess": min(ess) if ess else None,
        "coalitions": dict(report),
    }


def efficiency_gap(run: ValuationRun) -> np.ndarray:
    """Per objective, Σ_i φ_i − (u(N) − u(∅)) (0 up to rounding for exact Shapley on a full table)."""
    n = len(run.table.players)
    if not run.game.is_complete():
        return np.full(len(run.table.objectives), np.nan)
    dense = run.game.dense_table()
    return run.result.values.sum(axis=0) - (dense[2**n - 1] - dense[0])


def summary_rows(run: ValuationRun) -> list[dict[str, Any]]:
    """One dict per source: value and std err per objective (what the CLI prints as a table)."""
    rows = []
    res = run.result
    for i, player in enumerate(res.players):
        row: dict[str, Any] = {"source": player}
        for k, objective in enumerate(res.objectives):
            row[objective] = float(res.values[i, k])
            row[f"{objective}_std_err"] = float(res.std_errs[i, k])
        rows.append(row)
    return rows


__all__ = [
    "FULL_TABLE_MAX_PLAYERS",
    "CoalitionTable",
    "PreparedInputs",
    "ValuationRun",
    "coalition_table",
    "efficiency_gap",
    "prepare_inputs",
    "run_train",
    "run_value",
    "summary_rows",
    "value_coalitions",
    "write_run",
]


# ---------------------------------------------------------------------------------------------------
# uncertainty of exact values from the finite eval sets

MAX_GROUPS_FOR_STD_ERRS = 14


def eval_sampling_values(run: ValuationRun, groups: Mapping[str, Sequence[str]]) -> ValuationResult:
    """Exact Shapley values of the players in `groups` with their evaluation-sampling standard errors.

    The ``preference`` utility of a coalition is a mean over the objective's eval pairs,
    u_k(S) = (1/p) Σ_j s_k(S, j), and the Shapley value is linear in u, so φ_i = (1/p) Σ_j φ_i(j) where
    φ_i(j) is the Shapley value of the one-pair game s_k(·, j). The standard error of φ_i is the sample
    standard deviation of φ_i(j) over the pairs divided by √p: the uncertainty that comes from evaluating
    on a finite eval set (exact Shapley has no estimator error of its own). A player's coalitions are the
    unions of its sources, so the same call serves members (several sources each) and single sources.
    Everything comes from the run's cached log-probs; no model is loaded when the cache is complete.

    Raises:
        ValueError: more than `MAX_GROUPS_FOR_STD_ERRS` players, or a run without the preference utility.
    """
    from valuation.games.coalitions import all_coalitions
    from valuation.games.estimators import exact_shapley
    from valuation.games.result import ValuationResult

    prepared = run.prepared
    config = prepared.config
    if config.utility.kind != "preference":
        raise ValueError("eval-sampling standard errors need the preference utility")
    if len(groups) > MAX_GROUPS_FOR_STD_ERRS:
        raise ValueError(f"at most {MAX_GROUPS_FOR_STD_ERRS} players, got {len(groups)}")
    report = compute_eval_logprobs(
        prepared.base,
        run.adapters,
        prepared.eval_sets,
        cache_dir=run.run_dir / "cache" / "logprobs",
        max_length=config.training.max_length,
        batch_size=config.eval.batch_size,
        progress=False,
    )
    sources = list(prepared.sources)
    players = list(groups)
    masks = all_coalitions(len(players))
    owned = np.zeros((len(players), len(sources)), dtype=bool)
    for g, name in enumerate(players):
        for src in groups[name]:
            owned[g, sources.index(src)] = True
    source_masks = (masks.astype(np.int64) @ owned.astype(np.int64)) > 0
    weights = coalition_weights(source_masks, config.arithmetic.weighting, [len(prepared.train[s]) for s in sources])
    objectives = list(report.tables)
    values = np.zeros((len(players), len(objectives)))
    std_errs = np.zeros_like(values)
    for k, objective in enumerate(objectives):
        margins = coalition_margins(weights, report.tables[objective].deltas(sources))
        scores = pair_scores(margins, config.utility.metric, config.utility_beta)  # [2^m, p]
        per_pair = exact_shapley(scores)  # [m, p]: the one-pair games are the table's columns
        p = per_pair.shape[1]
        values[:, k] = per_pair.mean(axis=1)
        std_errs[:, k] = per_pair.std(axis=1, ddof=1) / np.sqrt(p) if p > 1 else np.nan
    return ValuationResult("exact", tuple(players), tuple(objectives), values, std_errs, info={"std_err": "eval sampling"})
