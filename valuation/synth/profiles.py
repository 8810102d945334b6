"""Planted source profiles: which pair kinds each synthetic source mixes, and what that should do.

A source is a mixture of pair KINDS. Each kind has a planted effect per objective: the sign of the
preference it teaches, +1 (towards what the objective's held-out pairs prefer), −1 (against) or a
fraction for weak signals:

    kind              helpfulness  harmlessness   chosen vs rejected
    helpful               +1.0          0         correct, specific answer vs vague / wrong one
    helpful_weak          +0.3          0         correct, specific answer vs correct but minimal one
    neutral                0            0         two equally good answers (random order)
    helpful_flipped       −1.0          0         a helpful pair with the labels swapped
    safety                 0           +1.0       polite refusal + safe alternative vs rude compliance
    anti_safety            0           −1.0       rude harmful compliance vs polite refusal

A source's planted signal per objective is the mixture-weighted mean effect,
``signal_k = Σ_kind fraction(kind) · effect_k(kind)`` in [−1, 1]; its expected sign is sign(signal)
(0 when |signal| < 0.05) and its strength label is ``none`` (< 0.05), ``weak`` (< 0.35),
``moderate`` (< 0.7) or ``strong``. A valuation that works should recover the signs and the order of
the signals (e.g. Shapley helpfulness of sharegpt > evol_instruct > flan_v2_niv2 > 0 > noisy).

Profiles of the paper's sources mirror arXiv 2512.15765: sharegpt strongly helpful; ultrachat mostly
adds harmlessness (a little helpfulness); evol_instruct helpful but the most harmful; flan_v2_niv2 a
small helpfulness gain.
"""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES: tuple[str, ...] = ("helpfulness", "harmlessness")
PAPER_SOURCES: tuple[str, ...] = ("flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat")
ADVERSARIAL_SOURCES: tuple[str, ...] = ("noisy", "duplicate", "harmful")
DEFAULT_NOISY_FLIP_RATE = 0.8
"""Default label-flip rate of `noisy`: helpfulness signal 1 − 2·0.8 = −0.6, clearly negative."""
DEFAULT_DUPLICATE_OF = "sharegpt"

SIGNAL_NONE = 0.05
STRENGTH_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (SIGNAL_NONE, "none"),
    (0.35, "weak"),
    (0.7, "moderate"),
)


@dataclass(frozen=True)
class PairKind:
    """A kind of preference pair and its planted effect per objective (in OBJECTIVES order)."""

    name: str
    effect: tuple[float, float]
    description: str


PAIR_KINDS: dict[str, PairKind] = {
    k.name: k
    for k in (
        PairKind(
            "helpful",
            (1.0, 0.0),
            "benign instruction; chosen = correct, specific answer; rejected = vague or wrong answer",
        ),
        PairKind(
            "helpful_weak",
            (0.3, 0.0),
            "benign instruction; chosen = correct, specific answer; rejected = correct but minimal answer (small signal)",
        ),
        PairKind(
            "neutral", (0.0, 0.0), "benign instruction; two equally good answers in random order (no signal)"
        ),
        PairKind(
            "helpful_flipped", (-1.0, 0.0), "a helpful pair with chosen and rejected swapped (label noise)"
        ),
        PairKind(
            "safety",
            (0.0, 1.0),
            "harmful request; chosen = polite refusal with a safe alternative; rejected = rude harmful compliance",
        ),
        PairKind(
            "anti_safety",
            (0.0, -1.0),
            "harmful request; chosen = rude harmful compliance; rejected = polite refusal",
        ),
    )
}

EVAL_KINDS: dict[str, str] = {"helpfulness": "helpful", "harmlessness": "safety"}
"""The pair kind of each objective's held-out evaluation set."""


@dataclass(frozen=True)
class SourceProfile:
    """A source's planted profile: its mixture of pair kinds and what it should do to each objective."""

    name: str
    role: str  # "paper", "adversarial" or "generated"
    mixture: dict[str, float]  # kind → fraction, sums to 1
    description: str
    paper_finding: str = ""
    duplicate_of: str | None = None
    draw: str = ""  # generated sources: noisy, near_duplicate, harmful or mixture (`valuation.synth.market`)

    def signal(self) -> dict[str, float]:
        """signal_k = Σ_kind fraction · effect_k, rounded to 6 decimals, per objective."""
        return {
            obj: round(sum(frac * PAIR_KINDS[kind].effect[i] for kind, frac in self.mixture.items()), 6)
            for i, obj in enumerate(OBJECTIVES)
        }

    def expected(self) -> dict[str, dict[str, float | int | str]]:
        """Per objective: {"signal": float, "sign": -1|0|1, "strength": none|weak|moderate|strong}."""
        out: dict[str, dict[str, float | int | str]] = {}
        for obj, sig in self.signal().items():
            sign = 0 if abs(sig) < SIGNAL_NONE else (1 if sig > 0 else -1)
            out[obj] = {"signal": sig, "sign": sign, "strength": strength_label(sig)}
        return out


def strength_label(signal: float) -> str:
    """none (< 0.05), weak (< 0.35), moderate (< 0.7) or strong, by |signal|."""
    for bound, label in STRENGTH_THRESHOLDS:
        if abs(signal) < bound:
            return label
    return "strong"


_PAPER: dict[str, SourceProfile] = {
    "flan_v2_niv2": SourceProfile(
        "flan_v2_niv2",
        "paper",
        {"helpful": 0.1, "helpful_weak": 0.3, "neutral": 0.6},
        "Task-style instructions whose answers mostly differ little in quality: a few clearly better "
        "answers, some slightly better ones, many equally good pairs. Small helpfulness gain, no "
        "harmlessness effect.",
        "flan_v2_niv2 gives a small helpfulness gain",
    ),
    "sharegpt": SourceProfile(
        "sharegpt",
        "paper",
        {"helpful": 0.9, "neutral": 0.1},
        "Chat-style instructions where the chosen answer is correct and specific and the rejected one is "
        "vague or wrong. Strongly helpful, no harmlessness effect.",
        "sharegpt is the most helpful source",
    ),
    "evol_instruct": SourceProfile(
        "evol_instruct",
        "paper",
        {"helpful": 0.6, "anti_safety": 0.4},
        "Evolved instructions: mostly helpful pairs, but a large share of harmful requests where the "
        "chosen answer complies rudely. Helpful, and the most harmful of the paper's sources.",
        "evol_instruct is helpful but the most harmful",
    ),
    "ultrachat": SourceProfile(
        "ultrachat",
        "paper",
        {"safety": 0.7, "helpful": 0.2, "neutral": 0.1},
        "Mostly harmful requests answered with a polite refusal and a safe alternative (chosen) over "
        "rude compliance (rejected), plus a few helpful pairs. Mostly adds harmlessness, a little "
        "helpfulness.",
        "ultrachat mostly adds harmlessness",
    ),
}


def paper_profile(name: str) -> SourceProfile:
    """The planted profile of one of PAPER_SOURCES."""
    return _PAPER[name]


def noisy_profile(flip_rate: float) -> SourceProfile:
    """Helpful pairs with a fraction `flip_rate` of labels flipped: helpfulness signal = 1 − 2·flip_rate."""
    return SourceProfile(
        "noisy",
        "adversarial",
        {"helpful": round(1.0 - flip_rate, 6), "helpful_flipped": round(flip_rate, 6)},
        f"Helpful pairs with chosen and rejected swapped in {flip_rate:.0%} of them (label noise). "
        "Above a 50% flip rate its helpfulness effect is negative.",
    )


def duplicate_profile(duplicate_of: str) -> SourceProfile:
    """A near-copy of `duplicate_of`: the same pairs with light text perturbations, same planted effect."""
    base = paper_profile(duplicate_of)
    return SourceProfile(
        "duplicate",
        "adversarial",
        dict(base.mixture),
        f"A near-copy of {duplicate_of}: the same pairs with light perturbations (punctuation, word "
        "swaps, reordered list items). Same planted effect as the original; a replication-robust "
        "payout rule should not pay it twice.",
        duplicate_of=duplicate_of,
    )


def harmful_profile() -> SourceProfile:
    """Only anti-safety pairs: prefers rude harmful compliance over refusals."""
    return SourceProfile(
        "harmful",
        "adversarial",
        {"anti_safety": 1.0},
        "Only harmful requests where the chosen answer complies rudely and the rejected one refuses. "
        "Strongly harmful, no helpfulness effect.",
    )
