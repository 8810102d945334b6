"""One progress bar for the language-model steps (scoring eval pairs, merged coalitions, sampling coalitions).

rich is imported inside the function: ``import rich.progress`` costs ≈ 80 ms (measured here), and the light
commands that import the modules using this helper never draw a bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr: description, bar, done/total, elapsed time and a note.

    Yields ``update(advance, note="")``: moves the bar ``advance`` steps and shows ``note`` beside it (so it
    also serves as an ``on_batch(k)`` / ``on_chunk(k)`` callback). Not ``enabled``: the bar is never shown
    and ``update`` only counts.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        console=Console(stderr=True),
        disable=not enabled,
    ) as bars:
        task = bars.add_task(description, total=total, note="")
        yield lambda advance, note="": bars.update(task, advance=advance, note=note)


__all__ = ["progress_bar"]
