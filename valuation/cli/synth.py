"""`payoutsim data synth`: the synthetic market corpus with planted ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from valuation.errors import InputError
from valuation.files import check_writable_dir
from valuation.synth import (
    ADVERSARIAL_SOURCES,
    OBJECTIVES,
    PAPER_SOURCES,
    SUMMARY_COLUMNS,
    SynthConfig,
    write_corpus_summary,
)
from valuation.synth.profiles import DEFAULT_DUPLICATE_OF, DEFAULT_NOISY_FLIP_RATE
from valuation.terminal import safe_console


def _names(value: str, option: str) -> tuple[str, ...]:
    """Comma-separated names → tuple; 'none' → (). Blank items are an error naming the option."""
    if value.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in value.split(","))
    if any(not n for n in names):
        raise InputError(f"empty name in {value!r}; give names separated by commas", field=option)
    return names


def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write (created; a previous corpus there is replaced).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", help="Base seed; the same seed gives byte-identical files.")
    ] = 0,
    pairs_per_source: Annotated[
        int, typer.Option("--pairs-per-source", help="Preference pairs per train source.")
    ] = 200,
    eval_pairs: Annotated[
        int, typer.Option("--eval-pairs", help="Held-out evaluation pairs per objective.")
    ] = 200,
    sources: Annotated[
        str, typer.Option("--sources", help="Comma-separated paper sources to include.")
    ] = ",".join(PAPER_SOURCES),
    adversarial: Annotated[
        str,
        typer.Option(
            "--adversarial",
            help="Comma-separated adversarial sources (noisy, duplicate, harmful), or 'none'.",
        ),
    ] = ",".join(ADVERSARIAL_SOURCES),
    noisy_flip_rate: Annotated[
        float,
        typer.Option("--noisy-flip-rate", help="Share of the noisy source's labels that are flipped (0-1)."),
    ] = DEFAULT_NOISY_FLIP_RATE,
    duplicate_of: Annotated[
        str, typer.Option("--duplicate-of", help="Paper source that the duplicate source nearly copies.")
    ] = DEFAULT_DUPLICATE_OF,
) -> None:
    """Generate the synthetic market corpus: train/<source>.jsonl, eval/<objective>.jsonl, manifest.json.

    Each source is a planted mixture of pair kinds (helpful, weak, neutral, flipped, safety, anti-safety) whose expected effect on helpfulness and harmlessness is written to the manifest.
    """
    from rich.table import Table

    config = SynthConfig(
        seed=seed,
        pairs_per_source=pairs_per_source,
        eval_pairs_per_objective=eval_pairs,
        sources=_names(sources, "sources"),
        adversarial=_names(adversarial, "adversarial"),
        noisy_flip_rate=noisy_flip_rate,
        duplicate_of=duplicate_of,
    )
    check_writable_dir(out, field="--out")
    console = safe_console()
    with console.status(f"generating {len(config.all_sources)} sources and {len(OBJECTIVES)} eval sets …"):
        summary = write_corpus_summary(out, config)
    table = Table(title=f"synthetic market corpus (seed {seed})")
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="right" if col == "pairs" else "left")
    for row in summary.rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"manifest: {summary.manifest_path}", soft_wrap=True, markup=False, highlight=False)
