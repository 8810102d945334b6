"""Terminal output: the console the market prints with, and the progress display of a whole run.

`RunProgress` is `market.run.run_scenario`'s display on stderr (`valuation.progress.progress_display`: rich
on a terminal, plain progress lines at least every 30 s elsewhere): one bar over the run's stages, whose
description says what the current stage does, and one sub-task that follows adapter training.
transformers is imported inside `RunProgress.training_callback`, only when a scenario trains adapters:
``from transformers import TrainerCallback`` takes about 4 s (it loads torch), which every other run and
command would pay for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from valuation.progress import progress_display
from valuation.terminal import safe_console
from valuation.text import printable

WIDE_COLUMNS = 160


def wide_console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that prints user text literally, with control characters
    escaped (`valuation.terminal.safe_console`); when it is not a terminal (pipes, files, tests) it is
    `WIDE_COLUMNS` wide, so tables are not squeezed into 80 columns."""
    console = safe_console(stderr=stderr)
    if not console.is_terminal:
        console = safe_console(stderr=stderr, width=WIDE_COLUMNS)
    return console


class RunProgress:
    """A context manager: the progress display of a run of ``len(stages)`` stages on stderr.

    `step` names the stage being done (``[i+1/n] text``), `advance` moves the bar by one stage, `log`
    prints a line above the display, `training_callback` returns a transformers callback that follows
    each adapter's DPO steps in a sub-task (`finish_training` says how many were trained). With
    ``enabled=False`` nothing is drawn (log lines are still printed).
    """

    def __init__(self, stages: Sequence[str], *, enabled: bool = True) -> None:
        self.n_stages = len(stages)
        self.bars = progress_display(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=wide_console(stderr=True),
            enabled=enabled,
        )
        self.stages: TaskID | None = None
        self.training: TaskID | None = None
        self.n_trained = 0

    def __enter__(self) -> RunProgress:
        self.bars.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bars.__exit__(exc_type, exc, tb)

    def label(self, i: int, text: str) -> str:
        """``[i+1/n] text`` (i is 0-based; clamped to n; control characters of `text` escaped)."""
        return f"[{min(i + 1, self.n_stages)}/{self.n_stages}] {printable(text)}"

    def step(self, i: int, text: str) -> None:
        """Show that stage `i` (0-based) is under way, doing `text`."""
        if self.stages is None:
            self.stages = self.bars.add_task(self.label(i, text), total=self.n_stages, plain_eta=False)
        else:
            self.bars.update(self.stages, description=self.label(i, text))

    def advance(self) -> None:
        """One more stage done."""
        assert self.stages is not None
        self.bars.advance(self.stages)

    def log(self, message: str) -> None:
        """Print ``  message`` above the display (no markup)."""
        self.bars.console.print(f"  {message}", markup=False, highlight=False)

    def training_callback(self) -> Any:
        """A transformers ``TrainerCallback`` that shows each adapter's DPO steps in a sub-task."""
        from transformers import TrainerCallback
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # tqdm bars (e.g. "Writing model shards") would break the display

        display = self

        class _Follow(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                display.n_trained += 1
                description = f"  training adapter #{display.n_trained} (DPO steps)"
                if display.training is None:
                    display.training = display.bars.add_task(description, total=state.max_steps or None)
                else:
                    display.bars.reset(display.training, total=state.max_steps or None, description=description)

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if display.training is not None:
                    display.bars.update(display.training, completed=state.global_step)

        return _Follow()

    def finish_training(self) -> None:
        """Say how many adapters were trained (when any were)."""
        if self.training is not None:
            self.bars.update(self.training, description=f"  trained {self.n_trained} adapter(s)")
