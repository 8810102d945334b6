"""Rich progress on stderr for the long steps of preparing a model (no-ops when disabled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def status(message: str, *, enabled: bool = True) -> Iterator[None]:
    """A spinner with ``message`` on stderr while the block runs."""
    if not enabled:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


@contextmanager
def step_progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar of ``total`` steps; yields ``advance(note="", steps=1)``."""
    if not enabled:
        yield lambda note="", steps=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
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
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)
