"""The normalised preference record every loader produces, and the findings a load reports.

One schema for every input format: a :class:`PreferencePair` is ``(source, prompt, chosen, rejected)``
with the prompt either plain text or chat messages, optional per-objective labels, and the place it came
from. A :class:`PreferenceSet` is the pairs in input order plus the :class:`Finding` list (warnings that
do not stop a load: duplicated pairs, repaired dialogues, …).

polars (≈ 0.5 s to import) is imported inside :meth:`PreferenceSet.to_polars` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from valuation.errors import InputError

if TYPE_CHECKING:
    import polars as pl

Prompt = str | list[dict[str, str]]
"""Plain text, or chat messages ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``."""

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt``, response ``chosen`` is preferred over ``rejected``.

    Attributes:
        source: the data source (player) the pair belongs to.
        prompt: plain text, or chat messages ending with the turn the responses answer.
        chosen: the preferred response (text of the final assistant turn).
        rejected: the dispreferred response.
        labels: optional per-objective labels, objective name -> number (e.g. ``{"harmlessness": 1.0}``).
        origin: where it was read, ``"file.jsonl:line 7"`` (used in findings and messages).
    """

    source: str
    prompt: Prompt
    chosen: str
    rejected: str
    labels: Mapping[str, float] | None = None
    origin: str = ""

    @property
    def prompt_kind(self) -> str:
        """``"text"`` for a plain-text prompt, ``"chat"`` for chat messages."""
        return "text" if isinstance(self.prompt, str) else "chat"

    def canonical(self) -> str:
        """Canonical one-line JSON of the content (origin excluded): the unit of hashing and deduplication.

        ``json.dumps([source, prompt, chosen, rejected, labels-or-null], sort_keys, no spaces, UTF-8)``.
        """
        labels = None if self.labels is None else {k: float(v) for k, v in sorted(self.labels.items())}
        return json.dumps(
            [self.source, self.prompt, self.chosen, self.rejected, labels],
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class Finding:
    """A warning about the data that does not stop the load.

    Attributes:
        kind: a stable machine-readable tag: ``"duplicate"`` (a pair repeats an earlier one; kept),
            ``"duplicate-dropped"`` (same, dropped by ``drop_duplicates=True``), ``"hh-prefix"`` (HH-RLHF
            dialogues diverge before their last Assistant turn; the shared prefix was used),
            ``"empty-turn"`` (an HH-RLHF final Assistant turn is empty; kept as an empty response).
        message: one human-readable sentence.
        source: the source it concerns.
        locations: the places involved, e.g. ``("a.jsonl:line 3", "a.jsonl:line 9")``.
    """

    kind: str
    message: str
    source: str = ""
    locations: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" ({', '.join(self.locations)})" if self.locations else ""
        return f"{self.kind}: {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "source": self.source,
                "locations": list(self.locations)}


@dataclass
class PreferenceSet:
    """Pairs in input order, plus the findings of the load.

    Duplicated pairs (same source, prompt, chosen and rejected) are never silently kept twice: unless
    they were dropped (``drop_duplicates=True``, each drop listed as a ``"duplicate-dropped"`` finding),
    they stay in ``pairs`` and every repeat is listed in ``findings`` as a ``"duplicate"`` naming both
    locations; the CLI prints those as warnings.

    Attributes:
        pairs: the normalised pairs.
        findings: warnings (see :class:`Finding`).
        formats: file (as given/found) -> record format detected or forced for it.
    """

    pairs: list[PreferencePair]
    findings: list[Finding] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def sources(self) -> dict[str, list[PreferencePair]]:
        """Pairs grouped by source, sources in order of first appearance, pairs in input order."""
        out: dict[str, list[PreferencePair]] = {}
        for pair in self.pairs:
            out.setdefault(pair.source, []).append(pair)
        return out

    def to_polars(self) -> pl.DataFrame:
        """One row per pair.

        Columns: ``source``, ``prompt_kind`` (``text``/``chat``), ``prompt`` (the text, or the chat
        messages as canonical JSON), ``chosen``, ``rejected``, ``origin``, and one Float64 column
        ``label_<objective>`` per objective that any pair labels (null where a pair has no such label).
        """
        import polars as pl

        label_keys = sorted({k for p in self.pairs if p.labels for k in p.labels})
        data: dict[str, list[Any]] = {
            "source": [p.source for p in self.pairs],
            "prompt_kind": [p.prompt_kind for p in self.pairs],
            "prompt": [
                p.prompt if isinstance(p.prompt, str)
                else json.dumps(p.prompt, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                for p in self.pairs
            ],
            "chosen": [p.chosen for p in self.pairs],
            "rejected": [p.rejected for p in self.pairs],
            "origin": [p.origin for p in self.pairs],
        }
        for key in label_keys:
            data[f"label_{key}"] = [
                None if not p.labels or key not in p.labels else float(p.labels[key]) for p in self.pairs
            ]
        schema = {name: pl.String for name in ("source", "prompt_kind", "prompt", "chosen", "rejected", "origin")}
        schema.update({f"label_{k}": pl.Float64 for k in label_keys})
        return pl.DataFrame(data, schema=schema)

    def content_hash(self, source: str | None = None) -> str:
        """SHA-256 (hex) of the pairs' content, for training manifests.

        ``sha256(join(pair.canonical() + "\\n" for pairs in order))`` over all pairs, or over one
        source's pairs. Order-sensitive (training order matters); origins are excluded, so moving or
        renaming a file does not change the hash. Raises ``InputError`` for an unknown source.
        """
        if source is None:
            pairs = self.pairs
        else:
            pairs = [p for p in self.pairs if p.source == source]
            if not pairs:
                known = ", ".join(self.sources()) or "none"
                raise InputError(f"unknown source '{source}' (sources: {known})", field="source")
        digest = hashlib.sha256()
        for pair in pairs:
            digest.update(pair.canonical().encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()
