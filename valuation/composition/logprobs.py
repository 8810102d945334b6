"""Per-model response log-probs on evaluation pairs, computed once and cached on disk.

For every evaluation pair (x, y_w, y_l) and every model M ∈ {π₀ (base), π_ℓ (base + adapter ℓ)} this module
computes the summed log-probability of the response tokens given the prompt,

    log π_M(y|x) = Σ_t log π_M(y_t | x, y_<t),

for y = y_w (chosen) and y = y_l (rejected). Tokenisation is exactly trl's DPO tokenisation (so the
scores are those DPO optimised): with a chat template the prompt is a user message (or the pair's message
list) rendered with the generation prompt and the response an assistant message; the response starts where
the tokenised prompt and prompt+response diverge; prompt+response is truncated to ``max_length`` tokens
(keep the start). Without a chat template plain text is used and EOS is appended to the response.

Cache: one ``.npz`` per (model, eval set) under ``cache_dir``, named by SHA-256 over (model key, eval data
hash, max length, tokenisation version). The model key is the base model's weights sha256, or for an
adapter the hash of (base sha256, adapter sha256). Files are written atomically, and each holds a SHA-256 of
its arrays (names, dtypes, shapes, bytes; `arrays_checksum`): an entry that cannot be read, lacks the
checksum or does not match it (torn, truncated, corrupted, or written by an older payoutsim) is never used:
a ``UserWarning`` names it and it is recomputed. Every coalition is then
arithmetic on these vectors (`valuation.composition.arithmetic`): n+1 forward passes over each eval set in total.

All adapters are loaded once into one peft model; the base is scored with ``disable_adapter()`` and each
adapter with ``set_adapter()``.

torch and peft are imported inside functions: importing them costs seconds (measured: ``import torch`` ≈ 1.5 s,
``import transformers, peft`` ≈ 4.8 s), and light commands that import this module never score.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from valuation.composition.arithmetic import preference_deltas
from valuation.files import atomic_path, sha256_json
from valuation.models import load_base_model
from valuation.models.cache import BaseModelInfo, BaseModelRef
from valuation.models.devices import model_device
from valuation.models.quiet import quiet_libraries
from valuation.progress import progress_bar
from valuation.runtime.backend import LOCAL, Backend
from valuation.runtime.shipping import (
    DirPayload,
    ShippedModel,
    materialise_base_model,
    pack_dir,
    ship_base_model,
    unpack_dir,
)

if TYPE_CHECKING:
    import torch

TOKENIZATION_VERSION = 1


class AdapterRef(Protocol):
    """A finished adapter (`valuation.adapters.store.AdapterRecord` fits)."""

    path: Path

    @property
    def sha256(self) -> str: ...


class PairLike(Protocol):
    """A preference pair (`valuation.sources.PreferencePair` fits): what `to_trl_example` formats."""

    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class EvalSet:
    """One objective's held-out preference pairs and their content hash (the cache key's data part)."""

    objective: str
    pairs: Sequence[PairLike]
    data_hash: str


@dataclass(frozen=True)
class ResponseLogProbs:
    """Summed response log-probs of one model on one eval set, per pair, with response token counts."""

    chosen: NDArray[np.float64]
    rejected: NDArray[np.float64]
    chosen_tokens: NDArray[np.int64]
    rejected_tokens: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.chosen.shape[0])


@dataclass(frozen=True)
class EvalLogProbs:
    """Log-probs of the base and of every adapter on one objective's eval set."""

    objective: str
    base: ResponseLogProbs
    models: dict[str, ResponseLogProbs]

    def deltas(self, sources: Sequence[str]) -> NDArray[np.float64]:
        """Δ[n, p] per source (rows in ``sources`` order); see `valuation.composition.arithmetic.preference_deltas`."""
        chosen = np.stack([self.models[s].chosen for s in sources]) if sources else np.zeros((0, len(self.base)))
        rejected = (
            np.stack([self.models[s].rejected for s in sources]) if sources else np.zeros((0, len(self.base)))
        )
        return preference_deltas(chosen, rejected, self.base.chosen, self.base.rejected)


@dataclass(frozen=True)
class LogProbReport:
    """Result of `compute_eval_logprobs`: per-objective tables and how many were computed vs cached."""

    tables: dict[str, EvalLogProbs]
    computed: int
    cached: int


# ---------------------------------------------------------------------------------------------------
# formatting and tokenisation (the contract shared with training)


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template (then pairs are formatted as conversations)."""
    return bool(getattr(tokenizer, "chat_template", None))


def to_trl_example(pair: PairLike, *, chat: bool) -> dict[str, Any]:
    """A pair in trl's preference format: conversational (``chat``) or plain text.

    Conversational: ``prompt`` = the pair's message list, or ``[{"role": "user", "content": prompt}]`` for a
    text prompt; ``chosen``/``rejected`` = one assistant message each. Plain: strings; a message-list
    prompt is joined with blank lines.
    """
    prompt = pair.prompt
    if chat:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        return {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
    return {"prompt": text, "chosen": pair.chosen, "rejected": pair.rejected}


def _ids(tokenizer: Any, value: str | list[dict[str, str]], *, generation_prompt: bool = False) -> list[int]:
    if isinstance(value, list):
        out = tokenizer.apply_chat_template(
            value, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
        )
        return list(out["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_example(
    tokenizer: Any, example: Mapping[str, Any], max_length: int | None
) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
    """Token ids of prompt+chosen and prompt+rejected, each with the index where the response starts.

    Mirrors trl 1.16's DPO tokenisation (``_prepare_dataset`` + ``DataCollatorForPreference``): see the
    module docstring. A response fully cut by ``max_length`` has no tokens (its log-prob is 0).
    """
    prompt = example["prompt"]
    chosen, rejected = example["chosen"], example["rejected"]
    if isinstance(prompt, list):
        prompt_ids = _ids(tokenizer, prompt, generation_prompt=True)
        full_chosen = _ids(tokenizer, prompt + chosen)
        full_rejected = _ids(tokenizer, prompt + rejected)
    else:
        eos = tokenizer.eos_token or ""
        chosen = chosen if chosen.endswith(eos) else chosen + eos
        rejected = rejected if rejected.endswith(eos) else rejected + eos
        prompt_ids = _ids(tokenizer, prompt)
        full_chosen = _ids(tokenizer, prompt + chosen)
        full_rejected = _ids(tokenizer, prompt + rejected)
    start = min(_common_prefix(prompt_ids, full_chosen), _common_prefix(prompt_ids, full_rejected))
    out = []
    for full in (full_chosen, full_rejected):
        ids = prompt_ids[:start] + full[start:]
        if max_length is not None:
            ids = ids[:max_length]
        out.append((ids, min(start, len(ids))))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------------
# scoring


def sequence_logprobs(
    model: Any,
    sequences: Sequence[tuple[list[int], int]],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Σ log π(ids[t] | ids[<t]) over t ≥ start for each ``(ids, start)``; also the response token counts.

    Sequences are batched by length (right padding, attention mask) and results returned in input order.
    ``on_batch(k)`` is called after each batch with the number of sequences done in it.
    """
    import torch

    totals = np.zeros(len(sequences), dtype=np.float64)
    counts = np.array([len(ids) - start for ids, start in sequences], dtype=np.int64)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    device = model_device(model)  # the CPU, or the placement's GPU (valuation.models.devices)
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            width = max(len(sequences[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            response = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                seq, start = sequences[i]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention[row, : len(seq)] = 1
                response[row, start : len(seq)] = True
            ids, attention, response = ids.to(device), attention.to(device), response.to(device)
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
            token_logps = _token_logps(logits[:, :-1], ids[:, 1:])
            mask = response[:, 1:]
            sums = (token_logps.double() * mask).sum(dim=1)
            totals[chunk] = sums.cpu().numpy()
            if on_batch is not None:
                on_batch(len(chunk))
    return totals, counts


def _token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position, without materialising the full log-softmax twice."""
    import torch

    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PairLike],
    *,
    max_length: int | None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> ResponseLogProbs:
    """Response log-probs of chosen and rejected for every pair under ``model`` (its active adapter)."""
    chat = has_chat_template(tokenizer)
    sequences: list[tuple[list[int], int]] = []
    for pair in pairs:
        chosen, rejected = tokenize_example(tokenizer, to_trl_example(pair, chat=chat), max_length)
        sequences.extend((chosen, rejected))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    totals, counts = sequence_logprobs(model, sequences, pad_token_id=pad, batch_size=batch_size, on_batch=on_batch)
    return ResponseLogProbs(
        chosen=totals[0::2], rejected=totals[1::2], chosen_tokens=counts[0::2], rejected_tokens=counts[1::2]
    )


# ---------------------------------------------------------------------------------------------------
# cache


class LogProbCache:
    """``.npz`` files of `ResponseLogProbs` in one directory, keyed by content hashes; atomic writes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(model_key: str, data_hash: str, max_length: int | None) -> str:
        """SHA-256 over (model key, eval data hash, max length, tokenisation version)."""
        return sha256_json(
            {"model": model_key, "data": data_hash, "max_length": max_length, "tokenization": TOKENIZATION_VERSION}
        )

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> ResponseLogProbs | None:
        """The cached entry, or ``None`` when absent. An entry that cannot be read, has no checksum or does
        not match its checksum counts as absent, with a ``UserWarning`` naming the file (it is recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                arrays = {name: np.array(data[name]) for name in CACHE_ARRAYS}
                stored = str(data[CHECKSUM]) if CHECKSUM in data.files else None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            problem = f"unreadable ({type(err).__name__}: {err})"
        else:
            if stored is None:
                problem = "it has no checksum (written by an older payoutsim)"
            elif stored != arrays_checksum(arrays):
                problem = "its arrays do not match their checksum"
            else:
                return ResponseLogProbs(
                    chosen=arrays["chosen"].astype(np.float64),
                    rejected=arrays["rejected"].astype(np.float64),
                    chosen_tokens=arrays["chosen_tokens"].astype(np.int64),
                    rejected_tokens=arrays["rejected_tokens"].astype(np.int64),
                )
        warnings.warn(f"log-prob cache entry {path} is damaged: {problem}; recomputing it", UserWarning, stacklevel=2)
        return None

    def save(self, key: str, value: ResponseLogProbs) -> Path:
        """Write the arrays and their `arrays_checksum` atomically (temp file in the same folder + ``os.replace``)."""
        arrays = {name: np.asarray(getattr(value, name)) for name in CACHE_ARRAYS}
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **{CHECKSUM: np.array(arrays_checksum(arrays))})
        return self.path(key)


CACHE_ARRAYS = ("chosen", "rejected", "chosen_tokens", "rejected_tokens")
CHECKSUM = "sha256"


def arrays_checksum(arrays: Mapping[str, NDArray[Any]]) -> str:
    """SHA-256 hex over the arrays in name order: each name, dtype, shape and C-order bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def adapter_model_key(base_sha256: str, adapter_sha256: str) -> str:
    """The cache's model key of base + adapter (an adapter's log-probs depend on both)."""
    return sha256_json({"base": base_sha256, "adapter": adapter_sha256})


def compute_eval_logprobs(
    base: BaseModelRef,
    adapters: Mapping[str, AdapterRef],
    eval_sets: Sequence[EvalSet],
    *,
    cache_dir: Path,
    max_length: int | None,
    batch_size: int = 8,
    progress: bool = True,
    backend: Backend = LOCAL,
) -> LogProbReport:
    """Log-probs of the base and of every adapter on every eval set, from the cache when present.

    Models are loaded only when something is missing from the cache: the base once, then each needed
    adapter once into the same peft model. With a remote ``backend`` each model that misses something is
    one task (`score_model_task`: the base, or the base + one adapter shipped as bytes) and the driver caches
    what each returns as it arrives. Returns tables keyed by objective.
    """
    cache = LogProbCache(cache_dir)
    model_keys: dict[str | None, str] = {None: base.sha256}
    for source, ref in adapters.items():
        model_keys[source] = adapter_model_key(base.sha256, ref.sha256)

    found: dict[tuple[str, str | None], ResponseLogProbs] = {}
    todo: list[tuple[str | None, EvalSet, str]] = []
    for es in eval_sets:
        for who, mkey in model_keys.items():
            key = LogProbCache.key(mkey, es.data_hash, max_length)
            hit = cache.load(key)
            if hit is not None and len(hit) == len(es.pairs):
                found[(es.objective, who)] = hit
            else:
                todo.append((who, es, key))
    computed = len(todo)
    if todo and backend.remote:
        _score_remote(base, adapters, todo, found, cache, max_length, batch_size, progress, backend)
    elif todo:
        needed = sorted({who for who, _, _ in todo if who is not None})
        with _scoring_model(base, {s: adapters[s] for s in needed}) as (model, tokenizer, use):
            total = sum(2 * len(es.pairs) for _, es, _ in todo)
            with progress_bar("scoring eval pairs", total, progress) as advance, quiet_libraries():
                for who, es, key in sorted(todo, key=lambda t: (t[0] or "", t[1].objective)):
                    with use(who):
                        value = score_pairs(
                            model, tokenizer, es.pairs, max_length=max_length, batch_size=batch_size, on_batch=advance
                        )
                    cache.save(key, value)
                    found[(es.objective, who)] = value
    tables = {
        es.objective: EvalLogProbs(
            objective=es.objective,
            base=found[(es.objective, None)],
            models={s: found[(es.objective, s)] for s in adapters},
        )
        for es in eval_sets
    }
    return LogProbReport(tables=tables, computed=computed, cached=len(found) - computed)


@dataclass(frozen=True)
class ScoreJob:
    """One model's scoring task: the base (``adapter`` None) or base + one adapter, on the given eval sets."""

    who: str | None
    adapter: DirPayload | None
    eval_sets: list[tuple[str, list[Any]]]  # (objective, pairs)
    max_length: int | None
    batch_size: int


def score_model_task(job: ScoreJob, base: ShippedModel) -> dict[str, ResponseLogProbs]:
    """A task's body: load the base (and the job's adapter, written to a temp dir), score every eval set of
    the job; objective → log-probs."""
    import tempfile

    info = materialise_base_model(base)
    with tempfile.TemporaryDirectory(prefix="payoutsim-score-") as tmp:
        adapters: dict[str, _PathAdapter] = {}
        if job.adapter is not None:
            adapters["job"] = _PathAdapter(unpack_dir(job.adapter, Path(tmp) / "adapter"))
        with _scoring_model(info, adapters) as (model, tokenizer, use), quiet_libraries(), use(
            None if job.adapter is None else "job"
        ):
            return {
                objective: score_pairs(model, tokenizer, pairs, max_length=job.max_length, batch_size=job.batch_size)
                for objective, pairs in job.eval_sets
            }


@dataclass(frozen=True)
class _PathAdapter:
    path: Path


def _score_remote(
    base: BaseModelRef,
    adapters: Mapping[str, AdapterRef],
    todo: Sequence[tuple[str | None, EvalSet, str]],
    found: dict[tuple[str, str | None], ResponseLogProbs],
    cache: LogProbCache,
    max_length: int | None,
    batch_size: int,
    progress: bool,
    backend: Backend,
) -> None:
    """`compute_eval_logprobs`' missing entries, one task per model, cached and added to ``found``."""
    by_model: dict[str | None, list[tuple[EvalSet, str]]] = {}
    for who, es, key in todo:
        by_model.setdefault(who, []).append((es, key))
    models = sorted(by_model, key=lambda w: w or "")
    jobs = [
        ScoreJob(
            who,
            None if who is None else pack_dir(adapters[who].path),
            [(es.objective, list(es.pairs)) for es, _ in by_model[who]],
            max_length,
            batch_size,
        )
        for who in models
    ]
    info = BaseModelInfo(base.name, Path(base.path), base.sha256, getattr(base, "preset", None))
    shared = backend.share(ship_base_model(info, with_files=backend.ship_files))

    def arrived(i: int, scored: dict[str, ResponseLogProbs]) -> None:
        who = models[i]
        for es, key in by_model[who]:
            cache.save(key, scored[es.objective])
            found[(es.objective, who)] = scored[es.objective]

    backend.map(score_model_task, jobs, shared=(shared,), label="scoring models", progress=progress,
                on_result=arrived)


@contextlib.contextmanager
def _scoring_model(
    base: BaseModelRef, adapters: Mapping[str, AdapterRef]
) -> Iterator[tuple[Any, Any, Callable[[str | None], contextlib.AbstractContextManager[None]]]]:
    """Load the base (+ the given adapters, each once); yield (model, tokenizer, use) where ``use(name)``
    activates adapter ``name`` or, for ``None``, disables adapters (the base)."""
    names = {source: f"adapter_{i}" for i, source in enumerate(adapters)}  # safe peft module names
    with quiet_libraries():
        model, tokenizer = load_base_model(base)
        if adapters:
            from peft import PeftModel

            items = list(adapters.items())
            first_source, first_ref = items[0]
            model = PeftModel.from_pretrained(model, str(first_ref.path), adapter_name=names[first_source])
            for source, ref in items[1:]:
                model.load_adapter(str(ref.path), adapter_name=names[source])
    model.eval()

    @contextlib.contextmanager
    def use(source: str | None) -> Iterator[None]:
        if source is None:
            if adapters:
                with model.disable_adapter():
                    yield
            else:
                yield
        else:
            model.set_adapter(names[source])
            yield

    yield model, tokenizer, use
