"""Replication-robust Shapley: penalise members whose data resembles other members' data.

**The attack.** Under plain Shapley a data owner can raise its share of a fixed pool by duplicating its
data (or splitting it) under several identities: with ``sum`` LM arithmetic a duplicated source adds its
implicit reward twice, so each copy earns a Shapley value close to the original's and the owner's total
claim nearly doubles.

**The defence** (in the spirit of Agarwal, Dahleh & Sarkar 2019, "A Marketplace for Data: An Algorithmic
Solution", whose robust Shapley scales each seller's value by ``exp(−λ Σ_j SM(X_m, X_j))``):

    ψ_m = φ_m · exp(−λ · Σ_{j≠m} s'_mj)   if φ_m > 0,     ψ_m = φ_m   otherwise
    s'_mj = max(0, (s_mj − τ) / (1 − τ))

with φ the (objective-weighted) Shapley value of member m, λ = ``[robust] strength`` (default 1) and
τ = ``[robust] threshold`` (default 0.5). The penalty only shrinks positive claims (a negative value is
never made less negative by resembling others).

**The similarity measure** s_mj, measured from the data itself: every member is one document, the
concatenation of the prompt, chosen and rejected texts of all pairs of all its sources; documents become
TF-IDF vectors (scikit-learn ``TfidfVectorizer``: lower-cased word unigrams and bigrams, English stop
words removed, sublinear term frequency, L2-normalised) and s_mj is their cosine similarity, in [0, 1].
An exact copy scores 1; unrelated corpora score near 0; the threshold τ keeps the ordinary overlap of
natural-language corpora (shared vocabulary) from being penalised.

**Why it holds.** In the additive regime a member that duplicates its source k times claims
k · φ · exp(−λ (k − 1)) instead of φ (each copy is similar, s' = 1, to the k − 1 others), which is ≤ φ for
every k ≥ 2 as soon as λ ≥ ln 2 ≈ 0.69; the default λ = 1 leaves a margin (2/e ≈ 0.74 for one duplicate).

scikit-learn is imported inside `similarity_matrix`: importing its TF-IDF vectoriser and cosine
similarity takes about 1.1 s, and only ``robust_shapley`` needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from valuation.errors import InputError
from valuation.sources import PreferencePair

DEFAULT_STRENGTH = 1.0
DEFAULT_THRESHOLD = 0.5


def similarity_matrix(documents: Sequence[str]) -> np.ndarray:
    """Cosine similarity of the TF-IDF vectors of `documents` (measure in the module docstring).

    Returns ``float[n, n]``, symmetric, values in [0, 1], 1 on the diagonal for non-empty documents
    (0 for a document with no usable words). Deterministic.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    n = len(documents)
    if n == 0:
        return np.zeros((0, 0))
    vectorizer = TfidfVectorizer(
        lowercase=True, ngram_range=(1, 2), stop_words="english", sublinear_tf=True, norm="l2"
    )
    try:
        matrix = vectorizer.fit_transform(list(documents))
    except ValueError:  # empty vocabulary: nothing but stop words / empty texts
        return np.zeros((n, n))
    sim = np.clip(cosine_similarity(matrix), 0.0, 1.0)
    sim = (sim + sim.T) / 2.0
    return sim


def pair_text(pair: PreferencePair) -> str:
    """One preference pair as the plain text the similarity reads: the prompt (chat messages' contents
    joined by newlines), the chosen and the rejected response, one per line."""

    def flat(x: object) -> str:
        if isinstance(x, str):
            return x
        if isinstance(x, list):
            return "\n".join(str(m.get("content", "")) if isinstance(m, Mapping) else str(m) for m in x)
        return str(x)

    return "\n".join((flat(pair.prompt), flat(pair.chosen), flat(pair.rejected)))


def member_similarity(
    members: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    texts: Mapping[str, Sequence[str]] | None,
    *,
    file: str | None = None,
) -> np.ndarray:
    """Similarity between members (each member = the texts of all the sources it owns).

    Raises `InputError` (field ``valuation.data``) when `texts` is missing or lacks an owned source.
    """
    if texts is None:
        raise InputError(
            "rule 'robust_shapley' measures data similarity from the data itself: set [valuation] data",
            file=file,
            field="valuation.data",
        )
    documents = []
    for member in members:
        parts: list[str] = []
        for src in groups[member]:
            if src not in texts:
                raise InputError(
                    f"rule 'robust_shapley': source {src!r} of member {member!r} has no pairs in the data",
                    file=file,
                    field="valuation.data",
                )
            parts.extend(texts[src])
        documents.append("\n".join(parts))
    return similarity_matrix(documents)


def replication_factors(
    similarity: np.ndarray, strength: float = DEFAULT_STRENGTH, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """``exp(−λ Σ_{j≠m} s'_mj)`` per member, with ``s' = max(0, (s − τ) / (1 − τ))``. In (0, 1]."""
    sim = np.asarray(similarity, dtype=float)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {sim.shape}")
    if not (0.0 <= threshold < 1.0) or strength < 0:
        raise ValueError("need strength >= 0 and 0 <= threshold < 1")
    excess = np.clip((sim - threshold) / (1.0 - threshold), 0.0, 1.0)
    np.fill_diagonal(excess, 0.0)
    return np.exp(-strength * excess.sum(axis=1))


def robust_values(
    values: np.ndarray,
    similarity: np.ndarray,
    strength: float = DEFAULT_STRENGTH,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """ψ from φ (module docstring): positive values scaled by `replication_factors`, others unchanged."""
    phi = np.asarray(values, dtype=float)
    factors = replication_factors(similarity, strength, threshold)
    if factors.shape != phi.shape:
        raise ValueError("values and similarity disagree on the number of members")
    return np.where(phi > 0, phi * factors, phi)
