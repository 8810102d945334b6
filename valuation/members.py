"""Members: the data owners of a pool, each owning one or more sources — the one home of the concept.

A member is a player of the *member game* ``v(T) = u(∪_{m∈T} sources(m))``, derived from the source-level
coalition table with no new model calls (`valuation.games.game.GroupedGame`). The valuation config
(``[[members]]`` in `valuation.pipeline.config`) and the market's scenario (``[[members]]`` in
`market.scenario.schema`, which adds when a member joins or leaves) use the same `Member` schema; both
check ownership with `check_sources_known`, and member values are computed by `member_values`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from valuation.errors import InputError, field_path
from valuation.games.estimators import approximate
from valuation.games.game import Game, GroupedGame
from valuation.games.result import ValuationResult
from valuation.text import name_problem


def nonblank_name(value: str) -> str:
    """A name with surrounding spaces stripped; `ValueError` (a pydantic validator's contract, shared by
    members, their sources and other named sections) when it holds a control character (a tab, a line
    break, an escape sequence, NUL: rejected, never stripped, so a name never changes silently) or when
    nothing is left ("must not be empty")."""
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


class Member(BaseModel):
    """One data owner and the sources it owns: a non-empty name, at least one source, none listed twice
    (names and sources are stripped of surrounding spaces; a control character in either is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sources: tuple[str, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return nonblank_name(value)

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            problem = name_problem(name)
            if problem is not None:
                raise ValueError(f"source name {name!r} {problem}")
        cleaned = tuple(s.strip() for s in value)
        if any(not s for s in cleaned):
            raise ValueError("empty source name")
        dup = [s for i, s in enumerate(cleaned) if s in cleaned[:i]]
        if dup:
            raise ValueError(f"source {dup[0]!r} listed twice")
        return cleaned


def member_groups(members: Sequence[Member]) -> dict[str, tuple[str, ...]]:
    """member name → the sources it owns, in the members' order (the groups of a `GroupedGame`)."""
    return {m.name: m.sources for m in members}


def check_sources_known(
    members: Sequence[Member], known: Collection[str], *, file: str | Path | None, listed_as: str
) -> None:
    """Raise `InputError` at ``members[i].sources`` (1-based) for the first member source not in `known`.

    ``listed_as`` says where the known sources come from in the message, e.g. ``"sources"`` or ``"sources in
    game.csv"``: ``member 'bob' owns unknown source 'x' (sources in game.csv: a, b)``.
    """
    for i, member in enumerate(members):
        for src in member.sources:
            if src not in known:
                raise InputError(
                    f"member {member.name!r} owns unknown source {src!r} ({listed_as}: {', '.join(known)})",
                    file=file,
                    field=field_path(("members", i, "sources")),
                )


def member_values(
    source_game: Game,
    groups: Mapping[str, Sequence[str]],
    method: str,
    budget: int | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> ValuationResult:
    """Values of the member game ``v(T) = u(∪_{m∈T} groups[m])`` by `method` (the engine's `approximate`);
    the players are the members, in the order of `groups`."""
    return approximate(GroupedGame(source_game, groups), method, budget, seed=seed, progress=progress)
