"""The ``tiny`` preset: a small Llama with its own BPE tokenizer, pre-trained briefly on a corpus.

Recipe (deterministic for a given corpus, :class:`TinyConfig` and seed):

1. Read the corpus: every ``prompt``/``chosen``/``rejected`` string of ``train/*.jsonl`` and
   ``eval/*.jsonl`` (files sorted by name, lines in order).
2. Train a byte-level BPE tokenizer (``tokenizers``) on all of those strings (train and eval) with the
   special tokens ``<|endoftext|>`` (unk), ``<|im_start|>`` (bos), ``<|im_end|>`` (eos), ``<|pad|>`` (pad)
   and a ChatML chat template, so ``tokenizer.apply_chat_template`` works.
3. Build a randomly initialised ``LlamaForCausalLM`` (tied input/output embeddings) seeded with
   ``torch.manual_seed(seed)``.
4. Pre-train it as a causal LM on the **train** pairs only (the eval pairs stay held out): each pair gives
   two chat-formatted texts, user ``prompt`` + assistant ``chosen`` and user ``prompt`` + assistant
   ``rejected``, so the base model writes corpus-like answers without preferring either side. The texts
   are packed (:func:`packed_rows`: seeded shuffle, concatenated, cut into rows of ``max_length`` tokens;
   no padding); loss is the mean next-token cross-entropy over a batch of ``batch_size`` rows; AdamW with
   linear warm-up and cosine decay to ``min_lr_ratio * lr``.
5. Save a plain Hugging Face model dir (safetensors) with a ``manifest.json`` under
   ``cache_dir/models/tiny-<key>``, ``key`` = the first 16 hex digits of SHA-256 over (recipe version,
   config, seed, corpus texts). A second call with the same inputs finds it and returns at once.

torch, transformers and tokenizers are imported inside functions (`import torch` ≈ 1.5 s,
`import transformers, peft` ≈ 4.8 s), so importing this module (and `payoutsim --help`) stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from valuation.errors import InputError
from valuation.models.cache import (
    BaseModelInfo,
    building_dir,
    info_from_manifest,
    models_dir,
    read_manifest,
    write_manifest,
)
from valuation.models.progress import status, step_progress
from valuation.synth import SynthConfig, write_corpus

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

RECIPE_VERSION = 1
UNK, BOS, EOS, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD)

#: ChatML without a default system prompt: ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes and the pre-training schedule of the ``tiny`` preset.

    The defaults (hidden 192, 3 layers, 4 heads, intermediate 512, ~1000-token BPE) follow the design
    card's prototype and build in well under a minute on 2 CPU cores. Tests pass a smaller one.
    """

    vocab_size: int = 1000
    hidden_size: int = 192
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    max_length: int = 128  # tokens per packed training row (longer texts are truncated to it)
    steps: int = 300
    batch_size: int = 8  # packed rows per step
    lr: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    num_threads: int = 1  # one thread: on a shared 2-core box two threads ran 5-9x slower per step


@dataclass(frozen=True)
class CorpusPair:
    """One preference pair read from the corpus; ``prompt`` is plain text or a list of chat messages."""

    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Corpus:
    """Corpus texts for the tiny preset: the train pairs (pre-training) and every string (tokenizer)."""

    train: list[CorpusPair]
    texts: list[str]

    def digest(self) -> str:
        """SHA-256 over the corpus content (train pairs, then all texts), JSON-encoded."""
        payload = json.dumps(
            {"train": [[p.prompt, p.chosen, p.rejected] for p in self.train], "texts": self.texts},
            ensure_ascii=False,
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _prompt_texts(prompt: str | list[dict[str, str]]) -> list[str]:
    return [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]


def _parse_prompt(value: Any, file: Path, line: int) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise InputError("empty prompt", file=file, row=f"line {line}", field="prompt")
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise InputError(
        "expected a string or a list of {role, content} messages",
        file=file,
        row=f"line {line}",
        field="prompt",
    )


def _read_jsonl(path: Path) -> Iterator[CorpusPair]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"not valid UTF-8 ({err.reason})", file=path) from err
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(f"malformed JSON: {err.msg}", file=path, row=f"line {number}") from err
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", file=path, row=f"line {number}")
        for key in ("prompt", "chosen", "rejected"):
            if key not in record:
                raise InputError("missing field", file=path, row=f"line {number}", field=key)
        prompt = _parse_prompt(record["prompt"], path, number)
        for key in ("chosen", "rejected"):
            if not isinstance(record[key], str) or not record[key].strip():
                raise InputError("expected a non-empty string", file=path, row=f"line {number}", field=key)
        yield CorpusPair(prompt=prompt, chosen=record["chosen"], rejected=record["rejected"])


def read_corpus(corpus_dir: Path) -> Corpus:
    """Read a payoutsim corpus dir (``train/*.jsonl``, optional ``eval/*.jsonl``).

    Raises:
        InputError: missing dir, no ``train/*.jsonl``, or a bad line (file, line and field named).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise InputError("corpus directory not found", file=corpus_dir)
    train_files = sorted((corpus_dir / "train").glob("*.jsonl"))
    if not train_files:
        raise InputError("no train/*.jsonl files in the corpus directory", file=corpus_dir)
    train = [pair for path in train_files for pair in _read_jsonl(path)]
    if not train:
        raise InputError("the corpus has no training pairs", file=corpus_dir / "train")
    evals = [pair for path in sorted((corpus_dir / "eval").glob("*.jsonl")) for pair in _read_jsonl(path)]
    texts = [t for p in train + evals for t in (*_prompt_texts(p.prompt), p.chosen, p.rejected)]
    return Corpus(train=train, texts=texts)


def default_corpus() -> Corpus:
    """The default synthetic corpus, ``valuation.synth.write_corpus(dir, SynthConfig(seed=0))``, generated
    in a temp dir and read back."""
    with tempfile.TemporaryDirectory(prefix="payoutsim-corpus-") as tmp:
        write_corpus(Path(tmp), SynthConfig(seed=0))
        return read_corpus(Path(tmp))


def cache_key(corpus: Corpus, config: TinyConfig, seed: int) -> str:
    """First 16 hex digits of SHA-256 over (recipe version, config, seed, corpus digest)."""
    payload = json.dumps(
        {"recipe": RECIPE_VERSION, "config": asdict(config), "seed": seed, "corpus": corpus.digest()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_tokenizer(
    texts: list[str], vocab_size: int, model_max_length: int = 512
) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers, with the special tokens
    and the ChatML :data:`CHAT_TEMPLATE`. No bos/eos is added automatically; the template adds the markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _messages(prompt: str | list[dict[str, str]], answer: str) -> list[dict[str, str]]:
    head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return [*head, {"role": "assistant", "content": answer}]


def encode_pretraining_texts(
    tokenizer: PreTrainedTokenizerBase, pairs: list[CorpusPair], max_length: int
) -> list[list[int]]:
    """Token ids of the chat-formatted texts user ``prompt`` + assistant ``chosen`` and user ``prompt`` +
    assistant ``rejected`` of every pair, truncated to ``max_length``."""
    texts = [
        tokenizer.apply_chat_template(_messages(p.prompt, answer), tokenize=False)
        for p in pairs
        for answer in (p.chosen, p.rejected)
    ]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def build_model(tokenizer: PreTrainedTokenizerBase, config: TinyConfig, seed: int) -> LlamaForCausalLM:
    """A randomly initialised small ``LlamaForCausalLM`` (tied embeddings) for ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _lr_factor(step: int, config: TinyConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def packed_rows(sequences: list[list[int]], length: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless rows of exactly ``length`` token ids: each epoch concatenates the sequences in a seeded
    random order into one stream, which is cut into rows (the remainder carries over into the next
    epoch's stream). Packing leaves no padding, so every position of every step trains."""
    import torch

    stream: list[int] = []
    while True:
        for i in torch.randperm(len(sequences), generator=generator).tolist():
            stream.extend(sequences[i])
        while len(stream) >= length:
            yield stream[:length]
            stream = stream[length:]


def pretrain(
    model: LlamaForCausalLM,
    sequences: list[list[int]],
    config: TinyConfig,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Causal-LM pre-training (see the module docstring). Returns the loss of every step."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    rows = packed_rows(sequences, config.max_length, generator)
    losses: list[float] = []
    model.train()
    with step_progress("pre-training tiny model", config.steps, enabled=progress) as advance:
        for _ in range(config.steps):
            ids = torch.tensor([next(rows) for _ in range(config.batch_size)], dtype=torch.long)
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            advance(f"loss {losses[-1]:.3f}")
    model.eval()
    return losses


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_tiny(
    *,
    cache_dir: Path | None = None,
    corpus_dir: Path | None = None,
    seed: int = 0,
    config: TinyConfig | None = None,
    progress: bool = True,
) -> BaseModelInfo:
    """Build (or find in the cache) the ``tiny`` base model for a corpus; see the module docstring.

    Args:
        cache_dir: cache root (default :func:`~valuation.models.cache.default_cache_dir`).
        corpus_dir: a payoutsim corpus dir; ``None`` generates the default synthetic corpus (seed 0).
        seed: seeds the initial weights and the batch order.
        config: sizes and schedule (default :class:`TinyConfig`).
        progress: show rich progress on stderr.
    """
    import torch

    config = config or TinyConfig()
    with status("reading the corpus", enabled=progress):
        corpus = read_corpus(Path(corpus_dir)) if corpus_dir is not None else default_corpus()
    key = cache_key(corpus, config, seed)
    final_dir = models_dir(cache_dir) / f"tiny-{key}"
    manifest = read_manifest(final_dir)
    if manifest is not None:
        return info_from_manifest(final_dir, manifest)

    started, started_cpu = time.perf_counter(), time.process_time()
    with _torch_threads(config.num_threads), building_dir(final_dir) as tmp:
        with status("training the BPE tokenizer", enabled=progress):
            tokenizer = train_tokenizer(corpus.texts, config.vocab_size, config.max_position_embeddings)
            sequences = encode_pretraining_texts(tokenizer, corpus.train, config.max_length)
        model = build_model(tokenizer, config, seed)
        losses = pretrain(model, sequences, config, seed, progress=progress)
        with status("saving the tiny model", enabled=progress), torch.no_grad():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_manifest(
                tmp,
                name="tiny",
                preset="tiny",
                extra={
                    "recipe_version": RECIPE_VERSION,
                    "cache_key": key,
                    "seed": seed,
                    "tiny_config": asdict(config),
                    "corpus": {
                        "dir": None if corpus_dir is None else str(Path(corpus_dir).resolve()),
                        "default_synth_seed": 0 if corpus_dir is None else None,
                        "sha256": corpus.digest(),
                        "train_pairs": len(corpus.train),
                        "texts": len(corpus.texts),
                    },
                    "vocab_size": len(tokenizer),
                    "pretraining": {
                        "sequences": len(sequences),
                        "first_loss": losses[0] if losses else None,
                        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
                        "seconds": round(time.perf_counter() - started, 2),
                        "cpu_seconds": round(time.process_time() - started_cpu, 2),
                    },
                },
            )
    manifest = read_manifest(final_dir)
    assert manifest is not None, f"{final_dir} has no valid manifest after the build"
    return info_from_manifest(final_dir, manifest)
