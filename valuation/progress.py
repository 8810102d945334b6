"""Progress on stderr: a rich display on a terminal, plain lines everywhere else (one implementation).

Every progress display of a long step goes through `progress_display` (a rich ``Progress``): the DPO
training bars (`valuation.adapters.dpo`, also the retraining baseline's), log-prob scoring, merged-model
scoring and coalition sampling (`progress_bar`), model preparation (`status`, `valuation.models.progress`)
and the stages of a ``payoutsim run`` (`market.console.RunProgress`). The seconds-long spinners of
``data inspect`` and ``data synth`` stay plain rich spinners (nothing on a non-terminal), so a bad input
there still prints exactly one ``error:`` line.

On a terminal the display is drawn by rich, as before. When its console is **not** a terminal (``nohup``,
CI, a scheduler, ``2> log``) a live display is invisible — rich only draws it when it stops — so the
display prints plain lines instead (`PlainProgress`), one per task:

* when a task starts and when it ends (``done`` / ``stopped``), and when its description changes (a new
  stage of a run);
* in between, at least every `PLAIN_INTERVAL_S` (30 s): a heartbeat thread prints the task's state even
  when no step has finished (a long DPO step, a model download).

A line reads ``[progress] scoring eval pairs: 120/400 (30%), elapsed 1:05, ETA 2:32``. Nothing is
printed on a terminal, and nothing at all when the display is disabled (``--no-progress``). The engine
(`valuation.games`) may not import this module (its import contract); its opt-in ``shapley --progress``
bar stays a plain rich bar.

rich is imported inside the functions: ``import rich.progress`` costs ≈ 80 ms (measured here), and the
light commands that import the modules using this helper never draw a bar.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

PLAIN_INTERVAL_S = 30.0  # the longest a non-terminal display stays silent while a task runs
PLAIN_PREFIX = "[progress]"


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above (negative or NaN: ``0:00``)."""
    s = int(seconds) if seconds == seconds and seconds > 0 else 0
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    note: str
    started: float
    last_line: float
    eta: bool = True
    ended: bool = False


class PlainProgress:
    """Plain progress lines for a stream that is not a terminal (module docstring).

    Tasks are identified by any hashable key. `begin` starts (or restarts) one, `update` records its
    state, `tick` prints what is due (the heartbeat calls it), `close` ends every task. Each task prints
    a line when it starts, ends or changes description, and otherwise at most and at least once every
    ``interval`` seconds of ``clock`` while `tick` is called (the heartbeat thread calls it about every
    second; tests call it by hand with a fake clock). Thread-safe.

    Args:
        write: prints one line (no trailing newline given).
        interval: seconds between two lines of a running task.
        clock: monotonic seconds (default `time.monotonic`).
    """

    def __init__(
        self, write: Callable[[str], None], *, interval: float = PLAIN_INTERVAL_S, clock: Callable[[], float] | None = None
    ) -> None:
        self.write = write
        self.interval = float(interval)
        self.clock = clock or time.monotonic
        self._tasks: dict[Hashable, _Task] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(
        self, key: Hashable, description: str, total: float | None, completed: float = 0, note: str = "",
        *, eta: bool = True,
    ) -> None:
        """Start (or restart) task ``key`` and print its ``started`` line; ``eta`` False: its lines give no
        ETA (the stages of a run, which take very different times)."""
        with self._lock:
            now = self.clock()
            task = _Task(_plain(description), total, float(completed), note, now, now, eta)
            self._tasks[key] = task
            self.write(self._line(task, now, "started"))

    def update(
        self, key: Hashable, *, description: str, total: float | None, completed: float, note: str = ""
    ) -> None:
        """Record task ``key``'s state: prints at once when it changed description or just finished,
        otherwise when its line is due."""
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                self.begin(key, description, total, completed, note)
                return
            now = self.clock()
            renamed = _plain(description) != task.description
            task.description, task.total, task.completed, task.note = _plain(description), total, float(completed), note
            if task.ended:
                return
            if total is not None and completed >= total:
                task.ended = True
                self.write(self._line(task, now, "done"))
            elif renamed or now - task.last_line >= self.interval:
                task.last_line = now
                self.write(self._line(task, now, "running"))

    def tick(self) -> None:
        """Print the line of every running task that has been silent for ``interval`` seconds."""
        with self._lock:
            now = self.clock()
            for task in self._tasks.values():
                if not task.ended and now - task.last_line >= self.interval:
                    task.last_line = now
                    self.write(self._line(task, now, "running"))

    def close(self, *, failed: bool = False) -> None:
        """End every running task: ``done`` (no total, or finished), else ``stopped`` (or always
        ``stopped`` when ``failed``)."""
        self.stop_heartbeat()
        with self._lock:
            now = self.clock()
            for task in self._tasks.values():
                if not task.ended:
                    task.ended = True
                    finished = task.total is None or task.completed >= task.total
                    self.write(self._line(task, now, "done" if finished and not failed else "stopped"))

    def start_heartbeat(self, poll: float = 1.0) -> None:
        """Call `tick` from a daemon thread about every ``poll`` seconds until `stop_heartbeat`."""
        if self._thread is not None:
            return
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(poll):
                self.tick()

        self._thread = threading.Thread(target=beat, name="payoutsim-progress", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (if any) and wait for it."""
        if self._thread is None:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _line(self, task: _Task, now: float, state: str) -> str:
        elapsed = now - task.started
        head = f"{PLAIN_PREFIX} {task.description}:"
        done = _count(task.completed)
        if state == "started":
            return f"{head} started" + (f" (0/{_count(task.total)})" if task.total is not None else "")
        count = f"{done}/{_count(task.total)}" if task.total is not None else f"{done} done"
        if state == "done":
            return f"{head} done" + (f" {count}" if task.total is not None else "") + f" in {format_duration(elapsed)}"
        if state == "stopped":
            at = f" at {count}" if task.total is not None or task.completed else ""
            return f"{head} stopped{at} after {format_duration(elapsed)}"
        text = f"{head} {count}" if task.total is not None or task.completed else f"{head} running"
        if task.total:
            text += f" ({100 * task.completed / task.total:.0f}%)"
        text += f", elapsed {format_duration(elapsed)}"
        if task.eta and task.total and 0 < task.completed < task.total:
            text += f", ETA {format_duration(elapsed / task.completed * (task.total - task.completed))}"
        return text + (f" ({task.note})" if task.note else "")


def _plain(description: str) -> str:
    return " ".join(str(description).split())


def _count(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def is_terminal(console: Console) -> bool:
    """Whether rich draws live displays on ``console`` (a terminal, or forced to act as one)."""
    return bool(console.is_terminal)


def progress_display(
    *columns: str | ProgressColumn,
    enabled: bool = True,
    console: Console | None = None,
    transient: bool = False,
    clock: Callable[[], float] | None = None,
    interval: float = PLAIN_INTERVAL_S,
    heartbeat: bool = True,
) -> Progress:
    """A rich ``Progress`` with ``columns`` on ``console`` (default: stderr), not started yet.

    On a terminal it draws as rich does. Elsewhere (module docstring) rich draws nothing and every task's
    state is printed as plain lines by a `PlainProgress` (``interval`` seconds of ``clock`` apart at
    most; a heartbeat thread ticks it while the display runs, unless ``heartbeat`` is false, as in tests
    that tick by hand). A task added with the field ``plain_eta=False`` gets no ETA in its lines. Not ``enabled``: nothing is drawn or printed (``console.print`` still prints).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    cls = _display_class()
    return cls(  # type: ignore[no-any-return]
        *columns, console=console, enabled=enabled, transient=transient, clock=clock, interval=interval,
        heartbeat=heartbeat,
    )


@functools.cache
def _display_class() -> type:
    """The rich ``Progress`` subclass behind `progress_display` (defined on first use: rich is deferred)."""
    from rich.progress import Progress, TaskID

    class ProgressDisplay(Progress):
        """A rich ``Progress`` that mirrors its tasks to a `PlainProgress` when not on a terminal."""

        def __init__(
            self, *columns: Any, console: Console, enabled: bool, transient: bool,
            clock: Callable[[], float] | None, interval: float, heartbeat: bool,
        ) -> None:
            plain = enabled and not is_terminal(console)
            super().__init__(
                *columns, console=console, transient=transient, disable=not enabled or plain, get_time=clock
            )

            def write(line: str) -> None:
                console.print(line, markup=False, highlight=False, soft_wrap=True)

            self.plain = PlainProgress(write, interval=interval, clock=clock) if plain else None
            self.heartbeat = heartbeat
            self.failed = False

        def start(self) -> None:
            super().start()
            if self.plain is not None and self.heartbeat:
                self.plain.start_heartbeat()

        def stop(self) -> None:
            if self.plain is not None:
                self.plain.close(failed=self.failed)
            super().stop()

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            self.failed = exc_type is not None
            super().__exit__(exc_type, exc, tb)

        def add_task(
            self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
            visible: bool = True, **fields: Any,
        ) -> TaskID:
            task_id = super().add_task(description, start, total, completed, visible, **fields)
            if self.plain is not None:
                self.plain.begin(
                    task_id, description, total, completed, _note(fields), eta=bool(fields.get("plain_eta", True))
                )
            return task_id

        def reset(self, task_id: TaskID, **kwargs: Any) -> None:
            super().reset(task_id, **kwargs)
            if self.plain is not None:
                task = self._tasks[task_id]
                self.plain.begin(
                    task_id, task.description, task.total, task.completed, _note(task.fields),
                    eta=bool(task.fields.get("plain_eta", True)),
                )

        def update(self, task_id: TaskID, **kwargs: Any) -> None:
            super().update(task_id, **kwargs)
            self._mirror(task_id)

        def advance(self, task_id: TaskID, advance: float = 1) -> None:
            super().advance(task_id, advance)
            self._mirror(task_id)

        def _mirror(self, task_id: TaskID) -> None:
            if self.plain is not None:
                task = self._tasks[task_id]
                self.plain.update(
                    task_id, description=task.description, total=task.total, completed=task.completed,
                    note=_note(task.fields),
                )

    return ProgressDisplay


def _note(fields: dict[str, Any]) -> str:
    return str(fields.get("note", "") or "")


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr (`progress_display`): description, bar, done/total, elapsed time, a note.

    Yields ``update(advance, note="")``: moves the bar ``advance`` steps and shows ``note`` beside it (so it
    also serves as an ``on_batch(k)`` / ``on_chunk(k)`` callback). Not ``enabled``: the bar is never shown
    and ``update`` only counts.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    with progress_display(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        enabled=enabled,
    ) as bars:
        task = bars.add_task(description, total=total, note="")
        yield lambda advance, note="": bars.update(task, advance=advance, note=note)


@contextlib.contextmanager
def status(message: str, *, enabled: bool = True) -> Iterator[None]:
    """A spinner with ``message`` (shown literally, no markup) and the elapsed time on stderr while the block
    runs (`progress_display`: plain ``started`` / heartbeat / ``done`` lines when stderr is not a terminal)."""
    if not enabled:
        yield
        return
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with progress_display(*columns, transient=True) as bars:
        bars.add_task(message, total=None)
        yield


__all__ = ["PLAIN_INTERVAL_S", "PlainProgress", "format_duration", "progress_bar", "progress_display", "status"]
