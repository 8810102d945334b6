"""`payoutsim data synth`: the synthetic market corpus with planted ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from valuation.errors import InputError
from valuation.synth.profiles import (
    ADVERSARIAL_SOURCES,
    DEFAULT_DUPLICATE_OF,
    DEFAULT_NOISY_FLIP_RATE,
    PAPER_SOURCES,
)


def _names(value: str, option: str) -> tuple[str, ...]:
    """Comma-separated names → tuple; 'none' → (). Blank items are an error naming the option."""
    if value.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in value.split(","))
    if any(not n for n in names):
        raise InputError(f"empty name in {value!r}; give names separated by commas", field=option)
    return names


def _effect(expected: dict[str, Any]) -> str:
    """'+0.90 strong' from a manifest `expected` entry (signal and strength label)."""
    return f"{expected['signal']:+.2f} {expected['strength']}"


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
    from rich.console import Console
    from rich.table import Table

    from valuation.synth import OBJECTIVES, PAIR_KINDS, SynthConfig, write_corpus

    config = SynthConfig(
        seed=seed,
        pairs_per_source=pairs_per_source,
        eval_pairs_per_objective=eval_pairs,
        sources=_names(sources, "sources"),
        adversarial=_names(adversarial, "adversarial"),
        noisy_flip_rate=noisy_flip_rate,
        duplicate_of=duplicate_of,
    )
    console = Console()
    with console.status(f"generating {len(config.all_sources)} sources and {len(OBJECTIVES)} eval sets …"):
        manifest_path = write_corpus(out, config)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    table = Table(title=f"synthetic market corpus (seed {seed})")
    for col in ("source", "pairs", "helpfulness", "harmlessness", "mixture of pair kinds"):
        table.add_column(col, justify="right" if col == "pairs" else "left")
    for name in config.all_sources:
        entry = manifest["sources"][name]
        mix = ", ".join(f"{k} {entry['mixture'][k]:.0%}" for k in PAIR_KINDS if k in entry["mixture"])
        exp = entry["expected"]
        table.add_row(
            name, str(entry["pairs"]), _effect(exp["helpfulness"]), _effect(exp["harmlessness"]), mix
        )
    for obj in OBJECTIVES:
        entry = manifest["eval"][obj]
        marks = ["held-out" if o == obj else "" for o in OBJECTIVES]
        table.add_row(entry["source"], str(entry["pairs"]), *marks, f"{entry['kind']} 100%")
    console.print(table)
    console.print(f"manifest: {manifest_path}", soft_wrap=True, markup=False, highlight=False)
