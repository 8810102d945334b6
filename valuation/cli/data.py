"""`payoutsim data …`: the command group for preference data (inspect here; synth in synth.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from valuation.cli.synth import synth
from valuation.sources import FORMATS, inspect_path
from valuation.terminal import safe_console
from valuation.text import json_safe, printable

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps
data_app = typer.Typer(help="Preference data: generate the synthetic market corpus, inspect any dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.command("synth")(synth)

MAX_FINDINGS_SHOWN = 20


@data_app.command("inspect")
def inspect_cmd(
    path: Annotated[Path, typer.Argument(
        help="A data file (.jsonl/.json/.csv/.parquet, JSON and CSV optionally .gz), a folder of such files "
             "(one source per file), a Hugging Face `datasets` folder, or a payoutsim corpus folder.",
        show_default=False,
    )],
    format: Annotated[str, typer.Option(
        "--format", "-f",
        help=f"Record format, one of: {', '.join(FORMATS)}. 'auto' detects it from each file's first record.",
    )] = "auto",
    source_column: Annotated[str, typer.Option(
        "--source-column",
        help="Field that names each pair's source. Without it, each file is one source named after the file.",
    )] = "source",
    drop_duplicates: Annotated[bool, typer.Option(
        "--drop-duplicates",
        help="Drop repeated pairs (same source, prompt, chosen, rejected), keeping the first; otherwise "
             "they are kept and reported as warnings.",
    )] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the full report (every source and finding) as JSON instead of tables.",
    )] = False,
) -> None:
    """Validate a preference dataset and show per-source counts, prompt kinds, lengths and duplicates.

    Exits with code 2 and a message naming the file, line/row and field when the data is invalid.
    """
    from rich.text import Text

    with safe_console(stderr=True).status(Text(f"Loading {printable(str(path))} …")):
        report = inspect_path(path, format=format, source_column=source_column, drop_duplicates=drop_duplicates)
    if as_json:
        typer.echo(json_safe(json.dumps(report, indent=2, ensure_ascii=False)))
        return
    _print_report(report, safe_console())


def _print_report(report: dict, console: Console) -> None:
    """The report as tables and lines on `console` (a `valuation.terminal.SafeConsole`: the cells and
    findings, which come from the data, print literally with control characters escaped)."""
    from rich.table import Table

    sources = report["sources"]
    show_labels = any(s["labels"] for s in sources)
    table = Table(title=report["path"], title_justify="left",
                  caption="prompt / chosen / rejected: mean length in characters", caption_justify="left")
    table.add_column("source", overflow="fold", min_width=12)
    for name in ("pairs", "text", "chat", "prompt", "chosen", "rejected", "dups"):
        table.add_column(name, justify="right", no_wrap=True)
    if show_labels:
        table.add_column("labels", overflow="fold")
    for s in sources:
        dups = f"{s['duplicates']:,}" + (f" (-{s['dropped_duplicates']:,})" if s["dropped_duplicates"] else "")
        row = [
            s["source"], f"{s['pairs']:,}", f"{s['text_prompts']:,}", f"{s['chat_prompts']:,}",
            f"{s['mean_prompt_chars']:,.0f}", f"{s['mean_chosen_chars']:,.0f}", f"{s['mean_rejected_chars']:,.0f}",
            dups,
        ]
        if show_labels:
            row.append(", ".join(s["labels"]) or "-")
        table.add_row(*row)
    console.print(table)
    formats = sorted(set(report["formats"].values()))
    n_sources = len(sources)
    dropped = sum(s["dropped_duplicates"] for s in sources)
    console.print(
        f"{report['total_pairs']:,} pair{'s' if report['total_pairs'] != 1 else ''} in {n_sources} source{'s' if n_sources != 1 else ''} "
        f"(format: {', '.join(formats)}" + (f"; {dropped:,} duplicates dropped)" if dropped else ")"),
        highlight=False,
    )
    findings = report["findings"]
    if not findings:
        console.print("no findings", highlight=False)
        return
    console.print(f"{len(findings):,} finding{'s' if len(findings) != 1 else ''}:", highlight=False)
    for finding in findings[:MAX_FINDINGS_SHOWN]:
        where = f" ({', '.join(finding['locations'])})" if finding["locations"] else ""
        console.print(f"warning: {finding['kind']}: {finding['message']}{where}",
                      highlight=False, soft_wrap=True)
    if len(findings) > MAX_FINDINGS_SHOWN:
        console.print(f"… and {len(findings) - MAX_FINDINGS_SHOWN:,} more (--json lists them all)", highlight=False)
