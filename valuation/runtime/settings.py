"""``[runtime]``: where a valuation run computes (device, dtype) and how its tasks are executed (backend).

Example (every key may be left out; the defaults run on this machine's CPU, or its GPU when it has one)::

    [runtime]
    device = "auto"          # auto | cpu | cuda | cuda:i   (auto: cuda when torch sees one)
    dtype = "auto"           # auto | float32 | bfloat16    (auto: bfloat16 on a GPU that supports it, else float32)
    backend = "local"        # local | ray
    address = ""             # ray only: "" starts a local Ray instance, "auto" joins the cluster of `ray start`,
                             # "ray://host:10001" a Ray client, "host:6379" a cluster's head node
    max_retries = 3          # ray only: times a task whose worker or node died is run again
    num_cpus = 1.0           # ray only: CPUs each task declares (and torch threads it uses)
    # num_gpus = 0.5         # ray only: GPUs each task declares (fractions share a GPU); default 0 on the
                             # CPU, 1 when device is cuda (or auto on a cluster with GPUs)
    # ray_cpus = 2           # ray only, address "": CPUs of the local Ray instance (default: all)

``payoutsim train|value|run --backend ray --address auto`` override ``backend`` and ``address`` for one command
(`runtime_overrides`). Where a run computes never changes what it computes: the section is left out of the
config's dumps and hashes (``run.json``'s ``config_hash``, the ledger's provenance), and every result is the
same up to float rounding (`valuation.runtime.backend`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from valuation.models.devices import check_device_spec


class RuntimeSection(BaseModel):
    """The ``[runtime]`` table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("auto", description='Where models run: "auto", "cpu", "cuda" or "cuda:i".')
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="Compute dtype of the models.")
    backend: Literal["local", "ray"] = Field("local", description="Run tasks in this process or as Ray tasks.")
    address: str = Field("", description='Ray cluster: "" (start a local instance), "auto", "ray://host:port", "host:port".')
    max_retries: int = Field(3, ge=0, le=100, description="Retries of a Ray task whose worker or node died.")
    num_cpus: float = Field(1.0, gt=0, description="CPUs each Ray task declares (and torch threads it uses).")
    num_gpus: float | None = Field(None, ge=0, description="GPUs each Ray task declares (fractional allowed).")
    ray_cpus: int | None = Field(None, ge=1, description='CPUs of a local Ray instance (address ""); default: all.')

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device_spec(value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise ValueError("an address has no spaces or control characters")
        return value


_OVERRIDES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("runtime_overrides", default=None)


@contextlib.contextmanager
def runtime_overrides(**values: Any) -> Iterator[None]:
    """Within the block, `effective_runtime` replaces the given ``[runtime]`` keys (``None`` values are
    ignored): how ``--backend`` and ``--address`` reach the pipeline of ``train``, ``value`` and ``run``."""
    given = {k: v for k, v in values.items() if v is not None}
    token = _OVERRIDES.set({**(_OVERRIDES.get() or {}), **given})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def overridden(key: str) -> bool:
    """Whether the enclosing `runtime_overrides` sets ``key`` (errors then name the flag, not the field)."""
    return key in (_OVERRIDES.get() or {})


def effective_runtime(section: RuntimeSection) -> RuntimeSection:
    """``section`` with the keys of the enclosing `runtime_overrides` replaced (validated again)."""
    overrides = _OVERRIDES.get()
    if not overrides:
        return section
    return RuntimeSection.model_validate(section.model_dump() | overrides)


__all__ = ["RuntimeSection", "effective_runtime", "overridden", "runtime_overrides"]
