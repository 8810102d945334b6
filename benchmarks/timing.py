"""Wall-clock measurement for the benchmark parts: medians over repeats, every run kept.

torch is imported inside `torch_threads` only: importing it takes ~1.5 s, which the parts that never touch
torch (the estimators, the coalition tables) should not pay.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

MIN_TIMED_S = 0.05  # `interleaved`: a timed call shorter than this is repeated in a loop (the per-call mean is kept)


@dataclass(frozen=True)
class Timing:
    """Seconds of each repeat and their median (what the report quotes)."""

    runs_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": round(self.median_s, 6), "runs_s": [round(t, 6) for t in self.runs_s]}


def measure(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed with ``time.perf_counter``."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def interleaved(
    fns: dict[Any, Callable[[], object]], repeats: int, *, min_s: float = MIN_TIMED_S, warmup: bool = True
) -> dict[Any, Timing]:
    """Per-call seconds of every ``fns[key]``, ``repeats`` times, INTERLEAVED: each repeat times every
    function once in turn, so a change of machine load hits all of them alike (the comparisons are ratios).

    With ``warmup`` each function is first called once untimed; one whose warm-up took less than ``min_s``
    is timed over a loop of ⌈min_s / warm-up⌉ calls (at most 1000) and the mean per call is kept. Without
    it every timed run is one call.
    """
    inner: dict[Hashable, int] = dict.fromkeys(fns, 1)
    for key, fn in fns.items() if warmup else ():
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        inner[key] = min(1000, max(1, math.ceil(min_s / took))) if took > 0 else 1000
    runs: dict[Hashable, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[key]):
                fn()
            runs[key].append((time.perf_counter() - start) / inner[key])
    return {key: Timing(tuple(values)) for key, values in runs.items()}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (rounded), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch on ``n`` intra-op threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
