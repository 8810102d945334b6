"""Progress when stderr is not a terminal (issue 14, item 11): plain lines — stage, item i/n, elapsed, ETA — at
start and end and at least every 30 s, from the one shared display (`valuation.progress`); never on a terminal."""

from __future__ import annotations

import io
import itertools
import re
import time
from collections.abc import Callable

import pytest
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from market.console import RunProgress
from valuation.adapters.dpo import training_bars
from valuation.progress import (
    PLAIN_INTERVAL_S,
    PLAIN_PREFIX,
    PlainProgress,
    progress_bar,
    progress_display,
    status,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def stamped(clock: FakeClock) -> tuple[list[tuple[float, str]], PlainProgress]:
    lines: list[tuple[float, str]] = []
    return lines, PlainProgress(lambda line: lines.append((clock.now, line)), clock=clock)


def run_fake(clock: FakeClock, plain: PlainProgress, steps: list[float], on_step: Callable[[int], None]) -> None:
    """Advance the fake clock second by second through ``steps`` (each a duration in seconds), ticking the
    heartbeat every second as the real thread does, and call ``on_step(i)`` after step i."""
    for i, seconds in enumerate(steps, start=1):
        for _ in range(int(seconds)):
            clock.now += 1.0
            plain.tick()
        on_step(i)


def assert_never_silent(lines: list[tuple[float, str]], start: float, end: float) -> None:
    times = [start] + [t for t, _ in lines] + [end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= PLAIN_INTERVAL_S, (gaps, lines)


def test_plain_lines_at_least_every_30_s_of_fake_time_with_eta() -> None:
    clock = FakeClock()
    lines, plain = stamped(clock)
    start = clock.now
    plain.begin("score", "scoring eval pairs", 20)
    steps = [7.0] * 10 + [95.0] + [3.0] * 9  # a long silent step in the middle (a slow batch, a download)

    def on_step(i: int) -> None:
        plain.update("score", description="scoring eval pairs", total=20, completed=i)

    run_fake(clock, plain, steps, on_step)
    assert_never_silent(lines, start, clock.now)
    texts = [text for _, text in lines]
    assert texts[0] == f"{PLAIN_PREFIX} scoring eval pairs: started (0/20)"
    assert texts[-1] == f"{PLAIN_PREFIX} scoring eval pairs: done 20/20 in 3:12"  # 70 + 95 + 27 s
    running = [t for t in texts if re.search(r": \d+/20 \(\d+%\), elapsed \d+:\d\d, ETA \d+:\d\d$", t)]
    assert len(running) >= 6
    assert f"{PLAIN_PREFIX} scoring eval pairs: 4/20 (20%), elapsed 0:30, ETA 2:00" in texts  # 28 s for 4 items
    silent = [t for t in texts if ": 10/20 (50%)" in t]
    assert len(silent) >= 3  # the 95 s step: the heartbeat still speaks every 30 s


def test_a_task_without_total_and_a_new_stage_are_printed_at_once() -> None:
    clock = FakeClock()
    lines, plain = stamped(clock)
    plain.begin(1, "  loading the model  ", None)
    clock.now += 31
    plain.tick()
    plain.begin(2, "[1/3] scenario", 3)
    clock.now += 1
    plain.update(2, description="[2/3] valuation", total=3, completed=1)  # a new stage: printed at once
    plain.close()
    texts = [t for _, t in lines]
    assert texts == [
        f"{PLAIN_PREFIX} loading the model: started",
        f"{PLAIN_PREFIX} loading the model: running, elapsed 0:31",
        f"{PLAIN_PREFIX} [1/3] scenario: started (0/3)",
        f"{PLAIN_PREFIX} [2/3] valuation: 1/3 (33%), elapsed 0:01, ETA 0:02",
        f"{PLAIN_PREFIX} loading the model: done in 0:32",
        f"{PLAIN_PREFIX} [2/3] valuation: stopped at 1/3 after 0:01",
    ]


def test_the_rich_display_prints_plain_lines_on_a_non_terminal() -> None:
    clock = FakeClock()
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    assert not console.is_terminal
    bars = progress_display(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, clock=clock,
        heartbeat=False,
    )
    start = clock.now
    stamps: list[float] = []
    with bars:
        task = bars.add_task("training adapter sharegpt", total=12)
        for _ in range(12):
            for _ in range(9):  # a 9 s DPO step; the heartbeat ticks every second
                clock.now += 1
                before = buffer.getvalue().count("\n")
                assert bars.plain is not None
                bars.plain.tick()
                if buffer.getvalue().count("\n") > before:
                    stamps.append(clock.now)
            before = buffer.getvalue().count("\n")
            bars.advance(task)
            if buffer.getvalue().count("\n") > before:
                stamps.append(clock.now)
    out = buffer.getvalue()
    assert "\x1b" not in out  # no escape sequences, no bar drawing in a log file
    lines = out.splitlines()
    assert lines[0] == f"{PLAIN_PREFIX} training adapter sharegpt: started (0/12)"
    assert lines[-1] == f"{PLAIN_PREFIX} training adapter sharegpt: done 12/12 in 1:48"
    assert all(line.startswith(PLAIN_PREFIX) for line in lines)
    assert any(re.search(r": \d+/12 \(\d+%\), elapsed \d:\d\d, ETA \d:\d\d$", line) for line in lines)
    times = [start, *stamps]
    assert max(b - a for a, b in itertools.pairwise(times)) <= PLAIN_INTERVAL_S


@pytest.mark.parametrize("enabled", [True, False])
def test_never_a_plain_line_on_a_terminal_or_when_disabled(enabled: bool) -> None:
    clock = FakeClock()
    buffer = TtyBuffer()
    console = Console(file=buffer, force_terminal=enabled, width=100)
    bars = progress_display(TextColumn("{task.description}"), console=console, clock=clock, enabled=enabled)
    with bars:
        assert bars.plain is None
        task = bars.add_task("scoring", total=5)
        for _ in range(5):
            clock.now += 100
            bars.advance(task)
    assert PLAIN_PREFIX not in buffer.getvalue()


def test_the_heartbeat_thread_speaks_without_any_update() -> None:
    buffer = io.StringIO()
    bars = progress_display(TextColumn("{task.description}"), console=Console(file=buffer), interval=0.05)
    with bars:
        bars.add_task("downloading", total=None)
        deadline = time.monotonic() + 10
        while buffer.getvalue().count("running") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert buffer.getvalue().count(f"{PLAIN_PREFIX} downloading: running, elapsed") >= 2


def test_every_display_uses_it(capsys: pytest.CaptureFixture[str]) -> None:
    """The shared display behind log-prob scoring / sampling bars, model preparation, DPO training and a
    run's stages: on captured (non-terminal) stderr each prints plain lines."""
    with progress_bar("scoring eval pairs", 3, True) as advance:
        for _ in range(3):
            advance(1, "batch")
    with status("loading the GGUF"):
        pass
    bars = training_bars(True)
    with bars:
        overall = bars.add_task("adapters", total=2)
        bars.advance(overall, 2)
    with RunProgress(["scenario", "valuation"]) as display:
        display.step(0, "reading the scenario")
        display.advance()
        display.step(1, "valuation: coalition table")
        display.advance()
    err = capsys.readouterr().err
    for expected in (
        "scoring eval pairs: started (0/3)",
        "scoring eval pairs: done 3/3",
        "loading the GGUF: started",
        "loading the GGUF: done",
        "adapters: started (0/2)",
        "adapters: done 2/2",
        "[1/2] reading the scenario: started (0/2)",
        "[2/2] valuation: coalition table: 1/2 (50%), elapsed 0:00\n",  # stages: no ETA (uneven stages)
        "[2/2] valuation: coalition table: done 2/2",
    ):
        assert f"{PLAIN_PREFIX} {expected}" in err, err
