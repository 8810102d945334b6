"""Experiment: single-stream composed decoding on SmolLM2 with the best small-batch CPU kernel we could reach.

Issue 7 (c) asks composed decoding at |S| = 4 (1 + 4 = 5 forward rows per token) to keep ≥ 60 % of the base
model's tokens/s. `payoutsim bench` part (c) measures the production path (`valuation.composition.multilora` with
`valuation.composition.packed`: the decode steps' base matmuls through MKL's packed GEMM, the LoRA deltas in forward
hooks). This script measures how far the floor moves when the LoRA A factors are also fused into the packed
matmul (no hooks), side by side with the production path in one run. It is NOT used by payoutsim: it replaces
every layer's forward and packs 2..PACK rows only.

The fused layer, for every ``nn.Linear`` of the base model and 2..PACK rows (padded to PACK rows)::

    [y | h] = x · [W; A_all]ᵀ          one MKL packed GEMM (``torch.ops.mkl._mkl_linear``, the op inductor's
                                       CPU freezing uses; weights packed once for PACK rows)
    y += (h ⊙ M) · Bᵀ_all              A_all, Bᵀ_all: the n adapters' factors stacked; M keeps each row's slice

and the stock ``F.linear`` (+ the same delta) for one row or more than PACK rows, so the base alone runs the
production kernel. Same token arithmetic and decoder (`valuation.decoding.decoder.sample_composed`); the logits agree
with `MultiLoraModel` to float rounding (printed).

It also sweeps the row count: the time of all the model's linear layers (one decode step's matmuls) with
the stock kernel vs MKL's packed GEMM packed for exactly that many rows.

Needs a PyTorch built with MKL (x86) and SmolLM2 prepared (``payoutsim models prepare smollm2``)::

    .venv/bin/python -m benchmarks.bench_fused_decoding [--threads 1] [--tokens 32] [--repeats 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.parts import decoding
from benchmarks.parts.decoding_setup import Setup, load_setup
from benchmarks.timing import interleaved, load_average, torch_threads
from valuation.composition.multilora import MultiLoraModel
from valuation.files import atomic_write_json

PACK = 8  # rows the MKL weights are packed for (its kernel is fastest at multiples of 4; 5 rows are padded)
SIZE = 4  # |S|
STEP_CONTEXT = 48


class FusedPackedLora:
    """`MultiLoraModel`'s routing interface over a base model whose ``nn.Linear`` forwards are replaced by the
    fused layer of the module docstring, with the adapters' stacked factors of ``stock`` (a `MultiLoraModel`
    on the same model, closed first so that its hooks are gone); `close` restores the forwards."""

    def __init__(self, model: nn.Module, stock: MultiLoraModel) -> None:
        self.adapter_names = list(stock.adapter_names)
        self._route: torch.Tensor | None = None
        self._masks: dict[tuple[tuple[int, ...], int, int], torch.Tensor] = {}
        self._patched: list[nn.Linear] = []
        for path, module in model.named_modules():
            if isinstance(module, nn.Linear):
                self._patch(module, stock.stacked_factors(path))

    @property
    def n_adapters(self) -> int:
        return len(self.adapter_names)

    def _patch(self, module: nn.Linear, factors: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        weight = module.weight.detach()
        a_all = bt_all = None
        rank = 0
        if factors is not None:
            rank = factors[0].shape[1]
            a_all = factors[0].reshape(-1, module.in_features)  # [n·r, in]
            bt_all = factors[1].reshape(-1, module.out_features)  # [n·r, out]
            weight = torch.cat([weight, a_all])
        weight = weight.contiguous()
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, PACK)
        owner = self

        def forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            shape, out = x.shape, layer.out_features
            rows = x.reshape(-1, shape[-1])
            m = rows.shape[0]
            use_lora = a_all is not None and owner._route is not None
            if 1 < m <= PACK:
                padded = torch.cat([rows, rows.new_zeros(PACK - m, shape[-1])]) if m < PACK else rows
                both = torch.ops.mkl._mkl_linear(padded, packed, weight, None, PACK)[:m]
                y, h = both[:, :out], both[:, out:]
            else:
                y = nn.functional.linear(rows, layer.weight)
                h = rows @ a_all.t() if use_lora else None
            if use_lora:
                y = torch.addmm(y, h * owner._mask(m, rank), bt_all)
            return y.contiguous().view(*shape[:-1], out)

        module.forward = types.MethodType(forward, module)
        self._patched.append(module)

    def _mask(self, rows: int, rank: int) -> torch.Tensor:
        """[rows, n·rank] 0/1: a row keeps the rank columns of its sequence row's adapter (none for the base)."""
        route = self._route
        assert route is not None
        key = (tuple(route.tolist()), rows, rank)
        mask = self._masks.get(key)
        if mask is None:
            per_row = torch.zeros(len(route), self.n_adapters * rank)
            for b, a in enumerate(route.tolist()):
                if a >= 0:
                    per_row[b, a * rank : (a + 1) * rank] = 1
            mask = self._masks[key] = per_row.repeat_interleave(rows // len(route), dim=0)
        return mask

    def decode_steps(self, rows: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # every forward of 2..PACK rows is packed already

    @contextlib.contextmanager
    def routing(self, adapter_index: Sequence[int] | torch.Tensor) -> Iterator[None]:
        previous = self._route
        index = torch.as_tensor(adapter_index, dtype=torch.long).reshape(-1)
        self._route = None if bool((index < 0).all()) else index
        try:
            yield
        finally:
            self._route = previous

    def close(self) -> None:
        for module in self._patched:
            del module.forward
        self._patched = []


def composed_logits(model: nn.Module, multi: MultiLoraModel | FusedPackedLora, seed: int) -> torch.Tensor:
    """Logits of a 5-row prefill (20 tokens) and one cached decode step, rows [base, adapters 0..3]."""
    from transformers import DynamicCache

    ids = torch.randint(4, model.config.vocab_size, (1 + SIZE, 20), generator=torch.Generator().manual_seed(seed))
    cache = DynamicCache()
    with torch.inference_mode(), multi.routing([-1, *range(SIZE)]):
        prefill = model(input_ids=ids, cache=cache, use_cache=True).logits
        step = model(input_ids=ids[:, :1], cache=cache, use_cache=True).logits
    return torch.cat([prefill, step], dim=1)


def _measure(setup: Setup, tokens: int, prompts: int, repeats: int, seed: int) -> dict[str, Any]:
    steps = decoding.measure_steps(setup, [SIZE], STEP_CONTEXT, repeats, seed)
    sampling = decoding.measure_sampling(setup, [SIZE], tokens, prompts, 1, 1, repeats, seed)["single"]
    one, five = steps["one_row_s"]["median_s"], steps["steps"][0]
    return {
        "base_tokens_per_s": sampling[0]["tokens_per_s"],
        "composed_tokens_per_s": sampling[1]["tokens_per_s"],
        "tokens_ratio": sampling[1]["ratio_to_base"],
        "step_one_row_ms": round(one * 1e3, 2),
        "step_no_lora_ms": round(five["no_lora_s"]["median_s"] * 1e3, 2),
        "step_lora_ms": round(five["lora_s"]["median_s"] * 1e3, 2),
        "step_ratio": five["lora_step_ratio"],
        "floor_ratio": five["floor_ratio"],
    }


SWEEP_ROWS = (1, 2, 3, 4, 5, 8, 12, 60, 64)


def kernel_sweep(model: nn.Module, rows: Sequence[int] = SWEEP_ROWS, repeats: int = 3) -> list[dict[str, Any]]:
    """Per row count m: median ms of ``F.linear`` over every distinct ``nn.Linear`` weight of ``model`` (stock)
    vs ``torch.ops.mkl._mkl_linear`` with the weights packed for m rows (packing not timed)."""
    weights = list({id(m.weight): m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)}.values())
    out = []
    gen = torch.Generator().manual_seed(0)
    for m in rows:
        inputs = [torch.randn(m, w.shape[1], generator=gen) for w in weights]
        packed = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in weights]

        def stock(inputs: list[torch.Tensor] = inputs) -> None:
            for w, x in zip(weights, inputs, strict=True):
                nn.functional.linear(x, w)

        def fast(inputs: list[torch.Tensor] = inputs, packed: list[torch.Tensor] = packed, m: int = m) -> None:
            for w, p, x in zip(weights, packed, inputs, strict=True):
                torch.ops.mkl._mkl_linear(x, p, w, None, m)

        timings = interleaved({"stock": stock, "packed": fast}, repeats)
        out.append({"rows": m, "stock_ms": round(timings["stock"].median_s * 1e3, 2),
                    "packed_ms": round(timings["packed"].median_s * 1e3, 2)})
        del packed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=decoding.THREADS, help="torch threads (default 1)")
    parser.add_argument("--tokens", type=int, default=decoding.MAX_NEW_TOKENS, help="new tokens per response")
    parser.add_argument("--prompts", type=int, default=decoding.SINGLE_PROMPTS, help="single-stream prompts")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_fused_decoding.json"), help="JSON output")
    args = parser.parse_args()
    if not hasattr(torch.ops.mkl, "_mkl_linear"):
        raise SystemExit("this PyTorch has no MKL packed GEMM (torch.ops.mkl._mkl_linear): nothing to compare")
    load_start = load_average()
    with torch_threads(args.threads):
        setup = load_setup("smollm2", args.seed, None, prompts=args.prompts)
        if isinstance(setup, str):
            raise SystemExit(setup)
        sweep = kernel_sweep(setup.model, repeats=args.repeats)
        stock_logits = composed_logits(setup.model, setup.multi, args.seed)
        results = {"production": _measure(setup, args.tokens, args.prompts, args.repeats, args.seed)}
        setup.multi.close()
        setup.multi = FusedPackedLora(setup.model, setup.multi)  # stands in: same routing / decode_steps / close
        try:
            diff = float((composed_logits(setup.model, setup.multi, args.seed) - stock_logits).abs().max())
            results["fused_packed"] = _measure(setup, args.tokens, args.prompts, args.repeats, args.seed)
        finally:
            setup.multi.close()
    report = {
        "title": "single-stream composed decoding, SmolLM2, |S| = 4: production path vs fused MKL packed GEMM",
        "params": {"threads": args.threads, "tokens": args.tokens, "prompts": args.prompts, "repeats": args.repeats,
                   "seed": args.seed, "pack_rows": PACK, "step_context": STEP_CONTEXT},
        "machine": platform.processor() or platform.machine(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "max_abs_logit_diff_fused_vs_production": diff,
        "results": results,
        "kernel_sweep": sweep,
    }
    columns = list(results["production"])
    print(report["title"])
    print(f"{'':14}" + "".join(f"{c:>22}" for c in columns))
    for name, row in results.items():
        print(f"{name:14}" + "".join(f"{row[c]:>22}" for c in columns))
    print("all linear layers of one step (ms): " + "; ".join(
        f"{row['rows']} rows {row['stock_ms']} stock / {row['packed_ms']} packed" for row in sweep))
    print(f"max |logit diff| fused vs production: {diff:.1e}; load average {load_start} → {report['load_average_end']}")
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
