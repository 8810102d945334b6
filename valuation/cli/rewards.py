"""`payoutsim rewards …`: reward scorers for the `reward` utility (train the Bradley–Terry helpfulness head).

The library (`valuation.pipeline.reward_head`: numpy, the scorers) is imported inside the command: at module
top it would be loaded by every ``payoutsim`` invocation, ``--help`` included
(measured, medians of 15 runs: `payoutsim --help` takes 0.45 s with it deferred, 0.59 s with it at top).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from valuation.files import check_writable_dir
from valuation.text import printable

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


rewards_app = typer.Typer(
    help="Reward scorers for the 'reward' utility: train a Bradley-Terry head on sentence embeddings.",
    no_args_is_help=True,
)
app.add_typer(rewards_app, name="rewards")


@rewards_app.command("train")
def train(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder to write the head to (head.npz + manifest.json; replaced whole).",
                     file_okay=False),
    ],
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="Preference pairs to train on: any file/folder `payoutsim data inspect` reads."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="A payoutsim synthetic corpus: train on its eval/<objective>.jsonl pairs (see --objective).",
            file_okay=False,
        ),
    ] = None,
    objective: Annotated[
        str, typer.Option("--objective", help="With --corpus: which objective's pairs to use.")
    ] = "helpfulness",
    fmt: Annotated[str, typer.Option("--format", help="With --pairs: the record format (default: auto).")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split (by prompt) and the solver.")] = 0,
    heldout_fraction: Annotated[
        float, typer.Option("--heldout-fraction", help="Share of distinct prompts held out for the accuracy.")
    ] = 0.2,
    c: Annotated[float, typer.Option("--c", help="Inverse L2 strength of the logistic regression.")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON instead of a line.")] = False,
) -> None:
    """Fit a Bradley-Terry reward head on all-MiniLM-L6-v2 embeddings (offline) and print its held-out accuracy.

    Use it in a valuation config: `helpfulness = "bt-minilm:OUT"` in its reward table, with `kind = "reward"`
    in its utility table.
    """
    from valuation.pipeline.reward_head import train_reward_head  # deferred: see the module docstring

    check_writable_dir(out, field="--out")
    report = train_reward_head(
        out,
        pairs=pairs,
        corpus=corpus,
        objective=objective,
        fmt=fmt,
        seed=seed,
        heldout_fraction=heldout_fraction,
        c=c,
    )
    if json_out:
        typer.echo(json.dumps(report.manifest, indent=2, sort_keys=True))
        return
    typer.echo(printable(
        f"held-out accuracy {report.heldout_accuracy:.3f} ({report.n_heldout} pairs; "
        f"train {report.train_accuracy:.3f} on {report.n_train}) -> {out}"
    ))
