"""Preference-data sources: load any supported dataset into one normalised schema.

Public API::

    Prompt, PreferencePair, Finding, PreferenceSet          # schema
    FORMATS                                                 # accepted `format=` values
    load_preferences(path, *, format="auto", source=None, source_column="source", drop_duplicates=False)
    load_corpus_eval_sets(corpus_dir) -> {objective: PreferenceSet}
    summarize(pset) -> [SourceSummary]; inspect_report(pset, path) -> dict   # what `data inspect` shows
    inspect_path(path, *, format="auto", source_column="source", drop_duplicates=False) -> dict  # load + report

Bad input raises ``valuation.errors.InputError`` naming the file, the line/row and the field. Duplicated
pairs are listed in ``PreferenceSet.findings`` (and dropped only with ``drop_duplicates=True``).
"""

from __future__ import annotations

from valuation.sources.formats import FORMATS, RECORD_FORMATS
from valuation.sources.inspect import SourceSummary, inspect_path, inspect_report, summarize
from valuation.sources.loading import load_corpus_eval_sets, load_preferences
from valuation.sources.schema import Finding, PreferencePair, PreferenceSet, Prompt

__all__ = [
    "FORMATS",
    "RECORD_FORMATS",
    "Finding",
    "PreferencePair",
    "PreferenceSet",
    "Prompt",
    "SourceSummary",
    "inspect_path",
    "inspect_report",
    "load_corpus_eval_sets",
    "load_preferences",
    "summarize",
]
