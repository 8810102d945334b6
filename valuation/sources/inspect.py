"""Per-source summaries of a :class:`PreferenceSet` (what ``payoutsim data inspect`` prints).

For each source, in order of first appearance: number of pairs, prompts that are plain text vs chat
messages, mean prompt / chosen / rejected length in characters (a chat prompt's length is the sum of its
message contents), duplicated pairs kept and dropped, the labelled objectives and the content hash.

polars is imported inside `summarize` (≈ 0.5 s), so commands that never summarise do not load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from valuation.sources.loading import load_preferences
from valuation.sources.schema import PreferenceSet


@dataclass(frozen=True)
class SourceSummary:
    source: str
    pairs: int
    text_prompts: int
    chat_prompts: int
    mean_prompt_chars: float
    mean_chosen_chars: float
    mean_rejected_chars: float
    duplicates: int  # repeats kept (listed as "duplicate" findings)
    dropped_duplicates: int  # repeats dropped by drop_duplicates=True
    labels: tuple[str, ...]  # objectives some pair of the source labels
    content_hash: str  # PreferenceSet.content_hash(source)


def summarize(pset: PreferenceSet) -> list[SourceSummary]:
    """One :class:`SourceSummary` per source, in order of first appearance."""
    import polars as pl

    frame = pl.DataFrame(
        {
            "source": [p.source for p in pset.pairs],
            "chat": [p.prompt_kind == "chat" for p in pset.pairs],
            "prompt_chars": [
                len(p.prompt) if isinstance(p.prompt, str) else sum(len(m["content"]) for m in p.prompt)
                for p in pset.pairs
            ],
            "chosen_chars": [len(p.chosen) for p in pset.pairs],
            "rejected_chars": [len(p.rejected) for p in pset.pairs],
        },
        schema={"source": pl.String, "chat": pl.Boolean, "prompt_chars": pl.Int64, "chosen_chars": pl.Int64,
                "rejected_chars": pl.Int64},
    )
    stats = frame.group_by("source", maintain_order=True).agg(
        pl.len().alias("pairs"),
        pl.col("chat").sum().alias("chat_prompts"),
        pl.col("prompt_chars").mean().alias("mean_prompt_chars"),
        pl.col("chosen_chars").mean().alias("mean_chosen_chars"),
        pl.col("rejected_chars").mean().alias("mean_rejected_chars"),
    )
    kept: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for finding in pset.findings:
        if finding.kind == "duplicate":
            kept[finding.source] = kept.get(finding.source, 0) + 1
        elif finding.kind == "duplicate-dropped":
            dropped[finding.source] = dropped.get(finding.source, 0) + 1
    labels: dict[str, set[str]] = {}
    for pair in pset.pairs:
        labels.setdefault(pair.source, set()).update(pair.labels or ())
    return [
        SourceSummary(
            source=row["source"],
            pairs=row["pairs"],
            text_prompts=row["pairs"] - row["chat_prompts"],
            chat_prompts=row["chat_prompts"],
            mean_prompt_chars=row["mean_prompt_chars"],
            mean_chosen_chars=row["mean_chosen_chars"],
            mean_rejected_chars=row["mean_rejected_chars"],
            duplicates=kept.get(row["source"], 0),
            dropped_duplicates=dropped.get(row["source"], 0),
            labels=tuple(sorted(labels[row["source"]])),
            content_hash=pset.content_hash(row["source"]),
        )
        for row in stats.iter_rows(named=True)
    ]


def inspect_report(pset: PreferenceSet, path: str | None = None) -> dict[str, Any]:
    """A JSON-ready report: ``{"path", "formats", "total_pairs", "content_hash", "sources": [...],
    "findings": [...]}`` (sources as :class:`SourceSummary` fields, findings as ``Finding.to_dict()``)."""
    return {
        "path": path,
        "formats": dict(pset.formats),
        "total_pairs": len(pset.pairs),
        "content_hash": pset.content_hash(),
        "sources": [{**asdict(s), "labels": list(s.labels)} for s in summarize(pset)],
        "findings": [f.to_dict() for f in pset.findings],
    }


def inspect_path(
    path: str | Path, *, format: str = "auto", source_column: str = "source", drop_duplicates: bool = False
) -> dict[str, Any]:
    """The :func:`inspect_report` of the preference data at ``path``, loaded with :func:`load_preferences`
    (same arguments; the report's ``path`` is ``str(path)``).

    Raises:
        InputError: bad input, naming the file, the line/row and the field.
    """
    pset = load_preferences(path, format=format, source_column=source_column, drop_duplicates=drop_duplicates)
    return inspect_report(pset, str(path))
