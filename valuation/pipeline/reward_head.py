"""The Bradley–Terry reward head of the ``reward`` utility, trained from preference pairs
(``payoutsim rewards train``; the head is then used as ``helpfulness = "bt-minilm:OUT"`` in ``[reward]``).

The pairs come from a preference file or folder (anything `valuation.sources.load_preferences` reads) or
from one objective's eval set of a payoutsim corpus; the fit itself is
`valuation.coalition_utility.scorers.train_bt_head`.
"""

from __future__ import annotations

from pathlib import Path

from valuation.coalition_utility.scorers import BTTrainReport, train_bt_head
from valuation.errors import InputError
from valuation.sources import PreferenceSet, load_corpus_eval_sets, load_preferences


def train_reward_head(
    out: Path,
    *,
    pairs: Path | None = None,
    corpus: Path | None = None,
    objective: str = "helpfulness",
    fmt: str = "auto",
    seed: int = 0,
    heldout_fraction: float = 0.2,
    c: float = 1.0,
) -> BTTrainReport:
    """Fit a Bradley–Terry head on the pairs of ``pairs`` or of ``corpus``'s eval set of ``objective`` and
    write it to ``out`` (head.npz + manifest.json, replaced whole); the report has the held-out accuracy.

    Args:
        out: the head's folder.
        pairs: a preference file or folder, read with record format ``fmt``; or
        corpus: a payoutsim corpus, whose ``eval/<objective>.jsonl`` pairs are used.
        seed: seeds the held-out split (by prompt) and the solver.
        heldout_fraction: share of distinct prompts held out for the accuracy.
        c: inverse L2 strength of the logistic regression (> 0).

    Raises:
        InputError: not exactly one of ``pairs`` / ``corpus``, ``c <= 0``, a missing path, a corpus without
            that objective, or no pairs. The fields named are the ``payoutsim rewards train`` options
            (``--pairs``, ``--corpus``, ``--objective``, ``--c``).
    """
    if (pairs is None) == (corpus is None):
        raise InputError("give exactly one of --pairs PATH or --corpus DIR", field="--pairs")
    if c <= 0:
        raise InputError(f"must be positive, got {c}", field="--c")
    pset, origin = _training_pairs(pairs, corpus, objective, fmt)
    if not pset.pairs:
        raise InputError("no preference pairs to train on", file=origin)
    return train_bt_head(
        pset.pairs,
        out,
        seed=seed,
        heldout_fraction=heldout_fraction,
        c=c,
        data_hash=pset.content_hash(),
        source=origin,
    )


def _training_pairs(
    pairs: Path | None, corpus: Path | None, objective: str, fmt: str
) -> tuple[PreferenceSet, str]:
    """The pairs to train on and where they came from (recorded in the head's manifest)."""
    if corpus is not None:
        if not corpus.is_dir():
            raise InputError("no such corpus folder", file=corpus, field="--corpus")
        sets = load_corpus_eval_sets(corpus)
        if objective not in sets:
            raise InputError(
                f"the corpus has no eval set for objective {objective!r} (it has {', '.join(sets) or 'none'})",
                file=corpus,
                field="--objective",
            )
        return sets[objective], f"{corpus}/eval/{objective}"
    assert pairs is not None
    if not pairs.exists():
        raise InputError("no such file or folder", file=pairs, field="--pairs")
    return load_preferences(pairs, format=fmt), str(pairs)


__all__ = ["train_reward_head"]
