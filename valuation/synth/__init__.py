"""The synthetic market corpus with planted ground truth (`payoutsim data synth`).

Sources are mixtures of preference-pair kinds (helpful, weak, neutral, flipped, safety, anti-safety)
whose planted effect on each objective is documented in the manifest, so tests can check that a
valuation recovers it. See `profiles` for the planted profiles, `generate` for the file layout,
`items` and the TOML files in `templates/` for the texts, and `summary` for what `data synth` prints.
"""

from __future__ import annotations

from valuation.synth.generate import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    SynthConfig,
    SynthCorpus,
    SynthPair,
    generate_corpus,
    write_corpus,
)
from valuation.synth.profiles import (
    ADVERSARIAL_SOURCES,
    EVAL_KINDS,
    OBJECTIVES,
    PAIR_KINDS,
    PAPER_SOURCES,
    PairKind,
    SourceProfile,
)
from valuation.synth.summary import SUMMARY_COLUMNS, CorpusSummary, write_corpus_summary

__all__ = [
    "ADVERSARIAL_SOURCES",
    "EVAL_KINDS",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "OBJECTIVES",
    "PAIR_KINDS",
    "PAPER_SOURCES",
    "SUMMARY_COLUMNS",
    "CorpusSummary",
    "PairKind",
    "SourceProfile",
    "SynthConfig",
    "SynthCorpus",
    "SynthPair",
    "generate_corpus",
    "write_corpus",
    "write_corpus_summary",
]
