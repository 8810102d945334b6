"""The valuation config (``CONFIG.toml``) read by ``payoutsim train`` and ``payoutsim value``.

Example (every table but ``[data]`` and ``[output]`` may be left out)::

    name = "demo"                       # optional, for humans

    [data]                              # exactly one of corpus / path / synth
    corpus = "../../runs/corpus"        # a payoutsim synthetic corpus (train/<source>.jsonl, eval/*.jsonl)
    # path = "pairs.jsonl"              # any preference file or folder (`payoutsim data inspect` reads it)
    # synth = { seed = 1, pairs_per_source = 200 }   # generate a corpus into <output>/corpus
    # synth = { seed = 1, n_sources = 64 }          # … a market of src00 … src63 with drawn planted profiles
    sources = ["flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat", "noisy"]   # default: all

    [model]
    base = "tiny"                       # "tiny", "smollm2" or a local HF model dir
    seed = 0                            # tiny only: seed of the pre-training
    # [model.tiny]                      # tiny only: `valuation.models.TinyConfig` fields

    [training]                          # `valuation.adapters.config.TrainingConfig`
    learning_rate = 1e-3
    epochs = 2
    batch_size = 16
    max_length = 256
    beta = 0.1
    lora_r = 8
    lora_alpha = 16
    seed = 0

    [arithmetic]
    weighting = "sum"                   # sum | mean | size

    [utility]
    kind = "preference"
    metric = "bt"                       # bt | accuracy | loglik (warns: unbounded)
    objectives = ["helpfulness", "harmlessness"]
    # beta = 0.1                        # default: training.beta

    [eval]                              # objective = eval set; default: the corpus's eval/<objective>.jsonl
    # helpfulness = "../shared/data/dpo-en-demo.json"
    max_pairs = 0                       # 0 = all pairs; else the first N of each eval set
    batch_size = 8                      # scoring batch size

    [shapley]
    method = "exact"                    # exact | permutation | regression | banzhaf | loo | least_core
    # budget = 2000
    seed = 0
    # target_se = 0.01                  # > 16 sources: stop sampling at SE ≤ 1% of |u(N) − u(∅)| (the default)
    # max_seconds = 60                  # … or after a minute (default: no time limit; budget caps the work)

    [output]
    dir = "../../runs/demo"             # the run directory

    [retrain]                           # `payoutsim value --mode retrain|both` (valuation.retraining.run)
    orders = 3                          # random source orders of the sequential retraining
    seed = 0
    merge = "cat"                       # none | cat | svd: also score weight-merged adapters
    seeds = 1                           # >= 2: retrain again with other seeds; fidelity.json gets the noise floor

    [reward]                            # with [utility] kind = "reward": a scorer per objective
    # helpfulness = "bt-minilm:heads/helpfulness"   # or "callable:MODULE:FUNCTION", "hf:DIR"
    harmlessness = "profanity"          # the default for harmlessness

    [sampling]                          # `valuation.decoding`: responses of each coalition's model
    prompts_per_objective = 16
    samples_per_prompt = 2
    max_new_tokens = 48
    temperature = 1.0
    top_p = 1.0
    seed = 0
    weighting = "mean"                  # normalised; "sum" overshoots at |S| >= 2

    [[members]]                         # optional: member-level values (who owns which sources)
    name = "alice"
    sources = ["flan_v2_niv2", "sharegpt"]

    [runtime]                           # where it computes, not what: `valuation.runtime.settings`
    device = "auto"                     # auto | cpu | cuda | cuda:i
    backend = "local"                   # local | ray (address = "" | "auto" | "ray://host:port")

Relative paths are resolved against the config file's folder. Problems are `InputError`s naming the
config file, the line when TOML is malformed, and the offending field (``data.sources``, ``eval.helpfulness``…).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from valuation.adapters.config import TrainingConfig
from valuation.coalition_utility.scorers import SPEC_HELP, parse_reward_spec
from valuation.errors import InputError, field_path
from valuation.files import require_file, toml_text
from valuation.members import Member
from valuation.runtime.settings import RuntimeSection
from valuation.synth.market import MAX_GENERATED_SOURCES
from valuation.text import name_problem

DEFAULT_OBJECTIVES = ("helpfulness", "harmlessness")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthSection(_Section):
    """Generate the synthetic corpus into ``<output>/corpus`` (`valuation.synth.write_corpus`)."""

    seed: int = Field(0, ge=0)
    pairs_per_source: int | None = Field(None, ge=1)
    eval_pairs_per_objective: int | None = Field(None, ge=1)
    n_sources: int | None = Field(None, ge=1, le=MAX_GENERATED_SOURCES)
    """Generated sources src00 … with drawn planted profiles (`valuation.synth.market`) instead of the 7
    named ones."""


class DataSection(_Section):
    """Where the training pairs come from and which sources are players."""

    corpus: Path | None = None
    path: Path | None = None
    synth: SynthSection | None = None
    format: str = "auto"
    source_column: str = "source"
    sources: list[str] | None = None
    drop_duplicates: bool = False

    @model_validator(mode="after")
    def _one_origin(self) -> DataSection:
        given = [k for k in ("corpus", "path", "synth") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of corpus, path or synth" + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one source (or leave the key out for all sources)")
            dup = sorted({s for s in value if value.count(s) > 1})
            if dup:
                raise ValueError(f"source {dup[0]!r} is listed twice")
        return value


class ModelSection(_Section):
    """The base model: a preset (``tiny``, ``smollm2``) or a local Hugging Face model dir."""

    base: str = "tiny"
    seed: int = Field(0, ge=0)
    cache_dir: Path | None = None
    tiny: dict[str, Any] | None = None


class ArithmeticSection(_Section):
    """How adapters combine in a coalition (`valuation.composition.arithmetic`)."""

    weighting: Literal["sum", "mean", "size"] = "sum"  # valuation.composition.arithmetic.WEIGHTINGS (a test checks)


class UtilitySection(_Section):
    """The coalition utility per objective (`valuation.coalition_utility`)."""

    kind: Literal["preference", "reward"] = "preference"
    metric: Literal["bt", "accuracy", "loglik"] = "bt"
    beta: float | None = Field(None, gt=0)
    objectives: list[str] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one objective")
        if len(set(value)) != len(value):
            raise ValueError("objectives must be unique")
        for name in value:
            if (problem := name_problem(name)) is not None:
                raise ValueError(f"objective name {name!r} {problem}")
        return value


class EvalSection(BaseModel):
    """Evaluation sets per objective (extra keys: ``objective = "path"``) and scoring options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    max_pairs: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    format: str = "auto"

    def sets(self) -> dict[str, Path]:
        """objective → eval-set path, for the objectives given explicitly."""
        return {k: Path(v) for k, v in (self.model_extra or {}).items()}

    @model_validator(mode="after")
    def _paths(self) -> EvalSection:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"eval set for objective {key!r} must be a path string")
        return self


class UncertaintySection(_Section):
    """``[uncertainty]``: the values' standard errors and intervals from a bootstrap over the eval items
    (`valuation.games.uncertainty`): ``replicates`` tables (0: none), interval ``level``, ``seed``. With
    ``target`` (a width in utility units) ``payoutsim value`` grows the eval pairs per objective in rounds,
    from ``start_pairs``, until every source value's interval is at most that wide, or ``max_pairs`` or
    ``max_seconds`` are spent (`valuation.pipeline.rounds`)."""

    replicates: int = Field(200, ge=0, le=10_000)
    level: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    target: float | None = Field(None, gt=0)
    start_pairs: int = Field(50, ge=2)
    max_pairs: int = Field(2000, ge=2)
    max_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _enough(self) -> UncertaintySection:
        if self.replicates == 1:
            raise ValueError("replicates: one replicate has no spread: use 0 (off) or at least 2")
        if self.target is not None and self.replicates == 0:
            raise ValueError("replicates: a target needs replicates (at least 2) to measure the intervals")
        if self.start_pairs > self.max_pairs:
            raise ValueError(f"start_pairs ({self.start_pairs}) exceeds max_pairs ({self.max_pairs})")
        return self


class ShapleySection(_Section):
    """The estimator (`valuation.games.estimators.approximate`)."""

    method: Literal["exact", "permutation", "regression", "banzhaf", "loo", "least_core"] = "exact"  # estimators.METHODS (tested)
    budget: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    target_se: float | None = Field(
        None, gt=0, lt=1, description="Sampled methods on the compact game (more than 16 sources): stop once every "
        "standard error is at most this fraction of |u(N) − u(∅)| of its objective (default 0.01)."
    )
    max_seconds: float | None = Field(
        None, gt=0, description="Sampled methods on the compact game: also stop after this many seconds (default: "
        "no time limit, so the values depend on the seed alone; the budget, default 200,000 coalitions, caps the work)."
    )


class OutputSection(_Section):
    """The run directory (adapters, log-prob cache, game table, values)."""

    dir: Path


# --- [retrain]: the retraining baseline (valuation.retraining.run) ------------------------------------------
class RetrainSection(_Section):
    """``payoutsim value --mode retrain|both``: real coalition adapters to check the arithmetic against."""

    orders: int = Field(3, ge=1, le=50, description="Random source orders of the sequential retraining.")
    seed: int = Field(0, ge=0, description="Seeds the orders and the shuffle of the union data.")
    sequential: bool = Field(True, description="Train sequential coalition adapters (one stage per source).")
    union: bool = Field(True, description="Train one adapter per coalition on the shuffled union of its data.")
    merge: Literal["none", "cat", "svd"] = Field("cat", description="Also score weight-merged adapters.")
    max_sources: int = Field(6, ge=1, le=12, description="Refuse more sources (2^n - 1 coalition models).")
    seeds: int = Field(
        1, ge=1, le=20, description="Independent retrainings: replicate i trains with [training] seed + i and "
        "[retrain] seed + i (its own per-source adapters too); >= 2 measures retraining's own noise floor."
    )
    bootstrap: int = Field(
        1000, ge=0, le=100_000, description="Bootstrap replicates over eval pairs for the noise-floor figures' "
        "uncertainty (0 = none)."
    )


# --- end [retrain] -----------------------------------------------------------------------------------


# --- [reward] / [sampling]: the `reward` utility (valuation.coalition_utility.scorers, valuation.decoding.sampling)
DEFAULT_REWARD_SCORERS = {"harmlessness": "profanity"}


class RewardSection(BaseModel):
    """Reward scorer per objective (extra keys: ``objective = "SPEC"``, see `valuation.coalition_utility.scorers`).

    Specs are checked (and ``bt-minilm:``/``hf:`` paths resolved) by `parse_valuation_config`;
    ``harmlessness`` defaults to ``"profanity"``; other objectives need a scorer when ``kind = "reward"``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    def specs(self) -> dict[str, str]:
        """objective → scorer spec, as given (after resolution: with absolute paths)."""
        return {k: v for k, v in (self.model_extra or {}).items()}


class SamplingSection(_Section):
    """How the `reward` utility samples responses from each coalition's model (`valuation.decoding`)."""

    prompts_per_objective: int = Field(16, ge=1, description="First N distinct prompts of each objective's eval set.")
    samples_per_prompt: int = Field(2, ge=1, description="Responses sampled per prompt and coalition.")
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Max new tokens per response.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, ge=0, description="Seed of the common random numbers (same for every coalition).")
    weighting: Literal["sum", "mean", "size"] = Field(
        "mean", description="Token-level weighting; 'sum' overshoots at |S| >= 2 (see valuation.decoding.next_token)."
    )
    max_batch_rows: int = Field(64, ge=1, description="Max forward rows (sequences x (1 + |S|)) per batch.")
    max_prompt_tokens: int = Field(256, ge=1, description="Keep only the last N prompt tokens.")
    packed_gemm: bool = Field(
        True, description="Decode steps' matmuls through MKL's packed GEMM where it helps (fp32 CPU models with "
        "64 MiB to 1 GiB of linear weights; valuation.composition.packed); costs up to four extra copies of the "
        "linear weights."
    )
    importance: bool = Field(
        True, description="Estimate all coalitions from one proposal pool by importance sampling "
        "(valuation.decoding.importance); coalitions with too small an effective sample size are sampled directly."
    )
    min_ess: float = Field(
        0.15, gt=0, le=1, description="Importance estimates need ESS >= min_ess x pool size (per objective)."
    )
    pool_samples_per_prompt: int | None = Field(
        None, ge=1, description="Proposal pool responses per prompt (default: 2 x samples_per_prompt)."
    )


# --- end [reward] / [sampling] -----------------------------------------------------------------------


class ValuationConfig(_Section):
    """A parsed, validated valuation config; paths are absolute (resolved against the config's folder)."""

    name: str | None = None
    data: DataSection
    model: ModelSection = ModelSection()
    training: TrainingConfig = TrainingConfig()
    arithmetic: ArithmeticSection = ArithmeticSection()
    utility: UtilitySection = UtilitySection()
    eval: EvalSection = EvalSection()
    shapley: ShapleySection = ShapleySection()
    output: OutputSection
    retrain: RetrainSection = RetrainSection()  # [retrain] (valuation.retraining.run)
    reward: RewardSection = RewardSection()  # [reward] (valuation.coalition_utility.scorers)
    sampling: SamplingSection = SamplingSection()  # [sampling] (valuation.decoding)
    uncertainty: UncertaintySection = UncertaintySection()  # [uncertainty] (valuation.games.uncertainty)
    members: list[Member] = Field(default_factory=list)  # [[members]] (valuation.members)
    # [runtime] (valuation.runtime.settings): where the run computes; left out of dumps and hashes
    runtime: RuntimeSection = Field(default_factory=RuntimeSection, exclude=True)
    config_path: Path | None = None

    @model_validator(mode="after")
    def _members(self) -> ValuationConfig:
        names = [m.name for m in self.members]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"member {dup[0]!r} is listed twice")
        return self

    @property
    def utility_beta(self) -> float:
        """β of the Bradley–Terry utility: ``[utility] beta`` or, by default, the training β."""
        return self.utility.beta if self.utility.beta is not None else self.training.beta


UNCERTAINTY_FLAGS: dict[str, str] = {"target": "--target-width", "max_pairs": "--max-eval-pairs", "max_seconds": "--max-seconds"}


def with_uncertainty(config: ValuationConfig, overrides: Mapping[str, Any]) -> ValuationConfig:
    """`config` with the ``[uncertainty]`` keys of `overrides` that are not None (command-line flags,
    `UNCERTAINTY_FLAGS`); `InputError` naming the flag for a value the section refuses."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return config
    try:
        section = UncertaintySection.model_validate({**config.uncertainty.model_dump(), **given})
    except ValidationError as err:
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else next(iter(given))
        raise InputError(first["msg"].removeprefix("Value error, "), field=UNCERTAINTY_FLAGS.get(key, key)) from None
    return config.model_copy(update={"uncertainty": section})


def with_eval_pairs(config: ValuationConfig, pairs: int) -> ValuationConfig:
    """`config` evaluating on the first `pairs` pairs of each eval set (``[eval] max_pairs``). A synthetic
    corpus is left as it is (the ``tiny`` base model is pre-trained on it: a bigger corpus would be another
    base model and retrain every adapter), so its ``eval_pairs_per_objective`` is the most there is."""
    return config.model_copy(update={"eval": config.eval.model_copy(update={"max_pairs": pairs})})


def load_valuation_config(path: str | Path, *, output_dir: str | Path | None = None) -> ValuationConfig:
    """Read and validate ``CONFIG.toml``; ``output_dir`` (relative to the cwd) overrides ``[output] dir``.

    Raises:
        InputError: a missing file or a folder, an unreadable file, a byte-order mark, text that is not UTF-8,
            malformed TOML (with its line) or an invalid field (named, dotted).
    """
    path = require_file(path, missing="config file not found")
    try:
        raw_bytes = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the config ({err.strerror or err})", file=path) from None
    text = toml_text(raw_bytes, file=path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"line (\d+)", str(err))
        raise InputError(
            f"malformed TOML: {err}", file=path, row=f"line {match.group(1)}" if match else None
        ) from None
    if output_dir is not None:
        raw.setdefault("output", {})
        if isinstance(raw["output"], dict):
            raw["output"]["dir"] = str(Path(output_dir).resolve())
    return parse_valuation_config(raw, base_dir=path.resolve().parent, file=path)


def parse_valuation_config(
    raw: dict[str, Any], *, base_dir: Path, file: str | Path | None = None
) -> ValuationConfig:
    """Validate a config dict (as read from TOML) and resolve its relative paths against ``base_dir``."""
    if "config_path" in raw:
        raise InputError("unknown key", file=file, field="config_path")
    try:
        config = ValuationConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = field_path(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "required key is missing"
        raise InputError(message, file=file, field=loc or None) from None
    return _resolve(config, Path(base_dir), None if file is None else Path(file))


def _resolve(config: ValuationConfig, base_dir: Path, file: Path | None) -> ValuationConfig:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (base_dir / p.expanduser()).resolve()

    data = config.data.model_copy(update={"corpus": absolute(config.data.corpus), "path": absolute(config.data.path)})
    model = config.model
    updates: dict[str, Any] = {"cache_dir": absolute(model.cache_dir)}
    if model.base not in ("tiny", "smollm2"):
        updates["base"] = str(absolute(Path(model.base)))
    model = model.model_copy(update=updates)
    sets = {k: str(absolute(v)) for k, v in config.eval.sets().items()}
    evals = EvalSection.model_validate(
        {"max_pairs": config.eval.max_pairs, "batch_size": config.eval.batch_size, "format": config.eval.format}
        | sets
    )
    output = config.output.model_copy(update={"dir": absolute(config.output.dir)})
    reward = _resolve_reward(config, base_dir, file)  # [reward]
    return config.model_copy(
        update={
            "data": data,
            "model": model,
            "eval": evals,
            "output": output,
            "reward": reward,
            "config_path": None if file is None else file.resolve(),
        }
    )


def _resolve_reward(config: ValuationConfig, base_dir: Path, file: Path | None) -> RewardSection:
    """Check the ``[reward]`` specs (`valuation.coalition_utility.scorers.parse_reward_spec`) and resolve their paths.

    Every key must be an objective of ``utility.objectives``; with ``kind = "reward"`` every objective gets
    a scorer (``harmlessness`` defaults to ``profanity``) or the error names ``reward.<objective>``.
    """
    given = config.reward.specs()
    objectives = config.utility.objectives
    for key in given:
        if key not in objectives:
            raise InputError(
                f"reward scorer given for objective {key!r}, which is not in utility.objectives "
                f"({', '.join(objectives)})",
                file=file,
                field=f"reward.{key}",
            )
    specs = dict(given)
    if config.utility.kind == "reward":
        for objective in objectives:
            if objective not in specs:
                if objective not in DEFAULT_REWARD_SCORERS:
                    raise InputError(
                        f"no reward scorer for objective {objective!r}; give reward.{objective} = \"SPEC\" "
                        f"({SPEC_HELP})",
                        file=file,
                        field=f"reward.{objective}",
                    )
                specs[objective] = DEFAULT_REWARD_SCORERS[objective]
    resolved = {
        key: str(parse_reward_spec(value, base_dir=base_dir, file=file, field=f"reward.{key}"))
        for key, value in specs.items()
    }
    return RewardSection.model_validate(resolved)


__all__ = [
    "DEFAULT_OBJECTIVES",
    "RewardSection",
    "SamplingSection",
    "ValuationConfig",
    "load_valuation_config",
    "parse_valuation_config",
]
