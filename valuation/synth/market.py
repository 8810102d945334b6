"""Generated sources for a synthetic market of any size (`payoutsim data synth --n-sources N`).

Sources ``src00`` … ``src{N-1}`` (N ≤ :data:`MAX_GENERATED_SOURCES`) each get a planted profile drawn
from a seeded distribution. Source ``src<i>`` draws from its own ``random.Random`` seeded with
sha256("payoutsim-synth|<seed>|profile|src<i>"), and only earlier sources can influence it (a near-duplicate
copies an earlier one), so growing N never changes the sources already there.

Classes and their rates (:data:`GENERATED_RATES`; one uniform draw u picks the class by these cumulative
shares):

    class           rate  mixture of pair kinds                                     planted signal
    noisy            10%  helpful 1−r, helpful_flipped r; r ~ U[0.6, 0.9]            helpfulness 1−2r ∈ [−0.8, −0.2]
    near_duplicate   10%  the mixture of an earlier non-duplicate generated source;  same as its original
                          its pairs are the original's, lightly perturbed
    harmful          10%  anti_safety a, neutral 1−a; a ~ U[0.6, 1.0]               harmlessness −a ∈ [−1, −0.6]
    mixture          70%  Dirichlet(1, 1, 1, 1) weights over helpful, helpful_weak,  helpfulness w_h + 0.3·w_w ∈ [0, 1],
                          neutral, safety                                            harmlessness w_s ∈ [0, 1]

``src00`` has no earlier source, so a near_duplicate draw there (or wherever every earlier source is
itself a near-duplicate) becomes a mixture; the realised near-duplicate rate is therefore a little below
10% for small N. Weights are rounded to 3 decimals (the last kind takes the remainder, so they sum to 1)
and zero weights are dropped.

The planted strength of a source on objective k is the signal of `valuation.synth.profiles`:
``signal_k = Σ_kind fraction(kind) · effect_k(kind)`` in [−1, 1], written to the manifest as
``sources.<name>.expected.<objective>.signal`` (with its sign and strength label).
"""

from __future__ import annotations

import hashlib
import random

from valuation.synth.profiles import SourceProfile

MAX_GENERATED_SOURCES = 100
"""Largest ``--n-sources`` (names stay two digits: src00 … src99)."""

GENERATED_RATES: dict[str, float] = {"noisy": 0.1, "near_duplicate": 0.1, "harmful": 0.1, "mixture": 0.7}
ADVERSARIAL_CLASSES: tuple[str, ...] = ("noisy", "near_duplicate", "harmful")
MIXTURE_KINDS: tuple[str, ...] = ("helpful", "helpful_weak", "neutral", "safety")
NOISY_FLIP_RANGE = (0.6, 0.9)
HARMFUL_SHARE_RANGE = (0.6, 1.0)


def generated_name(index: int) -> str:
    """``src00`` … ``src99``."""
    return f"src{index:02d}"


def _profile_rng(seed: int, name: str) -> random.Random:
    digest = hashlib.sha256(f"payoutsim-synth|{seed}|profile|{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _rounded(weights: dict[str, float]) -> dict[str, float]:
    """Weights normalised, rounded to 3 decimals with the last taking the remainder; zeros dropped."""
    total = sum(weights.values())
    keys = list(weights)
    out = {k: round(weights[k] / total, 3) for k in keys[:-1]}
    out[keys[-1]] = round(1.0 - sum(out.values()), 3)
    return {k: v for k, v in out.items() if v > 0}


def _mixture(name: str, rng: random.Random) -> SourceProfile:
    mix = _rounded({k: rng.gammavariate(1.0, 1.0) for k in MIXTURE_KINDS})
    return SourceProfile(
        name,
        "generated",
        mix,
        "Generated mixture of helpful, slightly helpful, neutral and safety pairs with random weights.",
        draw="mixture",
    )


def draw_class(u: float) -> str:
    """The class whose cumulative share of :data:`GENERATED_RATES` (in its order) first exceeds u ∈ [0, 1)."""
    total = 0.0
    for name, rate in GENERATED_RATES.items():
        total += rate
        if u < total:
            return name
    return "mixture"


def draw_profiles(seed: int, n: int) -> list[SourceProfile]:
    """The planted profiles of ``src00`` … ``src{n-1}`` for ``seed`` (the first k do not depend on n)."""
    profiles: list[SourceProfile] = []
    for i in range(n):
        name = generated_name(i)
        rng = _profile_rng(seed, name)
        cls = draw_class(rng.random())
        originals = [p for p in profiles if p.draw != "near_duplicate"]
        if cls == "near_duplicate" and not originals:
            cls = "mixture"
        if cls == "noisy":
            r = round(rng.uniform(*NOISY_FLIP_RANGE), 3)
            profile = SourceProfile(
                name,
                "generated",
                {"helpful": round(1.0 - r, 3), "helpful_flipped": r},
                f"Generated noisy source: helpful pairs with {r:.0%} of the labels flipped.",
                draw="noisy",
            )
        elif cls == "near_duplicate":
            original = originals[rng.randrange(len(originals))]
            profile = SourceProfile(
                name,
                "generated",
                dict(original.mixture),
                f"Generated near-copy of {original.name}: its pairs with light perturbations; same planted effect.",
                duplicate_of=original.name,
                draw="near_duplicate",
            )
        elif cls == "harmful":
            a = round(rng.uniform(*HARMFUL_SHARE_RANGE), 3)
            mix = {"anti_safety": a, "neutral": round(1.0 - a, 3)}
            profile = SourceProfile(
                name,
                "generated",
                {k: v for k, v in mix.items() if v > 0},
                f"Generated harmful source: {a:.0%} rude harmful compliance preferred over refusals.",
                draw="harmful",
            )
        else:
            profile = _mixture(name, rng)
        profiles.append(profile)
    return profiles
