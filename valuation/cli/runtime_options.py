"""``--backend`` and ``--address``: the options of ``train``, ``value`` and ``run`` that choose where tasks run.

They override ``[runtime] backend`` and ``address`` of the valuation config for one command
(`valuation.runtime.settings.runtime_overrides`); pydantic and the runtime are imported only when the command
runs, so ``payoutsim --help`` stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

import typer


class BackendChoice(StrEnum):
    """Where the valuation's tasks run."""

    local = "local"
    ray = "ray"


_BACKEND_HELP = (
    "Run training, scoring and decoding here (local) or as Ray tasks (ray); overrides \\[runtime] backend. "
    "Same results either way (same seeds)."
)
_ADDRESS_HELP = (
    'Ray cluster to use with --backend ray: "auto" (the cluster of `ray start --head` on this machine), '
    '"ray://host:10001" or "host:6379"; default (empty): start a local Ray instance. Overrides \\[runtime] address; '
    "an unreachable address exits with 2 within seconds."
)

BackendOpt = Annotated[
    BackendChoice | None, typer.Option("--backend", help=_BACKEND_HELP, case_sensitive=False, show_default=False)
]
AddressOpt = Annotated[str | None, typer.Option("--address", help=_ADDRESS_HELP, show_default=False)]


@contextlib.contextmanager
def runtime_flags(backend: BackendChoice | None, address: str | None) -> Iterator[None]:
    """The block with ``--backend``/``--address`` applied to every valuation config it runs."""
    from valuation.runtime.settings import runtime_overrides  # deferred: see the module docstring

    with runtime_overrides(backend=None if backend is None else backend.value, address=address):
        yield


__all__ = ["AddressOpt", "BackendChoice", "BackendOpt", "runtime_flags"]
