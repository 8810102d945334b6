"""The execution seam: run independent tasks here (``local``) or as Ray tasks (``ray``), with the same results.

A `Backend` has two operations:

* ``share(value)`` → a handle to pass to every task of a `map` (Ray: one ``ray.put``, so a large value such
  as the shipped base model travels to each node once; local: the value itself);
* ``map(fn, items, shared=(), label=…)`` → ``[fn(item, *shared) for item in items]`` in ``items`` order,
  calling ``on_result(i, result)`` as each task finishes (the driver writes an adapter to disk the moment it
  arrives, so an interrupted run keeps every finished one), with one progress bar on the driver.

``fn`` must be a module-level function (Ray pickles it by reference) that returns plain data. The training,
scoring, decoding and retraining functions call `map` only when ``backend.remote`` is true; with the local
backend they run their original in-process loops, so the CPU path is bit-for-bit what it was. A remote task
sets torch's thread count to its declared CPUs and the run's device placement before it runs
(`valuation.runtime.ray_backend`); its results equal the local ones up to float rounding (a different thread
count can change the order of a sum).

`open_backend(runtime)` is the one entry: it resolves the device (`valuation.models.devices.resolve_placement`;
``device = "cuda"`` without CUDA is an `InputError` naming ``runtime.device``), installs it for the block, and
for ``backend = "ray"`` connects to Ray (importing ``ray`` only then).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from valuation.models.devices import Placement, resolve_placement, use_placement
from valuation.progress import progress_bar
from valuation.runtime.settings import RuntimeSection

T = TypeVar("T")
R = TypeVar("R")


class Backend(Protocol):
    """Where tasks run (see the module docstring)."""

    name: str
    remote: bool
    #: whether tasks need the base model's files shipped (a cluster joined by address)
    ship_files: bool

    def share(self, value: Any) -> Any: ...

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Sequence[Any] = (),
        label: str = "tasks",
        progress: bool = True,
        on_result: Callable[[int, R], None] | None = None,
    ) -> list[R]: ...


class LocalBackend:
    """Tasks run one after the other in this process."""

    name = "local"
    remote = False
    ship_files = False

    def share(self, value: Any) -> Any:
        return value

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Sequence[Any] = (),
        label: str = "tasks",
        progress: bool = True,
        on_result: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        out: list[R] = []
        with progress_bar(label, len(items), progress and len(items) > 0) as advance:
            for i, item in enumerate(items):
                result = fn(item, *shared)
                if on_result is not None:
                    on_result(i, result)
                out.append(result)
                advance(1)
        return out


LOCAL = LocalBackend()


@contextlib.contextmanager
def open_backend(
    runtime: RuntimeSection, *, file: str | Path | None = None, address_field: str = "runtime.address"
) -> Iterator[Backend]:
    """The backend of ``runtime`` with its device placement installed for the block.

    Local: the placement resolved here. Ray: the driver stays on the CPU (it only writes files and does
    arithmetic); each task resolves ``device``/``dtype`` on its own node. Ray started here is shut down on
    exit; an already initialised Ray (a test session's) is reused and left running.

    Raises:
        InputError: ``runtime.device`` asks for CUDA that this machine lacks (local backend); the Ray
            address cannot be reached or is not a Ray cluster (``address_field``; within seconds).
    """
    if runtime.backend == "local":
        placement = resolve_placement(runtime.device, runtime.dtype, file=file)
        with use_placement(placement):
            yield LOCAL
        return
    from valuation.runtime.ray_backend import connect_ray  # imports ray: only for backend = "ray"

    with connect_ray(runtime, file=file, address_field=address_field) as backend, use_placement(Placement()):
        yield backend


__all__ = ["LOCAL", "Backend", "LocalBackend", "open_backend"]
