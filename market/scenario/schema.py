"""Scenarios: a pooling agreement written as TOML, validated with pydantic.

A scenario names the members and the data sources each owns, the revenue per period, the currency, the
platform fee, the payout rule, the objective weights, the negative-value and no-value policies and where
the valuation comes from. Every key below is checked; a bad scenario raises `InputError` naming the file and the
field (list positions are 1-based: ``members[2].sources`` is the second ``[[members]]`` table). The file
is UTF-8 without a byte-order mark; names (scenario, members, sources, periods) hold no control
characters (`valuation.text`); decimal strings are plain ASCII decimals (`market.money.parse_decimal`).

This module is the format: the pydantic model and `load_scenario` (TOML file → validated `Scenario`).
The files a scenario references (coalition table, data) are read and cross-checked by
`market.scenario.inputs.load_inputs`; ``[valuation] config`` runs the valuation pipeline through
`market.scenario.valuation`.

```toml
[market]
name = "demo"
currency = "EUR"          # ISO 4217; minor units from the currency (JPY 0, EUR 2, KWD 3)
revenue = "100000.00"     # per period; decimal string or number (read as Decimal, never a binary float);
                          # a string is a plain ASCII decimal: no exponent, no "1_000", no "１"
                          # at most 2^63 - 1 minor units (market.money.MAX_MINOR: 92233720368547758.07 EUR)
platform_fee = 0.10       # fraction in [0, 1) kept by the platform (rounded half-even to a minor unit)
rule = "shapley"          # shapley | banzhaf | loo | least_core | proportional | equal | robust_shapley
negative = "clip"         # clip | shift | error   (see market.rules)
no_value = "hold"         # hold | equal: when no member has a positive value (see market.rules)

[objectives]              # weights of the multi-objective utility: >= 0, summing to 1
helpfulness = 0.5         # (an objective of the game that is not listed gets weight 0; may be
harmlessness = 0.5        #  omitted altogether when the game has a single objective)

[[members]]
name = "alice"
sources = ["sharegpt"]    # a member may own several sources; a source has at most one owner
joins = "2025-Q2"         # optional: first period the member is in the pool (needs [[periods]])
leaves = "2025-Q4"        # optional: first period the member is no longer in the pool

[valuation]
utilities = "game.csv"    # a source-level coalition table (GAME.csv / Parquet), relative to this file
# config = "valuation.toml"   # instead of `utilities`: run (or reuse) the valuation pipeline of this
                              # valuation CONFIG.toml and use its source-level coalition table (game.csv);
                              # or give the config inline as a [valuation.pipeline] table
data = "corpus/"          # optional: the preference data (sizes for `proportional`, similarity for
                          # `robust_shapley`), read with valuation.sources.load_preferences
base_model = "SmolLM2-135M-Instruct"   # optional provenance for the ledger
seed = 0                  # seed of sampled estimators
budget = 20000            # optional evaluation budget of sampled estimators
max_exact_members = 12    # exact Shapley/Banzhaf up to this many members, sampled (regression / MSR) above

[sizes]                   # alternative to `data` for `proportional`: pairs per source
sharegpt = 1200

[[periods]]               # optional revenue schedule; without it every period earns market.revenue
name = "2025-Q1"
revenue = "90000.00"      # optional; defaults to market.revenue

[robust]                  # robust_shapley parameters (market.robust)
strength = 1.0            # λ in exp(−λ · Σ_j s'_ij)
threshold = 0.5           # τ: similarity below τ is not penalised

[pool]                    # extra structures for `payoutsim pool compare`
partitions = [[["alice", "bob"], ["carol"]]]
```
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from market.currencies import MINOR_UNITS
from market.money import parse_decimal, to_minor
from valuation import members
from valuation.errors import InputError, field_path
from valuation.files import require_file, toml_text
from valuation.members import member_groups, nonblank_name

RULES: tuple[str, ...] = (
    "shapley",
    "banzhaf",
    "loo",
    "least_core",
    "proportional",
    "equal",
    "robust_shapley",
)
NEGATIVE_POLICIES: tuple[str, ...] = ("clip", "shift", "error")
NO_VALUE_POLICIES: tuple[str, ...] = ("hold", "equal")
DEFAULT_PERIOD = "1"
WEIGHT_TOLERANCE = Decimal("1e-9")

RuleName = Literal["shapley", "banzhaf", "loo", "least_core", "proportional", "equal", "robust_shapley"]
NegativePolicy = Literal["clip", "shift", "error"]
NoValuePolicy = Literal["hold", "equal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarketSection(_Strict):
    """``[market]``: the agreement's money terms."""

    name: str = Field(min_length=1)
    currency: str
    revenue: Decimal
    platform_fee: Decimal = Decimal(0)
    rule: RuleName = "shapley"
    negative: NegativePolicy = "clip"
    no_value: NoValuePolicy = "hold"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return nonblank_name(value)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in MINOR_UNITS:
            raise ValueError(f"unknown currency {value!r}: expected an ISO 4217 code such as EUR, USD or JPY")
        return code

    @field_validator("revenue", "platform_fee", mode="before")
    @classmethod
    def _decimal(cls, value: object) -> Decimal:
        return _decimal_or_value_error(value)

    @field_validator("revenue")
    @classmethod
    def _revenue_sign(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError(f"revenue must be >= 0, got {value}")
        return value

    @field_validator("platform_fee")
    @classmethod
    def _fee_range(cls, value: Decimal) -> Decimal:
        if not (0 <= value < 1):
            raise ValueError(f"platform_fee must be a fraction in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _revenue_digits(self) -> MarketSection:
        try:
            _check_digits(self.revenue, self.currency, "revenue")
        except ValueError as err:
            raise _FieldError("market.revenue", str(err)) from None
        return self


class Member(members.Member):
    """``[[members]]``: one data owner and the sources it owns (`valuation.members.Member`), and, with a
    ``[[periods]]`` schedule, the period it joins and the period it leaves."""

    joins: str | None = None
    leaves: str | None = None


class ValuationSection(_Strict):
    """``[valuation]``: where the coalition utilities come from."""

    utilities: str | None = None
    items: str | None = None  # the utilities' per-item terms (valuation.games.replicates.ItemTerms, .npz)
    config: str | None = None
    pipeline: dict[str, Any] | None = None  # an inline valuation config (the CONFIG.toml tables)
    data: str | None = None
    base_model: str | None = None
    seed: int = 0
    budget: int | None = Field(default=None, gt=0)
    max_exact_members: int = Field(default=12, ge=1, le=20)

    @model_validator(mode="after")
    def _one_source(self) -> ValuationSection:
        given = [k for k in ("utilities", "config", "pipeline") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'utilities' (a coalition table), 'config' (a valuation config file) or a "
                "[valuation.pipeline] table (an inline valuation config)"
            )
        if self.items is not None and self.utilities is None:
            raise _FieldError(
                "valuation.items", "the item terms come from the valuation run: leave 'items' out (or use 'utilities')"
            )
        if self.data is not None and self.utilities is None:
            raise _FieldError(
                "valuation.data", "the data comes from the valuation config: leave 'data' out (or use 'utilities')"
            )
        return self


class Period(_Strict):
    """``[[periods]]``: one accounting period of the revenue schedule."""

    name: str = Field(min_length=1)
    revenue: Decimal | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        return nonblank_name(value)

    @field_validator("revenue", mode="before")
    @classmethod
    def _revenue(cls, value: object) -> Decimal | None:
        return None if value is None else _decimal_or_value_error(value)

    @field_validator("revenue")
    @classmethod
    def _revenue_sign(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value < 0:
            raise ValueError(f"revenue must be >= 0, got {value}")
        return value


class RobustSection(_Strict):
    """``[robust]``: parameters of `robust_shapley` (see market.robust)."""

    strength: float = Field(default=1.0, ge=0)
    threshold: float = Field(default=0.5, ge=0, lt=1)


class UncertaintySection(_Strict):
    """``[uncertainty]``: how each payout's uncertainty is found (`market.uncertainty`): ``replicates``
    replicate payouts (0: none, every figure reported as exact), the interval's coverage ``level`` and the
    resampling ``seed``.

    Evaluate until the split is known (`market.adaptive`, a valuation config with the ``preference``
    utility): with ``target`` (currency units) or ``target_share`` (a fraction of the pool) the eval pairs
    per objective grow in rounds, from ``start_pairs``, until every member's amount interval is at most
    that wide, or ``max_pairs`` pairs per objective or ``max_seconds`` are spent."""

    replicates: int = Field(default=200, ge=0, le=10_000)
    level: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0
    target: Decimal | None = None
    target_share: float | None = Field(default=None, gt=0, lt=1)
    start_pairs: int = Field(default=50, ge=2)
    max_pairs: int = Field(default=2000, ge=2)
    max_seconds: float | None = Field(default=None, gt=0)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object) -> Decimal | None:
        return None if value is None else _decimal_or_value_error(value)

    @field_validator("target")
    @classmethod
    def _target_positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise ValueError(f"target must be > 0 (an interval width in the currency), got {value}")
        return value

    @model_validator(mode="after")
    def _enough(self) -> UncertaintySection:
        if self.replicates == 1:
            raise _FieldError("uncertainty.replicates", "one replicate has no spread: use 0 (off) or at least 2")
        if self.target is not None and self.target_share is not None:
            raise _FieldError("uncertainty.target", "give 'target' (currency) or 'target_share' (of the pool), not both")
        if self.adaptive and self.replicates == 0:
            raise _FieldError("uncertainty.replicates", "a target needs replicates (at least 2) to measure the intervals")
        if self.start_pairs > self.max_pairs:
            raise _FieldError("uncertainty.start_pairs", f"start_pairs ({self.start_pairs}) exceeds max_pairs ({self.max_pairs})")
        return self

    @property
    def adaptive(self) -> bool:
        """True when a target is set: evaluate in rounds until the split is known."""
        return self.target is not None or self.target_share is not None


class PoolSection(_Strict):
    """``[pool]``: user-given structures for `pool compare` (each a partition of the members)."""

    partitions: tuple[tuple[tuple[str, ...], ...], ...] = ()


class Scenario(_Strict):
    """A validated scenario. Build it with `load_scenario` (which also records the file it came from)."""

    market: MarketSection
    objectives: dict[str, Decimal] = Field(default_factory=dict)
    members: tuple[Member, ...] = Field(min_length=1)
    valuation: ValuationSection
    sizes: dict[str, int] | None = None
    periods: tuple[Period, ...] = ()
    robust: RobustSection = RobustSection()
    pool: PoolSection = PoolSection()
    uncertainty: UncertaintySection = UncertaintySection()

    @field_validator("objectives", mode="before")
    @classmethod
    def _objective_values(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {k: _decimal_or_value_error(v) for k, v in value.items()}
        return value

    @field_validator("objectives")
    @classmethod
    def _weights(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for name, weight in value.items():
            if weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0, got {weight}")
        if value and abs(sum(value.values(), Decimal(0)) - 1) > WEIGHT_TOLERANCE:
            total = sum(value.values(), Decimal(0))
            raise ValueError(f"objective weights must sum to 1, they sum to {total}")
        return value

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            for name, size in value.items():
                if size < 0:
                    raise ValueError(f"size of {name!r} must be >= 0, got {size}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        names = [m.name for m in self.members]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _FieldError(field_path(("members", i, "name")), f"duplicate member {name!r}")
        owner: dict[str, str] = {}
        for i, member in enumerate(self.members):
            for src in member.sources:
                if src in owner:
                    raise _FieldError(
                        field_path(("members", i, "sources")),
                        f"source {src!r} is owned by both {owner[src]!r} and {member.name!r}",
                    )
                owner[src] = member.name
        period_names = [p.name for p in self.periods]
        for i, name in enumerate(period_names):
            if name in period_names[:i]:
                raise _FieldError(field_path(("periods", i, "name")), f"duplicate period {name!r}")
        for i, period in enumerate(self.periods):
            if period.revenue is not None:
                try:
                    _check_digits(period.revenue, self.market.currency, "revenue")
                except ValueError as err:
                    raise _FieldError(field_path(("periods", i, "revenue")), str(err)) from None
        for i, member in enumerate(self.members):
            for key in ("joins", "leaves"):
                when = getattr(member, key)
                if when is None:
                    continue
                if not self.periods:
                    raise _FieldError(field_path(("members", i, key)), "needs a [[periods]] schedule")
                if when not in period_names:
                    raise _FieldError(
                        field_path(("members", i, key)), f"unknown period {when!r} (periods: {', '.join(period_names)})"
                    )
            if (
                member.joins is not None
                and member.leaves is not None
                and period_names.index(member.leaves) <= period_names.index(member.joins)
            ):
                raise _FieldError(field_path(("members", i, "leaves")), "must be a period after 'joins'")
        for k, partition in enumerate(self.pool.partitions):
            flat = [m for block in partition for m in block]
            for m in flat:
                if m not in names:
                    raise _FieldError(f"pool.partitions[{k + 1}]", f"unknown member {m!r}")
            dup = [m for j, m in enumerate(flat) if m in flat[:j]]
            if dup:
                raise _FieldError(f"pool.partitions[{k + 1}]", f"member {dup[0]!r} is in two pools")
            if any(not block for block in partition):
                raise _FieldError(f"pool.partitions[{k + 1}]", "empty pool")
        return self

    # -- periods ----------------------------------------------------------------------------------

    def period_names(self) -> list[str]:
        """The scheduled periods in order, or ``["1"]`` when the scenario has no ``[[periods]]``."""
        return [p.name for p in self.periods] or [DEFAULT_PERIOD]

    def check_period(self, period: str) -> str:
        """`period` if the schedule has it (any label is accepted without a schedule); else InputError."""
        if self.periods and period not in self.period_names():
            raise InputError(
                f"unknown period {period!r} (periods: {', '.join(self.period_names())})", field="period"
            )
        return period

    def revenue_for(self, period: str) -> Decimal:
        """The period's revenue (its own, or ``market.revenue``)."""
        for p in self.periods:
            if p.name == period and p.revenue is not None:
                return p.revenue
        return self.market.revenue

    def members_in(self, period: str) -> list[Member]:
        """Members in the pool during `period` (``joins`` ≤ period < ``leaves``), in scenario order."""
        if not self.periods:
            return list(self.members)
        order = self.period_names()
        at = order.index(self.check_period(period))
        out = []
        for m in self.members:
            if m.joins is not None and at < order.index(m.joins):
                continue
            if m.leaves is not None and at >= order.index(m.leaves):
                continue
            out.append(m)
        return out

    def groups(self, members: Sequence[Member] | None = None) -> dict[str, tuple[str, ...]]:
        """member name -> owned sources, for `valuation.games.game.GroupedGame` (`valuation.members.member_groups`)."""
        return member_groups(self.members if members is None else members)

    def weights(self) -> dict[str, float]:
        """Objective weights as floats (utility math; money math never uses them)."""
        return {k: float(v) for k, v in self.objectives.items()}


class _FieldError(ValueError):
    """A cross-field problem raised inside a model validator, carrying the field path to report."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _decimal_or_value_error(value: object) -> Decimal:
    try:
        return parse_decimal(value)
    except InputError as err:
        raise ValueError(err.message) from None


def _check_digits(amount: Decimal, currency: str, field: str) -> None:
    try:
        to_minor(amount, currency, field=field)
    except InputError as err:
        raise ValueError(err.message) from None


# ---------------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario plus the file it came from.

    Attributes:
        scenario: the validated model.
        path: the scenario file (resolved).
        file_sha256: SHA-256 of the scenario file's bytes.
    """

    scenario: Scenario
    path: Path
    file_sha256: str

    def resolve(self, relative: str) -> Path:
        """A path of the scenario (``valuation.utilities`` …) resolved against the scenario's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)


def with_uncertainty(loaded: LoadedScenario, overrides: Mapping[str, Any], *, flags: Mapping[str, str]) -> LoadedScenario:
    """`loaded` with ``[uncertainty]`` keys replaced by `overrides` (command-line flags: `flags` maps each key
    to its flag, named in the error). Raises `InputError` for a value the section refuses."""
    if not overrides:
        return loaded
    merged = {**loaded.scenario.uncertainty.model_dump(), **overrides}
    try:
        section = UncertaintySection.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else next(iter(overrides))
        if isinstance(first.get("ctx", {}).get("error"), _FieldError):
            key = first["ctx"]["error"].field.split(".")[-1]
        raise InputError(first["msg"].removeprefix("Value error, "), field=flags.get(key, f"uncertainty.{key}")) from None
    scenario = loaded.scenario.model_copy(update={"uncertainty": section})
    return LoadedScenario(scenario, loaded.path, loaded.file_sha256)


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate a scenario TOML file.

    Floats in the TOML are parsed as `Decimal` (money never passes through a binary float). Raises
    `InputError(file=path, field=...)` for a missing file or a folder, a byte-order mark, text that is not
    UTF-8, unreadable TOML, unknown keys, wrong types and every rule in the module docstring.
    """
    path = require_file(path, missing="scenario file not found")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(toml_text(raw, file=path), parse_float=Decimal)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"invalid TOML: {err}", file=path) from None
    scenario = parse_scenario(data, file=str(path))
    return LoadedScenario(scenario=scenario, path=path.resolve(), file_sha256=hashlib.sha256(raw).hexdigest())


def parse_scenario(data: Mapping[str, Any], *, file: str | None = None) -> Scenario:
    """Validate an already-parsed TOML mapping (see `load_scenario`)."""
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            raise InputError(ctx_error.message, file=file, field=ctx_error.field) from None
        loc = field_path(first["loc"])
        message = first["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if first["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the scenario format in market/scenario/schema.py)"
        elif first["type"] == "too_short" and loc.endswith("sources"):
            message = "a member needs at least one source"
        elif first["type"] == "missing":
            message = "required key is missing"
        elif first["type"] == "literal_error" and loc.endswith("rule"):
            message = f"unknown rule {first.get('input')!r}: expected one of {', '.join(RULES)}"
        elif first["type"] == "literal_error" and loc.endswith("negative"):
            message = f"unknown policy {first.get('input')!r}: expected one of {', '.join(NEGATIVE_POLICIES)}"
        elif first["type"] == "literal_error" and loc.endswith("no_value"):
            message = f"unknown policy {first.get('input')!r}: expected one of {', '.join(NO_VALUE_POLICIES)}"
        raise InputError(message, file=file, field=loc or None) from None


def scenario_config_json(scenario: Scenario) -> str:
    """The validated scenario as canonical JSON (sorted keys; Decimals as strings) for the ledger."""
    return json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
