"""Part (c)'s report: its tables, targets and notes, from the per-preset measurements of
`benchmarks.parts.decoding.run`.

Target (issue 7): batched forward faster than the separate passes at every |S| ≥ 2; at |S| = 4, sampling
≥ 60 % of the base's tokens/s on SmolLM2, judged on the single-stream figure (see `benchmarks.parts.decoding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TARGET_RATIO = 0.60
TARGET_SIZE = 4


def tables(per_preset: dict[str, Any]) -> list[dict[str, Any]]:
    """Per preset, in order: the forward table, the sampling table and the decode-step table."""
    out = []
    for name, res in per_preset.items():
        out += [forward_table(name, res), sampling_table(name, res), step_table(name, res)]
    return out


def forward_table(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """One batched forward vs |S| + 1 separate passes: median seconds, speed-up, largest log-prob difference."""
    return {
        "title": f"{name}: one batched forward (base + |S| adapters) vs |S| + 1 separate passes (median s)",
        "columns": [
            "|S|",
            "rows",
            "tokens/row",
            "batched s",
            "separate s",
            "speedup",
            "max |Δ logp|",
        ],
        "rows": [
            [
                r["size"],
                r["rows"],
                r["tokens_per_row"],
                r["batched_s"]["median_s"],
                r["separate_s"]["median_s"],
                r["speedup"],
                f"{r['max_abs_logprob_diff']:.1e}",
            ]
            for r in res["forward"]
        ],
    }


def sampling_table(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s of `sample_composed` per |S|, single-stream and batched, and their ratios to the base."""
    rows = []
    for single, batch in zip(res["sampling"]["single"], res["sampling"]["batch"], strict=True):
        rows.append(
            [
                single["size"],
                single["tokens_per_s"],
                single["ratio_to_base"],
                batch["rows_per_step"],
                batch["tokens_per_s"],
                batch["ratio_to_base"],
            ]
        )
    return {
        "title": f"{name}: sample_composed tokens/s of π_S (|S| = 0: the base alone)",
        "columns": [
            "|S|",
            "single tok/s",
            "single / base",
            "batch rows/step",
            "batch tok/s",
            "batch / base",
        ],
        "rows": rows,
    }


def step_table(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """One single-stream decode step in ms: 1 row, 1 + |S| rows without and with LoRA, and their ratios."""
    step = res["decode_step"]
    one = step["one_row_s"]["median_s"]
    return {
        "title": f"{name}: one single-stream decode step (KV cache {step['context_tokens']} tokens; median ms)",
        "columns": [
            "|S|",
            "rows",
            "1 row (base) ms",
            "rows, no LoRA ms",
            "rows + LoRA ms",
            "LoRA ms",
            "floor 1row/noLoRA",
            "1row / +LoRA",
        ],
        "rows": [
            [
                s["size"],
                s["rows"],
                round(one * 1e3, 2),
                round(s["no_lora_s"]["median_s"] * 1e3, 2),
                round(s["lora_s"]["median_s"] * 1e3, 2),
                round(s["lora_overhead_s"] * 1e3, 2),
                s["floor_ratio"],
                s["lora_step_ratio"],
            ]
            for s in step["steps"]
        ],
    }


def targets(per_preset: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per preset: batched forward faster at every |S| ≥ 2; single-stream sampling at |S| = `TARGET_SIZE` vs
    the base (judged on SmolLM2 only, informative on tiny)."""
    out = []
    for name, res in per_preset.items():
        at_least_two = [r for r in res["forward"] if r["size"] >= 2]
        if at_least_two:
            out.append(
                {
                    "name": f"{name}: batched forward faster than separate passes at every |S| ≥ 2",
                    "target": "speedup > 1",
                    "measured": ", ".join(f"|S|={r['size']}: {r['speedup']:.2f}x" for r in at_least_two),
                    "met": all(r["speedup"] > 1 for r in at_least_two),
                }
            )
        single = {r["size"]: r for r in res["sampling"]["single"]}
        if TARGET_SIZE in single:
            row = single[TARGET_SIZE]
            floor = next(s for s in res["decode_step"]["steps"] if s["size"] == TARGET_SIZE)["floor_ratio"]
            out.append(
                {
                    "name": f"{name}: single-stream sampling at |S| = {TARGET_SIZE} vs the base"
                    + (" (the issue's target)" if name == "smollm2" else " (informative)"),
                    "target": f"≥ {TARGET_RATIO:.0%} of the base's tokens/s",
                    "measured": f"{row['ratio_to_base']:.1%} ({row['tokens_per_s']:.1f} vs "
                    f"{single[0]['tokens_per_s']:.1f} tok/s); no-LoRA {TARGET_SIZE + 1}-row step floor {floor:.1%}",
                    "met": bool(row["ratio_to_base"] >= TARGET_RATIO) if name == "smollm2" else None,
                }
            )
    return out


def notes(
    per_preset: dict[str, Any],
    skipped: dict[str, str],
    params: dict[str, Any],
    load_start: list[float] | None,
    load_end: list[float] | None,
) -> list[str]:
    """The report's notes: threads and load, what is compared, the sampling settings, the decode-step
    floor, each preset's prefill times and every skipped preset with its reason."""
    out = [
        f"torch threads {params['threads']}; load average {_fmt_load(load_start)} at the start, "
        f"{_fmt_load(load_end)} at the end "
        "(the figures are only comparable side by side within one run)",
        "separate passes = the base alone (no LoRA rows), then each adapter alone through the same "
        "MultiLoraModel routed to that one adapter; batched = one forward with rows (base, ℓ1..ℓ|S|) per sequence",
        f"sampling: {params['max_new_tokens']} new tokens per sequence, stop tokens ignored; single = "
        f"{params['single_prompts']} prompt(s) one call each (1 + |S| rows per step); batch = "
        f"{params['batch_prompts']} prompts × {params['samples_per_prompt']} samples in one call, max_batch_rows "
        f"{params['max_batch_rows']}; the |S| = {TARGET_SIZE} target is judged on the single-stream figure",
        "decode-step floor: exact token-level arithmetic needs the full next-token distribution of the base and "
        "of each adapter, i.e. 1 + |S| forward rows per step; the '1row/noLoRA' column is the best ratio any "
        "LoRA implementation could reach for one step on this machine (prefill and drawing excluded)",
    ]
    for name, res in per_preset.items():
        pre = res["decode_step"]["prefill"]
        out.append(
            f"{name}: prefill of {pre['rows']} rows × {res['decode_step']['context_tokens']} tokens: all logits "
            f"{pre['all_logits_s']['median_s'] * 1e3:.1f} ms vs last position only "
            f"{pre['last_logits_s']['median_s'] * 1e3:.1f} ms (sample_composed needs only the last: "
            "logits_to_keep=1)"
        )
    for name, reason in skipped.items():
        out.append(f"{name}: skipped — {reason}")
    return out


def _fmt_load(load: list[float] | None) -> str:
    return "unknown" if load is None else " / ".join(f"{x:.2f}" for x in load)
