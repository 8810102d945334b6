"""Progress on stderr for the long steps of preparing a model (no-ops when disabled).

All three go through `valuation.progress.progress_display`: a rich display on a terminal, plain progress
lines at least every 30 s elsewhere. rich is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from valuation.progress import progress_display, status

__all__ = ["bytes_progress", "status", "step_progress"]


@contextmanager
def step_progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar of ``total`` steps; yields ``advance(note="", steps=1)``."""
    if not enabled:
        yield lambda note="", steps=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        TimeRemainingColumn(),
    )
    with progress_display(*columns) as bar:
        task = bar.add_task(description, total=total, note="")

        def advance(note: str = "", steps: int = 1) -> None:
            bar.update(task, advance=steps, note=note)

        yield advance


@contextmanager
def bytes_progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` bytes; yields ``advance(n_bytes)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with progress_display(*columns) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)
