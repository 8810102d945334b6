"""Where models run: the device (``cpu``, ``cuda``, ``cuda:i``) and the dtype they compute in.

``[runtime] device = "auto" | "cpu" | "cuda" | "cuda:i"`` (`valuation.runtime.settings.RuntimeSection`): ``auto``
is ``cuda`` when torch sees a CUDA device, else ``cpu``. ``[runtime] dtype = "auto" | "float32" | "bfloat16"``:
``auto`` is bfloat16 on a CUDA device that supports it and float32 everywhere else (the CPU path computes in
float32 exactly as before, so its results are bit-for-bit unchanged).

One `Placement` holds both. It is process state: the pipeline sets it once per run with `use_placement` (a
Ray worker once per task), and what loads or runs a model reads it with `current_placement`:
`valuation.models.loading.load_base_model` loads weights in its dtype onto its device; training
(`valuation.adapters.dpo.dpo_arguments`) keeps float32 master weights and trains with bf16 mixed precision
when the dtype is bfloat16; scoring, the batched multi-LoRA forward, composed decoding, importance sampling and
the reward scorers build their tensors on the model's device. The default placement is the CPU in float32.
MKL's packed GEMM (`valuation.composition.packed`) is CPU-only and stays off elsewhere.

torch is imported inside functions (``import torch`` ≈ 1.5 s); `resolve_placement` imports it only to look for
CUDA (device ``auto`` or ``cuda…``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from valuation.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16")
DEVICE_HELP = '"auto", "cpu", "cuda" or "cuda:i"'


@dataclass(frozen=True)
class Placement:
    """A resolved device (``"cpu"`` or ``"cuda:i"``) and dtype (``"float32"`` or ``"bfloat16"``)."""

    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def torch_dtype(self) -> torch.dtype:
        import torch

        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32


CPU = Placement()
_current: Placement = CPU


def current_placement() -> Placement:
    """The placement set by the innermost `use_placement` (default: the CPU in float32)."""
    return _current


@contextlib.contextmanager
def use_placement(placement: Placement) -> Iterator[Placement]:
    """Run the block with ``placement`` as `current_placement` (restored afterwards). On ``cuda:i`` the
    current CUDA device is set to ``i`` as well (the trainer and ``.to("cuda")`` use it)."""
    global _current
    previous = _current
    if not placement.on_cpu:
        import torch

        torch.cuda.set_device(torch.device(placement.device))
    _current = placement
    try:
        yield placement
    finally:
        _current = previous


def check_device_spec(spec: str) -> str:
    """``spec`` when it is a device spelling payoutsim knows; `ValueError` otherwise (a config validator)."""
    if not DEVICE_PATTERN.match(spec):
        raise ValueError(f"unknown device {spec!r}: use {DEVICE_HELP}")
    return spec


def resolve_placement(
    device: str = "auto", dtype: str = "auto", *, file: str | Path | None = None, field: str = "runtime"
) -> Placement:
    """The `Placement` of ``device`` and ``dtype`` on this machine (see the module docstring).

    Raises:
        InputError: ``cuda`` or ``cuda:i`` without a CUDA device (or with fewer than i + 1), naming
            ``<field>.device``; ``bfloat16`` on the CPU is allowed (slow, not bit-identical to float32).
    """
    check_device_spec(device)
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}", file=file, field=f"{field}.dtype")
    if device == "cpu":
        resolved = "cpu"
    else:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device == "auto":
            resolved = "cuda:0" if count else "cpu"
        else:
            index = int(device.partition(":")[2] or 0)
            if count == 0:
                raise InputError(
                    f"device {device!r} asks for CUDA, but torch sees no CUDA device on this machine "
                    '(use device = "auto" or "cpu")',
                    file=file,
                    field=f"{field}.device",
                )
            if index >= count:
                raise InputError(
                    f"device {device!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})",
                    file=file,
                    field=f"{field}.device",
                )
            resolved = f"cuda:{index}"
    if dtype == "auto":
        chosen: Literal["float32", "bfloat16"] = "float32"
        if resolved != "cpu":
            import torch

            chosen = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    else:
        chosen = "bfloat16" if dtype == "bfloat16" else "float32"
    return Placement(resolved, chosen)


def model_device(model: object) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    import torch

    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (StopIteration, AttributeError):
        return torch.device("cpu")


__all__ = [
    "CPU",
    "DEVICE_HELP",
    "DTYPES",
    "Placement",
    "check_device_spec",
    "current_placement",
    "model_device",
    "resolve_placement",
    "use_placement",
]
