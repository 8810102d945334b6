"""Printing and writing the benchmark report: rich tables per part, one JSON file.

The report structure is documented in `benchmarks.suite.run_suite`; a part's printable pieces (``tables``,
``targets``, ``notes``) in `benchmarks.suite`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from valuation.files import atomic_write_json


def format_cell(value: Any) -> str:
    """A table cell: floats with 4 significant digits (scientific below 1e-3), None as '—'."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def machine_table(report: dict[str, Any]) -> Table:
    """One table of the machine facts (cores, threads, load, versions)."""
    machine = report.get("machine", {})
    table = Table(title="machine", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("cpu count / affinity", f"{machine.get('cpu_count')} / {machine.get('cpu_affinity')}")
    table.add_row("torch threads", format_cell(machine.get("torch_threads")))
    load = machine.get("load_average")
    table.add_row("load average (1, 5, 15 min) at start", ", ".join(map(str, load)) if load else "—")
    table.add_row("python / platform", f"{machine.get('python')} / {machine.get('platform')}")
    versions = machine.get("versions", {})
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    table.add_row("quick / seed / repeats", f"{report.get('quick')} / {report.get('seed')} / {report.get('repeats')}")
    return table


def part_tables(key: str, entry: dict[str, Any]) -> list[Table]:
    """Rich tables of one part's entry: its result tables, then its targets (or the error)."""
    title = f"({key}) {entry.get('title', '')}"
    if entry.get("status") != "ok":
        table = Table(title=f"{title}: FAILED after {entry.get('seconds')} s")
        table.add_column("error")
        table.add_row(str(entry.get("error")))
        return [table]
    result = entry.get("result", {})
    tables = []
    for spec in result.get("tables", []):
        table = Table(title=f"{title}: {spec.get('title', '')}")
        for column in spec.get("columns", []):
            table.add_column(str(column), overflow="fold")
        for row in spec.get("rows", []):
            table.add_row(*(format_cell(cell) for cell in row))
        tables.append(table)
    targets = result.get("targets", [])
    if targets:
        table = Table(title=f"{title}: targets ({entry.get('seconds')} s)")
        for column in ("target", "wanted", "measured", "met"):
            table.add_column(column, overflow="fold")
        for t in targets:
            table.add_row(str(t.get("name")), str(t.get("target")), str(t.get("measured")), format_cell(t.get("met")))
        tables.append(table)
    return tables


def print_part(console: Console, key: str, entry: dict[str, Any]) -> None:
    """Print one part's tables and notes."""
    for table in part_tables(key, entry):
        console.print(table)
    for note in entry.get("result", {}).get("notes", []) if entry.get("status") == "ok" else []:
        console.print(f"  note: {note}", highlight=False)


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write the whole report as indented JSON, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    atomic_write_json(path, _jsonable(report))
    return path


def _jsonable(value: Any) -> Any:
    """Replace non-finite floats by None (strict JSON) and tuples by lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value
