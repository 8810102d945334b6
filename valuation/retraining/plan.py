"""What the retraining baseline trains: random source orders, each coalition's sequences, shared prefixes.

The orders are R random permutations π_1..π_R of all n sources (`random_orders`, seeded by
``[retrain] seed``); coalition S's r-th order is π_r restricted to S (`restrict`) — a uniformly random order
of S. Restricting shared permutations makes prefixes shared: the sequence of S is a prefix of the sequence
of S ∪ {later sources}, so each distinct sequence is ONE stage on top of its (already trained) prefix
(`plan_retrain`). A stage adapter is cached under the hash of (base model, training config, its prefix of
(source, data hash)) (`stage_key`); training is deterministic for fixed seeds, so a cached prefix is reused,
never retrained. A union adapter is cached under the hash of (base, config, sources + data hashes, shuffle
seed) (`union_key`) and trained on `shuffled_union`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from valuation.adapters.config import TrainingConfig
from valuation.composition.logprobs import PairLike
from valuation.files import sha256_json
from valuation.games.coalitions import all_coalitions

Kind = Literal["sequential", "union"]


def random_orders(sources: Sequence[str], orders: int, seed: int) -> list[tuple[str, ...]]:
    """``orders`` random permutations of all sources (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return [tuple(sources[i] for i in rng.permutation(len(sources))) for _ in range(orders)]


def restrict(order: Sequence[str], coalition: Sequence[str]) -> tuple[str, ...]:
    """The sources of ``coalition`` in the order they appear in ``order``."""
    members = set(coalition)
    return tuple(s for s in order if s in members)


@dataclass(frozen=True)
class RetrainPlan:
    """What the baseline trains: per coalition (|S| ≥ 2) its sequence per order, the distinct stages and unions.

    ``stages`` are the distinct sequences of length ≥ 2 (prefix-closed, sorted by length so every stage's
    parent comes first); each is one DPO stage on top of its prefix. ``unions`` are the coalitions.
    """

    sources: tuple[str, ...]
    orders: tuple[tuple[str, ...], ...]
    coalitions: tuple[tuple[str, ...], ...]
    sequences: dict[tuple[str, ...], tuple[tuple[str, ...], ...]]
    stages: tuple[tuple[str, ...], ...]

    @property
    def unions(self) -> tuple[tuple[str, ...], ...]:
        return self.coalitions

    def stages_without_prefix_reuse(self) -> int:
        """Σ over coalitions and orders of |S| − 1: the stages needed if no prefix were shared (singletons
        still reused), for comparison with ``len(stages)``."""
        return sum(len(seq) - 1 for seqs in self.sequences.values() for seq in seqs)


def plan_retrain(sources: Sequence[str], orders: Sequence[Sequence[str]]) -> RetrainPlan:
    """Coalitions of size ≥ 2 (in `valuation.games.coalitions.all_coalitions` order), their sequences, the stages."""
    sources = tuple(sources)
    for order in orders:
        if sorted(order) != sorted(sources):
            raise ValueError(f"order {order} is not a permutation of the sources {sources}")
    coalitions = tuple(
        tuple(s for s, present in zip(sources, row, strict=True) if present)
        for row in all_coalitions(len(sources))
        if row.sum() >= 2
    )
    sequences = {c: tuple(restrict(order, c) for order in orders) for c in coalitions}
    stages: dict[tuple[str, ...], None] = {}
    for seqs in sequences.values():
        for seq in seqs:
            for end in range(2, len(seq) + 1):
                stages[seq[:end]] = None
    ordered = tuple(sorted(stages, key=len))  # stable: first-need order within a length
    return RetrainPlan(sources, tuple(tuple(o) for o in orders), coalitions, sequences, ordered)


def stage_key(
    base_sha256: str, config: TrainingConfig, prefix: Sequence[str], data_hashes: Mapping[str, str]
) -> str:
    """Cache key of a sequential stage: SHA-256 over (base, training config, [(source, data hash)…])."""
    return sha256_json(
        {
            "kind": "sequential",
            "base": base_sha256,
            "training": config.config_hash(),
            "prefix": [[s, data_hashes[s]] for s in prefix],
        }
    )


def union_key(
    base_sha256: str,
    config: TrainingConfig,
    coalition: Sequence[str],
    data_hashes: Mapping[str, str],
    seed: int,
) -> str:
    """Cache key of a union adapter: SHA-256 over (base, training config, sources + data hashes, shuffle seed)."""
    return sha256_json(
        {
            "kind": "union",
            "base": base_sha256,
            "training": config.config_hash(),
            "sources": [[s, data_hashes[s]] for s in coalition],
            "shuffle_seed": seed,
        }
    )


def shuffled_union(
    data: Mapping[str, Sequence[PairLike]], coalition: Sequence[str], seed: int
) -> list[PairLike]:
    """The pairs of ``coalition``'s sources concatenated (in the given order), then permuted with ``seed``."""
    pairs = [p for s in coalition for p in data[s]]
    perm = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in perm]
