"""What ``payoutsim data synth`` shows after writing a corpus: one row per train source and eval set.

Rows come from the written ``manifest.json``: a train source's planted effect per objective
(``"+0.90 strong"``: signal and strength label) and its mixture of pair kinds (``"helpful 90%, neutral
10%"``, kinds in :data:`~valuation.synth.profiles.PAIR_KINDS` order); an eval set is marked
``held-out`` under its own objective and shows its single pair kind at 100%.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuation.synth.generate import SynthConfig, write_corpus
from valuation.synth.profiles import OBJECTIVES, PAIR_KINDS

SUMMARY_COLUMNS: tuple[str, ...] = ("source", "pairs", *OBJECTIVES, "mixture of pair kinds")


@dataclass(frozen=True)
class CorpusSummary:
    """A written corpus: where its manifest is, and one row of :data:`SUMMARY_COLUMNS` per source
    (configured order) and per eval set (:data:`OBJECTIVES` order)."""

    manifest_path: Path
    rows: list[tuple[str, ...]]


def effect_label(expected: dict[str, Any]) -> str:
    """``'+0.90 strong'`` from a manifest ``expected`` entry (signal and strength label)."""
    return f"{expected['signal']:+.2f} {expected['strength']}"


def summary_rows(manifest: dict[str, Any], config: SynthConfig) -> list[tuple[str, ...]]:
    """The :data:`SUMMARY_COLUMNS` rows of a corpus manifest written for ``config``."""
    rows: list[tuple[str, ...]] = []
    for name in config.all_sources:
        entry = manifest["sources"][name]
        mix = ", ".join(f"{k} {entry['mixture'][k]:.0%}" for k in PAIR_KINDS if k in entry["mixture"])
        effects = [effect_label(entry["expected"][obj]) for obj in OBJECTIVES]
        rows.append((name, str(entry["pairs"]), *effects, mix))
    for obj in OBJECTIVES:
        entry = manifest["eval"][obj]
        marks = ["held-out" if o == obj else "" for o in OBJECTIVES]
        rows.append((entry["source"], str(entry["pairs"]), *marks, f"{entry['kind']} 100%"))
    return rows


def write_corpus_summary(out_dir: Path, config: SynthConfig) -> CorpusSummary:
    """:func:`~valuation.synth.generate.write_corpus` (same contract and errors), then the summary rows
    read back from the written manifest."""
    manifest_path = write_corpus(out_dir, config)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return CorpusSummary(manifest_path, summary_rows(manifest, config))
