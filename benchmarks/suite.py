"""The benchmark suite behind ``python -m benchmarks`` (and ``payoutsim bench``): a registry of parts and the runner.

A *part* is one module with one function::

    run(quick: bool, seed: int, *, repeats: int | None = None) -> dict

(``repeats`` is optional: the runner passes it only to parts whose ``run`` accepts it). The dict must be
JSON-serialisable; the keys the report understands are

* ``title``   — one line;
* ``tables``  — ``[{"title": str, "columns": [str], "rows": [[cell, ...]]}]``, printed as rich tables;
* ``targets`` — ``[{"name": str, "target": str, "measured": str, "met": bool | None}]``;
* ``notes``   — ``[str]``, printed under the tables;

anything else (raw measurements, parameters) goes to the JSON as is. Timings inside a part are medians
over repeats (see `benchmarks.timing`).

Parts (``PARTS``; each is imported only when it runs, so importing this package stays light):

* ``a`` — arithmetic vs retraining every coalition (`benchmarks.parts.arithmetic_vs_retraining`);
* ``b`` — coalition evaluation from the log-prob cache (`benchmarks.parts.coalition_eval`);
* ``c`` — batched multi-adapter forward and composed decoding speed (`benchmarks.parts.decoding`);
* ``d`` — importance-sampled `reward` utilities vs direct sampling (`benchmarks.parts.importance_sampling`);
* ``e`` — Shapley estimators vs shapiq at equal budgets (`benchmarks.parts.estimators`).

The runner (`run_suite`) records the machine (cpu count, torch threads, versions, load average at the
start and the end), runs the chosen parts in registry order, times each, and keeps going when one fails
(its entry gets ``status = "error"`` and the traceback's last lines). torch is imported inside
`machine_info` (for its thread count): importing it takes ~1.5 s, which ``--help`` should not pay.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from benchmarks.timing import load_average
from valuation.errors import InputError

REPORT_VERSION = 1

#: Packages whose versions go into the report (missing ones are recorded as ``None``).
VERSIONED_PACKAGES = (
    "payoutsim",
    "numpy",
    "scipy",
    "torch",
    "transformers",
    "peft",
    "shapiq",
)


@dataclass(frozen=True)
class BenchPart:
    """One registered part: its key (``--only``), a title, and the module holding ``run``."""

    key: str
    title: str
    module: str

    def load(self) -> Callable[..., dict[str, Any]]:
        """Import the module and return its ``run`` function."""
        return importlib.import_module(self.module).run


PARTS: dict[str, BenchPart] = {
    part.key: part
    for part in (
        BenchPart("a", "arithmetic vs retraining on the tiny preset", "benchmarks.parts.arithmetic_vs_retraining"),
        BenchPart("b", "coalition evaluation from the log-prob cache", "benchmarks.parts.coalition_eval"),
        BenchPart("c", "batched multi-adapter forward and composed decoding", "benchmarks.parts.decoding"),
        BenchPart("d", "importance-sampled reward utilities vs direct sampling", "benchmarks.parts.importance_sampling"),
        BenchPart("e", "Shapley estimators vs shapiq at equal budgets", "benchmarks.parts.estimators"),
    )
}


def parse_only(only: str | None) -> list[str]:
    """Part keys from a comma-separated ``--only`` value (None or empty: all parts, in registry order).

    Raises:
        InputError: an unknown key (naming the known ones).
    """
    if only is None or not only.strip():
        return list(PARTS)
    keys = [k.strip().lower() for k in only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PARTS]
    if unknown:
        raise InputError(
            f"unknown benchmark part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}", field="only"
        )
    return [k for k in PARTS if k in keys]  # registry order, no repeats


def machine_info() -> dict[str, Any]:
    """CPU count and affinity, torch threads, platform, package versions and the current load average."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average": load_average(),
        "versions": {name: _version(name) for name in VERSIONED_PACKAGES},
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch_threads"] = None
    return info


def run_suite(
    keys: Sequence[str],
    *,
    quick: bool = False,
    seed: int = 0,
    repeats: int | None = None,
    on_part_done: Callable[[str, dict[str, Any]], None] | None = None,
    parts: dict[str, BenchPart] | None = None,
) -> dict[str, Any]:
    """Run the parts ``keys`` (from ``parts``, default `PARTS`) and return the whole report.

    Report: ``{"report_version", "started", "finished", "quick", "seed", "repeats", "machine",
    "load_average_end", "parts": {key: {"title", "status", "seconds", "result" | "error"}}}``.
    ``on_part_done(key, entry)`` is called after each part (the CLI prints its tables there).
    """
    registry = PARTS if parts is None else parts
    if repeats is not None and repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}", field="repeats")
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "started": _now(),
        "quick": quick,
        "seed": seed,
        "repeats": repeats,
        "machine": machine_info(),
        "parts": {},
    }
    for key in keys:
        part = registry[key]
        started = time.perf_counter()
        entry: dict[str, Any] = {"title": part.title}
        try:
            run = part.load()
            kwargs: dict[str, Any] = {"quick": quick, "seed": seed}
            if repeats is not None and "repeats" in inspect.signature(run).parameters:
                kwargs["repeats"] = repeats
            entry["result"] = run(**kwargs)
            entry["status"] = "ok"
        except Exception as err:  # a benchmark part failing must not lose the others' figures
            entry["status"] = "error"
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc().splitlines()[-12:]
        entry["seconds"] = round(time.perf_counter() - started, 3)
        report["parts"][key] = entry
        if on_part_done is not None:
            on_part_done(key, entry)
    report["finished"] = _now()
    report["load_average_end"] = load_average()
    return report


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
