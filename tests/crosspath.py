"""Comparing what two code paths computed (batch shapes, packed GEMM vs F.linear, multi-LoRA rows vs the
plain model, a full forward vs the KV cache): equal to float rounding only, never bit for bit — MKL and
OpenBLAS pick their kernels per CPU, so a difference of a few ulps shows up on one machine and not on
another. Floats are compared with a stated tolerance; sampled token ids with the allowance below.

A token drawn by inverse CDF flips between two paths only when the uniform falls within float rounding
(~1e-7 of probability mass) of a CDF boundary: about one token in millions, so one differing sequence in a
test's handful is allowed, and a path that is really wrong (other logits, other uniforms) still fails on
nearly every sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

#: Sequences whose token ids may differ between two correct code paths (see the module docstring).
MAX_FLIPPED_SEQUENCES = 1


def assert_same_samples(got: Sequence[Any], ref: Sequence[Any], *, logprob_tol: float,
                        max_flipped: int = MAX_FLIPPED_SEQUENCES) -> None:
    """`got` and `ref` (lists of `valuation.decoding.decoder.Sample`) drawn by two code paths with the same
    seed: the same token ids except in at most `max_flipped` sequences, and where the tokens agree the
    sequence log-probs agree within `logprob_tol` (absolute and relative)."""
    assert len(got) == len(ref)
    same = [g.token_ids == r.token_ids for g, r in zip(got, ref, strict=True)]
    flipped = [i for i, ok in enumerate(same) if not ok]
    assert len(flipped) <= max_flipped, f"sequences {flipped} differ (at most {max_flipped} may)"
    kept = [i for i, ok in enumerate(same) if ok]
    assert [got[i].logprob for i in kept] == pytest.approx([ref[i].logprob for i in kept], rel=logprob_tol,
                                                          abs=logprob_tol)
