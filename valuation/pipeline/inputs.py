"""The pipeline's first step: load and check everything a valuation run needs before anything is trained.

`prepare_inputs(config)` → `PreparedInputs`: the players' training pairs (one source = one player), their
content hashes, one eval set per objective and the prepared base model. With ``[data] synth`` the synthetic
corpus is generated first into ``<output>/corpus`` (`synthesise_corpus`). Every problem is an `InputError`
naming the config field, raised before any model is trained or any file written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuation.composition.logprobs import EvalSet
from valuation.errors import InputError
from valuation.files import sha256_file, sha256_json
from valuation.members import check_sources_known
from valuation.models import BaseModelInfo, TinyConfig, prepare_base_model
from valuation.pipeline.config import ValuationConfig
from valuation.sources import PreferencePair, load_corpus_eval_sets, load_preferences
from valuation.synth import SynthConfig, write_corpus

MAX_SOURCES = 100  # beyond 16 sources the game is the compact per-pair game (no coalition table)
EXACT_MAX_SOURCES = 22  # exact Shapley's limit in valuation.games.estimators


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


def prepare_inputs(config: ValuationConfig, *, progress: bool = True) -> PreparedInputs:
    """Load the training data and eval sets, check sources/objectives/members, prepare the base model.

    Raises:
        InputError: unknown source, missing eval set for an objective, a member owning an unknown source,
            too many sources, or any data/model problem the loaders report.
    """
    run_dir = config.output.dir
    data = config.data
    corpus_dir = data.corpus
    if data.synth is not None:
        corpus_dir = synthesise_corpus(run_dir / "corpus", data.synth.model_dump(exclude_none=True))
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
    chosen = _chosen_sources(config, list(by_source), origin)
    train = {s: by_source[s] for s in chosen}
    data_hashes = {s: pset.content_hash(s) for s in chosen}
    _check_members(config, chosen)
    eval_sets = load_eval_sets(config, corpus_dir)
    base = prepare_base(config, corpus_dir, progress=progress)
    return PreparedInputs(config, run_dir, corpus_dir, train, data_hashes, eval_sets, base)


def _chosen_sources(config: ValuationConfig, available: list[str], origin: Path) -> list[str]:
    """``[data] sources`` (checked against the data) or every source of the data, within the limits."""
    cfg_file = config.config_path
    if config.data.sources is not None:
        unknown = [s for s in config.data.sources if s not in available]
        if unknown:
            raise InputError(
                f"unknown source {unknown[0]!r} (the data has: {', '.join(available) or 'none'})",
                file=cfg_file,
                field="data.sources",
            )
        chosen = list(config.data.sources)
    else:
        chosen = list(available)
    if not chosen:
        raise InputError("the data holds no preference pairs", file=origin)
    if len(chosen) > MAX_SOURCES:
        raise InputError(
            f"at most {MAX_SOURCES} sources can be valued, got {len(chosen)}", file=cfg_file, field="data.sources"
        )
    if config.shapley.method == "exact" and len(chosen) > EXACT_MAX_SOURCES:
        raise InputError(
            f"exact Shapley over {len(chosen)} sources needs all 2^{len(chosen)} = {2 ** len(chosen):.3g} coalitions "
            f"(at most {EXACT_MAX_SOURCES} sources): use a sampled method, method = \"regression\" (sampled "
            'Shapley with standard errors; stops at [shapley] target_se), "permutation" or "banzhaf"',
            file=cfg_file,
            field="shapley.method",
        )
    return chosen


def _check_members(config: ValuationConfig, sources: list[str]) -> None:
    """Every ``[[members]]`` source must be one of the valued sources."""
    check_sources_known(config.members, sources, file=config.config_path, listed_as="sources")


def load_eval_sets(config: ValuationConfig, corpus_dir: Path | None) -> list[EvalSet]:
    """One eval set per ``[utility] objectives`` entry: ``[eval] <objective> = PATH`` or the corpus's
    ``eval/<objective>.jsonl``, cut to ``[eval] max_pairs``; ``data_hash`` covers the set and the cut.

    Raises:
        InputError: an eval set for an unknown objective, a missing file, no set for an objective, an empty set.
    """
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


def prepare_base(config: ValuationConfig, corpus_dir: Path | None, *, progress: bool) -> BaseModelInfo:
    """The ``[model]`` base model, prepared (the ``tiny`` preset is pre-trained on the corpus, cached).

    Raises:
        InputError: ``[model.tiny]`` with another base, or a bad tiny-model setting.
    """
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


def synthesise_corpus(corpus_dir: Path, kwargs: dict[str, Any]) -> Path:
    """(Re)generate the synthetic corpus (deterministic for a seed) into ``corpus_dir``, swapped in whole.

    ``kwargs`` are `valuation.synth.SynthConfig` fields. An identical existing corpus is left untouched.
    """
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
    """The same relative file names with the same sha256 contents under ``a`` and ``b``."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(sha256_file(a / f) == sha256_file(b / f) for f in files_a)


__all__ = [
    "EXACT_MAX_SOURCES",
    "MAX_SOURCES",
    "PreparedInputs",
    "load_eval_sets",
    "prepare_base",
    "prepare_inputs",
    "synthesise_corpus",
]
