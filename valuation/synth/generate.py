"""Generate the synthetic market corpus with planted ground truth, in memory or on disk.

On-disk layout (the data loader reads exactly this)::

    out_dir/train/<source>.jsonl      {"chosen", "prompt", "rejected", "source"} per line
    out_dir/eval/<objective>.jsonl    same + "objective"; source = "eval_<objective>"
    out_dir/manifest.json             config, generator version, planted profiles, eval sets, counts, sha256

Lines are ``json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\\n"``. Nothing depends on time or
paths: the same config gives byte-identical files; a different seed gives different ones.

Randomness: every source and every eval set draws from its own ``random.Random`` seeded with
sha256("payoutsim-synth|<seed>|<part>|<name>"), so adding or removing a source never changes the
others. The `duplicate` source regenerates its original's pairs from the original's seed and perturbs
them with its own generator, so it is a near-copy whether or not the original is in the market.
Generated sources (``n_sources``: ``src00`` …, profiles drawn by `valuation.synth.market`) follow the
same rules; a generated near-duplicate copies an earlier generated source the same way. The manifest
then also has ``generated`` (names, class rates, planted strength per objective) and each generated
source's ``class``; without ``n_sources`` the manifest and files are exactly those of earlier versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from valuation.errors import InputError
from valuation.synth.items import EVAL_KEY_FRACTION, helpful_item, is_eval_key, safety_item
from valuation.synth.market import GENERATED_RATES, MAX_GENERATED_SOURCES, draw_profiles, generated_name
from valuation.synth.perturb import perturb_pair
from valuation.synth.profiles import (
    ADVERSARIAL_SOURCES,
    DEFAULT_DUPLICATE_OF,
    DEFAULT_NOISY_FLIP_RATE,
    EVAL_KINDS,
    OBJECTIVES,
    PAIR_KINDS,
    PAPER_SOURCES,
    SourceProfile,
    duplicate_profile,
    harmful_profile,
    noisy_profile,
    paper_profile,
)

GENERATOR_NAME = "payoutsim.synth"
GENERATOR_VERSION = "1"
MAX_PAIRS_PER_SOURCE = 10_000
MAX_EVAL_PAIRS = 2_000
_MAX_ATTEMPTS = 2_000  # consecutive draws that may fail to give a new unique pair before giving up


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction (bad values raise InputError naming the field).

    Attributes:
        seed: base seed (≥ 0); every source / eval set derives its own.
        pairs_per_source: preference pairs in each train file (1 … 10,000).
        eval_pairs_per_objective: held-out pairs per objective (1 … 2,000).
        sources: which of PAPER_SOURCES to include (no repeats; non-empty unless n_sources is set).
            Default: all of them, or none when n_sources is set.
        adversarial: which of ADVERSARIAL_SOURCES to include (may be empty). Default: all of them, or
            none when n_sources is set.
        noisy_flip_rate: share of the `noisy` source's helpful pairs whose labels are flipped (0 … 1);
            its planted helpfulness signal is 1 − 2·rate, negative above 0.5.
        duplicate_of: the paper source that `duplicate` nearly copies.
        n_sources: how many generated sources ``src00`` … to add after the named ones (1 …
            MAX_GENERATED_SOURCES), each with a planted profile drawn as `valuation.synth.market` states;
            None (the default) adds none and leaves the corpus exactly as before.
    """

    seed: int = 0
    pairs_per_source: int = 200
    eval_pairs_per_objective: int = 200
    sources: tuple[str, ...] = None  # type: ignore[assignment]  # resolved in __post_init__
    adversarial: tuple[str, ...] = None  # type: ignore[assignment]  # resolved in __post_init__
    noisy_flip_rate: float = DEFAULT_NOISY_FLIP_RATE
    duplicate_of: str = DEFAULT_DUPLICATE_OF
    n_sources: int | None = None

    def __post_init__(self) -> None:
        n = self.n_sources
        if n is not None and (
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_GENERATED_SOURCES
        ):
            raise InputError(
                f"must be an integer between 1 and {MAX_GENERATED_SOURCES}, got {n!r}", field="n_sources"
            )
        default_sources = PAPER_SOURCES if n is None else ()
        default_adversarial = ADVERSARIAL_SOURCES if n is None else ()
        object.__setattr__(self, "sources", tuple(default_sources if self.sources is None else self.sources))
        object.__setattr__(
            self, "adversarial", tuple(default_adversarial if self.adversarial is None else self.adversarial)
        )
        for name in ("seed", "pairs_per_source", "eval_pairs_per_objective"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"must be an integer, got {value!r}", field=name)
        if self.seed < 0:
            raise InputError(f"must be ≥ 0, got {self.seed}", field="seed")
        if not 1 <= self.pairs_per_source <= MAX_PAIRS_PER_SOURCE:
            raise InputError(
                f"must be between 1 and {MAX_PAIRS_PER_SOURCE}, got {self.pairs_per_source}",
                field="pairs_per_source",
            )
        if not 1 <= self.eval_pairs_per_objective <= MAX_EVAL_PAIRS:
            raise InputError(
                f"must be between 1 and {MAX_EVAL_PAIRS}, got {self.eval_pairs_per_objective}",
                field="eval_pairs_per_objective",
            )
        _check_names(self.sources, PAPER_SOURCES, "sources", allow_empty=n is not None)
        _check_names(self.adversarial, ADVERSARIAL_SOURCES, "adversarial", allow_empty=True)
        rate = self.noisy_flip_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise InputError(f"must be a number between 0 and 1, got {rate!r}", field="noisy_flip_rate")
        object.__setattr__(self, "noisy_flip_rate", float(rate))
        if self.duplicate_of not in PAPER_SOURCES:
            raise InputError(
                f"unknown source {self.duplicate_of!r}; choose one of {', '.join(PAPER_SOURCES)}",
                field="duplicate_of",
            )

    @property
    def generated_sources(self) -> tuple[str, ...]:
        """``src00`` … ``src{n_sources-1}`` (empty without n_sources)."""
        return tuple(generated_name(i) for i in range(self.n_sources or 0))

    @property
    def all_sources(self) -> tuple[str, ...]:
        """Paper sources, then adversarial ones (configured order), then the generated ones."""
        return self.sources + self.adversarial + self.generated_sources

    def manifest_config(self) -> dict[str, Any]:
        """The config as written to the manifest (n_sources only when set, so older corpora are unchanged)."""
        out = asdict(self)
        if self.n_sources is None:
            del out["n_sources"]
        return out


def _check_names(
    names: tuple[str, ...], known: tuple[str, ...], field_name: str, *, allow_empty: bool
) -> None:
    if not names and not allow_empty:
        raise InputError(f"at least one is required; choose from {', '.join(known)}", field=field_name)
    for name in names:
        if name not in known:
            raise InputError(f"unknown source {name!r}; choose from {', '.join(known)}", field=field_name)
    if len(set(names)) != len(names):
        raise InputError(f"a source is listed twice: {', '.join(names)}", field=field_name)


@dataclass(frozen=True)
class SynthPair:
    """One preference pair plus its planted kind (the kind is NOT written to the JSONL line)."""

    source: str
    prompt: str
    chosen: str
    rejected: str
    kind: str
    objective: str | None = None

    def record(self) -> dict[str, str]:
        """The JSON object written for this pair."""
        rec = {"source": self.source, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.objective is not None:
            rec["objective"] = self.objective
        return rec


@dataclass(frozen=True)
class SynthCorpus:
    """A generated corpus: train pairs per source, eval pairs per objective, and the manifest."""

    config: SynthConfig
    train: dict[str, tuple[SynthPair, ...]]
    eval: dict[str, tuple[SynthPair, ...]]
    profiles: dict[str, SourceProfile]
    manifest: dict[str, Any]
    data_files: dict[str, bytes] = field(repr=False)

    def files(self) -> dict[str, bytes]:
        """Every file of the on-disk layout (relative POSIX path → bytes), manifest.json included."""
        return {**self.data_files, "manifest.json": manifest_bytes(self.manifest)}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def jsonl_bytes(pairs: tuple[SynthPair, ...] | list[SynthPair]) -> bytes:
    """``json.dumps(record, sort_keys=True, ensure_ascii=False) + "\\n"`` per pair, UTF-8."""
    return "".join(json.dumps(p.record(), sort_keys=True, ensure_ascii=False) + "\n" for p in pairs).encode(
        "utf-8"
    )


def _rng(seed: int, part: str, name: str) -> random.Random:
    digest = hashlib.sha256(f"payoutsim-synth|{seed}|{part}|{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def kind_counts(mixture: dict[str, float], n: int) -> dict[str, int]:
    """Split n pairs over the mixture by the largest-remainder method (ties: mixture order)."""
    raw = {k: f * n for k, f in mixture.items()}
    counts = {k: int(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    order = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(mixture).index(k)))
    for k in order[:rest]:
        counts[k] += 1
    return counts


def _draw_pair(kind: str, rng: random.Random, held_out: bool) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of one pair of `kind`, from the eval or the train key partition."""
    if kind in ("safety", "anti_safety"):
        s = safety_item(rng)
        while is_eval_key(s.key) != held_out:
            s = safety_item(rng)
        return (
            (s.prompt, s.refusal, s.compliance) if kind == "safety" else (s.prompt, s.compliance, s.refusal)
        )
    h = helpful_item(rng)
    while is_eval_key(h.key) != held_out:
        h = helpful_item(rng)
    if kind == "helpful":
        return h.prompt, rng.choice(h.goods), rng.choice(h.bads)
    if kind == "helpful_flipped":
        return h.prompt, rng.choice(h.bads), rng.choice(h.goods)
    if kind == "helpful_weak":
        return h.prompt, rng.choice(h.goods), h.terse
    if kind == "neutral":
        a, b = rng.sample(h.goods, 2)
        return h.prompt, a, b
    raise ValueError(f"unknown pair kind {kind!r}")


def _generate_pairs(
    source: str,
    kinds: list[str],
    rng: random.Random,
    *,
    held_out: bool,
    objective: str | None = None,
    unique_prompts: bool = False,
    count_field: str = "pairs_per_source",
) -> tuple[SynthPair, ...]:
    """Pairs of the given kinds (in order); every pair unique, prompts unique when possible."""
    seen_pairs: set[tuple[str, str, str]] = set()
    seen_prompts: set[str] = set()
    out: list[SynthPair] = []
    for kind in kinds:
        for attempt in range(_MAX_ATTEMPTS):
            triple = _draw_pair(kind, rng, held_out)
            if triple in seen_pairs:
                continue
            if unique_prompts and triple[0] in seen_prompts and attempt < _MAX_ATTEMPTS // 10:
                continue
            break
        else:
            raise InputError(
                f"cannot draw {len(kinds)} distinct pairs for {source!r} from the templates; ask for fewer",
                field=count_field,
            )
        seen_pairs.add(triple)
        seen_prompts.add(triple[0])
        out.append(SynthPair(source, *triple, kind=kind, objective=objective))
    return tuple(out)


def _shuffled_kinds(mixture: dict[str, float], n: int, rng: random.Random) -> list[str]:
    kinds = [k for k, c in kind_counts(mixture, n).items() for _ in range(c)]
    rng.shuffle(kinds)
    return kinds


def _profile(name: str, config: SynthConfig) -> SourceProfile:
    if name in PAPER_SOURCES:
        return paper_profile(name)
    if name == "noisy":
        return noisy_profile(config.noisy_flip_rate)
    if name == "duplicate":
        return duplicate_profile(config.duplicate_of)
    return harmful_profile()


def _train_pairs(name: str, profile: SourceProfile, config: SynthConfig) -> tuple[SynthPair, ...]:
    rng = _rng(config.seed, "train", name)
    kinds = _shuffled_kinds(profile.mixture, config.pairs_per_source, rng)
    return _generate_pairs(name, kinds, rng, held_out=False)


def _duplicate_pairs(
    name: str,
    original_name: str,
    original_profile: SourceProfile,
    config: SynthConfig,
    eval_prompts: set[str],
) -> tuple[SynthPair, ...]:
    """The original's pairs, each lightly perturbed (always changed; never onto an eval prompt)."""
    original = _train_pairs(original_name, original_profile, config)
    rng = _rng(config.seed, "perturb", name)
    seen: set[tuple[str, str, str]] = set()
    out: list[SynthPair] = []
    for pair in original:
        base = (pair.prompt, pair.chosen, pair.rejected)
        for _ in range(_MAX_ATTEMPTS):
            prompt, chosen, rejected = perturb_pair(*base, rng)
            if prompt in eval_prompts:
                prompt = pair.prompt
            triple = (prompt, chosen, rejected)
            if triple != base and triple not in seen:
                break
        else:  # pragma: no cover - the perturbations always offer a fresh variant in practice
            raise RuntimeError("could not perturb a pair of the duplicate source")
        seen.add(triple)
        out.append(SynthPair(name, *triple, kind=pair.kind))
    return tuple(out)


def _eval_pairs(objective: str, config: SynthConfig) -> tuple[SynthPair, ...]:
    rng = _rng(config.seed, "eval", objective)
    kinds = [EVAL_KINDS[objective]] * config.eval_pairs_per_objective
    return _generate_pairs(
        f"eval_{objective}",
        kinds,
        rng,
        held_out=True,
        objective=objective,
        unique_prompts=True,
        count_field="eval_pairs_per_objective",
    )


def generate_corpus(config: SynthConfig) -> SynthCorpus:
    """Build every train and eval pair and the manifest in memory (deterministic in `config`)."""
    evals = {obj: _eval_pairs(obj, config) for obj in OBJECTIVES}
    eval_prompts = {p.prompt for pairs in evals.values() for p in pairs}
    profiles = {name: _profile(name, config) for name in config.sources + config.adversarial}
    profiles.update({p.name: p for p in draw_profiles(config.seed, config.n_sources or 0)})
    train: dict[str, tuple[SynthPair, ...]] = {}
    for name, profile in profiles.items():
        if name == "duplicate":
            original = config.duplicate_of
            train[name] = _duplicate_pairs(name, original, paper_profile(original), config, eval_prompts)
        elif profile.draw == "near_duplicate" and profile.duplicate_of is not None:
            original = profile.duplicate_of
            train[name] = _duplicate_pairs(name, original, profiles[original], config, eval_prompts)
        else:
            train[name] = _train_pairs(name, profile, config)
    leaked = eval_prompts & {p.prompt for pairs in train.values() for p in pairs}
    if leaked:  # the key partition makes this impossible; guard the held-out promise anyway
        raise RuntimeError(f"eval prompts leaked into train: {sorted(leaked)[:3]}")

    data_files: dict[str, bytes] = {}
    for name, pairs in train.items():
        data_files[f"train/{name}.jsonl"] = jsonl_bytes(pairs)
    for obj, pairs in evals.items():
        data_files[f"eval/{obj}.jsonl"] = jsonl_bytes(pairs)
    manifest = _manifest(config, profiles, train, evals, data_files)
    return SynthCorpus(config, train, evals, profiles, manifest, data_files)


def _manifest(
    config: SynthConfig,
    profiles: dict[str, SourceProfile],
    train: dict[str, tuple[SynthPair, ...]],
    evals: dict[str, tuple[SynthPair, ...]],
    data_files: dict[str, bytes],
) -> dict[str, Any]:
    files = {
        path: {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n"), "bytes": len(data)}
        for path, data in data_files.items()
    }
    sources: dict[str, Any] = {}
    for name, profile in profiles.items():
        path = f"train/{name}.jsonl"
        counts = {k: 0 for k in profile.mixture}
        for p in train[name]:
            counts[p.kind] += 1
        entry: dict[str, Any] = {
            "role": profile.role,
            "file": path,
            "pairs": len(train[name]),
            "sha256": files[path]["sha256"],
            "mixture": dict(profile.mixture),
            "kind_counts": counts,
            "expected": profile.expected(),
            "description": profile.description,
        }
        if profile.paper_finding:
            entry["paper_finding"] = profile.paper_finding
        if profile.duplicate_of:
            entry["duplicate_of"] = profile.duplicate_of
        if profile.draw:
            entry["class"] = profile.draw
        sources[name] = entry
    eval_sets = {
        obj: {
            "file": f"eval/{obj}.jsonl",
            "source": f"eval_{obj}",
            "pairs": len(pairs),
            "sha256": files[f"eval/{obj}.jsonl"]["sha256"],
            "kind": EVAL_KINDS[obj],
            "description": PAIR_KINDS[EVAL_KINDS[obj]].description,
        }
        for obj, pairs in evals.items()
    }
    line_kinds = {f"train/{n}.jsonl": [p.kind for p in pairs] for n, pairs in train.items()}
    line_kinds.update({f"eval/{o}.jsonl": [p.kind for p in pairs] for o, pairs in evals.items()})
    manifest: dict[str, Any] = {
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "config": config.manifest_config(),
        "objectives": list(OBJECTIVES),
        "pair_kinds": {
            k.name: {"effect": dict(zip(OBJECTIVES, k.effect, strict=True)), "description": k.description}
            for k in PAIR_KINDS.values()
        },
        "signal_rule": (
            "signal_k = sum over kinds of fraction(kind) * effect_k(kind); sign 0 if |signal| < 0.05; "
            "strength none < 0.05 <= weak < 0.35 <= moderate < 0.7 <= strong"
        ),
        "held_out": {
            "rule": "an instance (task family + slot values, phrasing excluded) is held out when "
            "sha256(key)[:2] / 65536 < eval_key_fraction; train draws only other instances",
            "eval_key_fraction": EVAL_KEY_FRACTION,
        },
        "sources": sources,
        "eval": eval_sets,
        "files": files,
        "line_kinds": line_kinds,
    }
    if config.n_sources is not None:
        manifest["generated"] = {
            "sources": list(config.generated_sources),
            "class_rates": dict(GENERATED_RATES),
            "rule": "each srcNN draws its class (noisy, near_duplicate, harmful, mixture) and mixture from "
            "sha256(payoutsim-synth|seed|profile|srcNN); see valuation.synth.market",
            "planted_strength": {
                name: {obj: e["signal"] for obj, e in profiles[name].expected().items()}
                for name in config.generated_sources
            },
        }
    return manifest


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _is_previous_corpus(path: Path) -> tuple[bool, str]:
    """(True, "") when `path` holds only a corpus this generator wrote; else (False, the reason)."""
    entries = sorted(p.name for p in path.iterdir())
    extra = [e for e in entries if e not in ("manifest.json", "train", "eval")]
    if extra:
        return False, f"it contains {extra[0]!r}"
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        known = set(manifest["files"])
        is_ours = manifest["generator"]["name"] == GENERATOR_NAME
    except (OSError, ValueError, KeyError, TypeError):
        return False, "it has no readable synthetic-corpus manifest.json"
    if not is_ours:
        return False, "its manifest.json was not written by the synthetic-corpus generator"
    for sub in ("train", "eval"):
        if not (path / sub).exists():
            continue
        for p in sorted((path / sub).iterdir()):
            if f"{sub}/{p.name}" not in known:
                return False, f"it contains {sub}/{p.name!r}, which its manifest does not list"
    return True, ""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_corpus(out_dir: Path, config: SynthConfig) -> Path:
    """Generate and write the corpus to `out_dir`; return the manifest path.

    Atomic: everything is written to a temporary sibling directory first, then renamed into place.
    A non-empty `out_dir` is replaced only when it holds a previous corpus of this generator;
    anything else raises InputError and leaves it untouched.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a directory", file=out_dir, field="out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        ok, why = _is_previous_corpus(out_dir)
        if not ok:
            raise InputError(
                f"refusing to overwrite a non-empty directory that is not a previous synthetic corpus ({why})",
                file=out_dir,
                field="out",
            )
    corpus = generate_corpus(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for rel, data in corpus.files().items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; use the ordinary permissions
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "corpus")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "manifest.json"
