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
from valuation.synth.market import GENERATED_RATES, MAX_GENERATED_SOURCES
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
        str | None,
        typer.Option(
            "--sources",
            help=f"Comma-separated paper sources to include, or 'none' (default: {','.join(PAPER_SOURCES)}; "
            "none with --n-sources).",
            show_default=False,
        ),
    ] = None,
    adversarial: Annotated[
        str | None,
        typer.Option(
            "--adversarial",
            help=f"Comma-separated adversarial sources, or 'none' (default: {','.join(ADVERSARIAL_SOURCES)}; "
            "none with --n-sources).",
            show_default=False,
        ),
    ] = None,
    noisy_flip_rate: Annotated[
        float,
        typer.Option("--noisy-flip-rate", help="Share of the noisy source's labels that are flipped (0-1)."),
    ] = DEFAULT_NOISY_FLIP_RATE,
    duplicate_of: Annotated[
        str, typer.Option("--duplicate-of", help="Paper source that the duplicate source nearly copies.")
    ] = DEFAULT_DUPLICATE_OF,
    n_sources: Annotated[
        int | None,
        typer.Option(
            "--n-sources",
            help=f"Add N generated sources src00 … (1-{MAX_GENERATED_SOURCES}) with planted profiles drawn from "
            "the seed: "
            + ", ".join(f"{k.replace('_', '-')} {v:.0%}" for k, v in GENERATED_RATES.items())
            + ". The manifest records each one's planted strength per objective.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate the synthetic market corpus: train/<source>.jsonl, eval/<objective>.jsonl, manifest.json.

    Each source is a planted mixture of pair kinds (helpful, weak, neutral, flipped, safety, anti-safety) whose expected effect on helpfulness and harmlessness is written to the manifest. With --n-sources N, N more sources src00 … get profiles drawn from the seed (noisy, near-duplicate, harmful and random mixtures at stated rates), for a market of any size with known ground truth.
    """
    from rich.table import Table

    if n_sources is not None and not 1 <= n_sources <= MAX_GENERATED_SOURCES:
        raise InputError(
            f"must be between 1 and {MAX_GENERATED_SOURCES}, got {n_sources}", field="--n-sources"
        )
    config = SynthConfig(
        seed=seed,
        pairs_per_source=pairs_per_source,
        eval_pairs_per_objective=eval_pairs,
        sources=None if sources is None else _names(sources, "sources"),
        adversarial=None if adversarial is None else _names(adversarial, "adversarial"),
        noisy_flip_rate=noisy_flip_rate,
        duplicate_of=duplicate_of,
        n_sources=n_sources,
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
