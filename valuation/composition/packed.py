"""Pre-packed GEMM for decode steps: the base model's linear layers through MKL's packed sgemm.

A decode step multiplies a few rows (1 + |S| per sequence, at most ``max_batch_rows``) by every weight of
the model. On x86, from 4 rows on, PyTorch's ``F.linear`` (MKL sgemm) is much slower than the same product
with the weights packed once (presumably MKL packs them inside every call) when the weights do not stay in
cache. On SmolLM2-135M (one thread), all 211 linear layers of one step take 102.5 ms for 8 rows and 144.7 ms
for 60 rows through ``F.linear``, 60.4 ms and 123.9 ms with the weights packed once
(``benchmarks/bench_fused_decoding.py``).
The packing ops are PyTorch's own (``torch.ops.mkl._mkl_reorder_linear_weight`` / ``_mkl_linear``, what
its inductor compiler uses for frozen CPU linear layers).

`PackedLinears(model)` replaces the ``forward`` of every ``nn.Linear`` of ``model`` by a dispatcher; forward
hooks (`valuation.composition.multilora.MultiLoraModel`'s LoRA deltas) still run on its output. Inside
``with packed.rows(m):`` a forward without autograd with at most P rows runs the packed product on its rows
padded with zeros to P, where P is the smallest of ``sizes`` (default 8, 16, 32, 64: from one sequence's
1 + |S| rows to the default ``max_batch_rows``) with P/2 ≤ m ≤ P; for other m, and outside the block (prefill,
teacher forcing, training), it runs ``F.linear``. Packing for P costs a pass over the weights (0.26 s for 8 rows,
0.73 s for 64 on SmolLM2) and a second copy of the linear weights per P, made on first use and kept, so a
run packs at most ``len(sizes)`` times. Results equal ``F.linear``'s to float rounding. The weights must
not change while packed.

`packed_gemm_useful(model)` says whether to use it: MKL's packed ops present, fp32 weights on the CPU, and
between ``MIN_WEIGHT_BYTES`` and ``MAX_WEIGHT_BYTES`` of linear weights in all (smaller ones stay in cache,
where ``F.linear`` is as fast or faster: the tiny preset decoded up to 16% slower packed; for larger ones the
packed copies would cost several GB).

torch is imported inside functions: ``import torch`` costs ≈ 1.5 s (measured), and light commands that import
this module never run a model.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Row counts the weights are packed for (a batch of m rows uses the smallest P with P/2 ≤ m ≤ P).
PACKED_ROWS = (8, 16, 32, 64)
#: Models with fewer bytes of linear weights than this keep ``F.linear`` (`packed_gemm_useful`).
MIN_WEIGHT_BYTES = 64 * 2**20
#: ... and models with more keep it too: up to len(PACKED_ROWS) packed copies of the weights.
MAX_WEIGHT_BYTES = 2**30


def packed_gemm_available() -> bool:
    """Whether this PyTorch build has MKL's packed GEMM ops (x86 builds with MKL)."""
    import torch

    return bool(torch.backends.mkl.is_available()) and hasattr(torch.ops.mkl, "_mkl_linear")


def packed_gemm_useful(model: nn.Module) -> bool:
    """Whether `PackedLinears` speeds up ``model``'s decode steps (see the module docstring)."""
    import torch
    from torch import nn

    if not packed_gemm_available():
        return False
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}.values()
    if not weights or any(w.dtype != torch.float32 or w.device.type != "cpu" for w in weights):
        return False
    return MIN_WEIGHT_BYTES <= sum(w.numel() * w.element_size() for w in weights) <= MAX_WEIGHT_BYTES


class PackedLinears:
    """The packed-GEMM dispatcher on every ``nn.Linear`` of ``model`` (module docstring); `close` removes it."""

    def __init__(self, model: nn.Module, *, sizes: Sequence[int] = PACKED_ROWS) -> None:
        from torch import nn

        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be positive row counts, got {list(sizes)}")
        self.sizes = sorted(set(sizes))
        self._modules = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self._packs: dict[int, list[torch.Tensor]] = {}  # P → one pack per module
        self._active: tuple[int, list[torch.Tensor]] | None = None
        for index, module in enumerate(self._modules):
            module.forward = types.MethodType(self._forward(index), module)  # type: ignore[method-assign]

    def size_for(self, m: int) -> int | None:
        """The packed row count P that serves batches of ``m`` rows (None: ``F.linear``)."""
        return next((p for p in self.sizes if p / 2 <= m <= p), None)

    def _forward(self, index: int) -> Callable[[nn.Linear, torch.Tensor], torch.Tensor]:
        import torch

        def forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            active = self._active
            rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
            if active is None or not 0 < rows <= active[0] or torch.is_grad_enabled():
                return torch.nn.functional.linear(x, layer.weight, layer.bias)
            size, packs = active
            flat = x.reshape(rows, x.shape[-1])
            if rows < size:
                flat = torch.cat([flat, flat.new_zeros(size - rows, flat.shape[1])])
            out = torch.ops.mkl._mkl_linear(flat, packs[index], layer.weight, layer.bias, size)
            return out[:rows].view(*x.shape[:-1], layer.out_features)

        return forward

    @contextlib.contextmanager
    def rows(self, m: int) -> Iterator[None]:
        """Forwards of ``m`` rows run packed inside the block when `size_for(m)` is not None."""
        import torch

        size = self.size_for(m)
        if size is None:
            yield
            return
        packs = self._packs.get(size)
        if packs is None:
            packs = [torch.ops.mkl._mkl_reorder_linear_weight(mod.weight.detach(), size) for mod in self._modules]
            self._packs[size] = packs
        previous, self._active = self._active, (size, packs)
        try:
            yield
        finally:
            self._active = previous

    def close(self) -> None:
        """Restore every layer's own ``forward`` and free the packs."""
        for module in self._modules:
            module.__dict__.pop("forward", None)
        self._modules = []
        self._packs.clear()
        self._active = None


__all__ = ["MAX_WEIGHT_BYTES", "MIN_WEIGHT_BYTES", "PACKED_ROWS", "PackedLinears", "packed_gemm_available", "packed_gemm_useful"]
