"""The Ray backend (``[runtime] backend = "ray"``): each task of `valuation.runtime.backend.Backend.map` is one
Ray task with declared resources; this is the only module that imports ``ray``.

* **Where**: ``address = ""`` starts a local Ray instance (``ray_cpus`` CPUs, no dashboard, a 256 MiB object
  store) and shuts it down at the end; ``"auto"`` joins the cluster started by ``ray start --head`` on this
  machine; ``"ray://host:port"`` connects a Ray client, ``"host:port"`` joins a cluster's head node. Before
  connecting, the host and port are dialled (`DIAL_TIMEOUT_S`): an unreachable address is one `InputError`
  line (exit 2) within seconds instead of Ray's own minute-long retries; ``auto`` without a running cluster
  fails at once the same way. (A port that answers but is not a Ray head node is left to Ray's timeouts.)
  When Ray is already initialised in this process (a test session), it is reused and left running.
* **Resources**: every task declares ``num_cpus`` (default 1) and ``num_gpus`` (default 0 on the CPU, 1 with
  a ``cuda`` device; fractions share a GPU) and sets torch's thread count to ``max(1, int(num_cpus))`` before
  it runs, then the device placement of ``[runtime] device``/``dtype`` resolved on its own node.
* **Faults**: a task whose worker process or node dies is run again up to ``max_retries`` times (Ray's
  ``max_retries``); an exception raised by the task itself — a data error such as `InputError` — is never
  retried (``retry_exceptions=False``): the other tasks are cancelled and the original exception is raised
  on the driver, so the run stops with the same one-line error as the local backend. A task that still
  fails after its retries stops the run with `RemoteTaskFailed` (exit 1); what finished before is on disk.
* **Progress**: one bar on the driver per map (tasks done / total), fed by ``ray.wait``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ray
from ray.exceptions import RayError, RayTaskError

from valuation.errors import InputError, PayoutsimError
from valuation.progress import progress_bar
from valuation.runtime.settings import RuntimeSection

R = TypeVar("R")
DIAL_TIMEOUT_S = 3.0
OBJECT_STORE_BYTES = 256 * 1024**2


class RemoteTaskFailed(PayoutsimError):
    """A Ray task failed for a reason outside the task (its worker or node died more than ``max_retries``
    times, it could not be scheduled). Exit code 1."""

    exit_code = 1


def _run_task(fn: Callable[..., Any], device: str, dtype: str, threads: int, item: Any, *shared: Any) -> Any:
    """The body of every Ray task: torch threads, the device placement of this node, then ``fn``."""
    import torch

    from valuation.models.devices import resolve_placement, use_placement

    torch.set_num_threads(threads)
    with use_placement(resolve_placement(device, dtype)):
        return fn(item, *shared)


class RayBackend:
    """`valuation.runtime.backend.Backend` on a Ray cluster (see the module docstring)."""

    name = "ray"
    remote = True

    def __init__(self, runtime: RuntimeSection, *, ship_files: bool) -> None:
        self.runtime = runtime
        self.ship_files = ship_files
        gpus = runtime.num_gpus
        if gpus is None:
            wants_gpu = runtime.device.startswith("cuda") or (
                runtime.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
            )
            gpus = 1.0 if wants_gpu else 0.0
        self.num_gpus = gpus
        self._task = ray.remote(_run_task).options(
            num_cpus=runtime.num_cpus,
            num_gpus=gpus,
            max_retries=runtime.max_retries,
            retry_exceptions=False,
        )

    def share(self, value: Any) -> Any:
        return ray.put(value)

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
        rt = self.runtime
        threads = max(1, int(rt.num_cpus))
        refs = [self._task.remote(fn, rt.device, rt.dtype, threads, item, *shared) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        with progress_bar(f"{label} (ray)", len(refs), progress and len(refs) > 0) as advance:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except RayTaskError as err:
                        _cancel(pending)
                        cause = err.cause
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise RemoteTaskFailed(f"a Ray task of {label!r} failed: {_first_line(err)}") from None
                    except RayError as err:
                        _cancel(pending)
                        raise RemoteTaskFailed(
                            f"a Ray task of {label!r} failed after {rt.max_retries} retries: {_first_line(err)}"
                        ) from None
                    i = index[ref]
                    results[i] = result
                    if on_result is not None:
                        on_result(i, result)
                    advance(1)
        return results


def _cancel(refs: Sequence[Any]) -> None:
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def dial(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``ray://host:port`` or ``host:port`` address (None for ``auto``).

    Raises:
        ValueError: an address without a host and a port.
    """
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("ray", "tcp") or not parts.hostname or parts.port is None:
        raise ValueError('expected "auto", "ray://host:port" or "host:port"')
    return parts.hostname, parts.port


@contextlib.contextmanager
def connect_ray(
    runtime: RuntimeSection, *, file: str | Path | None = None, address_field: str = "runtime.address"
) -> Iterator[RayBackend]:
    """A `RayBackend` on the Ray of ``runtime.address`` (see the module docstring), shut down on exit when
    it was started or connected here.

    Raises:
        InputError: a malformed or unreachable address, or no Ray cluster behind it (naming ``address_field``).
    """
    owns = not ray.is_initialized()
    address = runtime.address
    if owns:
        if address:
            _check_reachable(address, file=file, field=address_field)
        _init(runtime, file=file, field=address_field)
    try:
        yield RayBackend(runtime, ship_files=bool(address))
    finally:
        if owns:
            ray.shutdown()


def _check_reachable(address: str, *, file: str | Path | None, field: str) -> None:
    try:
        target = dial(address)
    except ValueError as err:
        raise InputError(f"bad Ray address {address!r}: {err}", file=file, field=field) from None
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=DIAL_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(
            f"cannot reach a Ray cluster at {address!r} ({reason}); start one with `ray start --head` "
            'or leave the address empty for a local Ray instance',
            file=file,
            field=field,
        ) from None


def _init(runtime: RuntimeSection, *, file: str | Path | None, field: str) -> None:
    """``ray.init`` for ``runtime`` (on the main thread: Ray's client does not work when started elsewhere);
    a failure is an `InputError` naming ``field``."""
    address = runtime.address
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        kwargs["address"] = address
    else:
        kwargs |= {"num_cpus": runtime.ray_cpus, "object_store_memory": OBJECT_STORE_BYTES}
    try:
        ray.init(**kwargs)
    except Exception as err:
        where = f"at {address!r}" if address else "(a local instance)"
        raise InputError(f"cannot start Ray {where}: {_first_line(err)}", file=file, field=field) from None


__all__ = ["DIAL_TIMEOUT_S", "RayBackend", "RemoteTaskFailed", "connect_ray", "dial"]
