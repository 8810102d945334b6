"""Part (c)'s models: a preset's base model with random LoRA adapters behind one `MultiLoraModel`.

``tiny`` is a randomly initialised ``tiny``-preset Llama with a BPE tokenizer trained on the synthetic
corpus's eval texts; ``smollm2`` is SmolLM2-135M-Instruct from the model cache (skipped, with the reason,
when it is not prepared). The adapters are built in memory (`random_adapters`), no training. See
`benchmarks.parts.decoding` for what is measured on them.

torch is imported inside the functions: importing it takes ~1.5 s, which `python -m benchmarks --help` and
the parts that never touch torch should not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from valuation.composition.multilora import LoraAdapterWeights, MultiLoraModel
from valuation.models import TinyConfig, load_base_model, prepare_base_model
from valuation.models.cache import models_dir, read_manifest
from valuation.models.quiet import quiet_libraries
from valuation.models.tiny import build_model, train_tokenizer
from valuation.synth.generate import SynthConfig, generate_corpus

PRESETS = ("tiny", "smollm2")
N_ADAPTERS = 4
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
B_STD = 0.02


@dataclass
class Setup:
    """One preset ready to measure: model, tokenizer, the multi-adapter wrapper and prompts."""

    name: str
    model: Any
    tokenizer: Any
    multi: MultiLoraModel
    prompts: list[str]
    describe: str


def load_setup(name: str, seed: int, tiny_config: Any, *, prompts: int) -> Setup | str:
    """The preset's model with 4 random adapters, or a string saying why it was skipped."""
    corpus = generate_corpus(
        SynthConfig(seed=seed, pairs_per_source=1, eval_pairs_per_objective=max(prompts, 8), adversarial=())
    )
    pairs = list(corpus.eval["helpfulness"])
    prompt_texts = [p.prompt for p in pairs][:prompts]
    with quiet_libraries():
        if name == "tiny":
            config = tiny_config or TinyConfig()
            texts = [t for p in pairs for t in (p.prompt, p.chosen, p.rejected)]
            tokenizer = train_tokenizer(texts, config.vocab_size)
            model = build_model(tokenizer, config, seed)
            describe = (
                f"tiny (random init): hidden {config.hidden_size}, {config.num_layers} layers, "
                f"vocab {len(tokenizer)}"
            )
        elif name == "smollm2":
            try:
                path = models_dir(None) / "smollm2-135m-instruct"
                if read_manifest(path) is None:
                    return f"SmolLM2 is not prepared at {path} (run `payoutsim models prepare smollm2`)"
                model, tokenizer = load_base_model(prepare_base_model("smollm2", progress=False))
            except Exception as err:  # a missing model must not lose the tiny figures
                return f"SmolLM2 could not be loaded: {type(err).__name__}: {err}"
            describe = (
                f"SmolLM2-135M-Instruct fp32: hidden {model.config.hidden_size}, "
                f"{model.config.num_hidden_layers} layers, vocab {model.config.vocab_size}"
            )
        else:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    model.eval()
    multi = MultiLoraModel(model, random_adapters(model, N_ADAPTERS, seed), packed_gemm=True)  # as production
    describe += f"; decode steps' matmuls {'packed (valuation.composition.packed)' if multi.packed else 'F.linear'}"
    return Setup(name, model, tokenizer, multi, prompt_texts, describe)


def random_adapters(model: Any, n: int, seed: int) -> list[LoraAdapterWeights]:
    """``n`` in-memory LoRA adapters (r = LORA_RANK, α = LORA_ALPHA) on every ``LORA_TARGETS`` linear layer of
    ``model``: A ~ N(0, 1/in), B ~ N(0, B_STD²) from ``torch.Generator().manual_seed(seed·1000 + i)``."""
    import torch

    modules = {
        path: m
        for path, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and path.rsplit(".", 1)[-1] in LORA_TARGETS
    }
    out = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        a = {
            p: torch.randn(LORA_RANK, m.in_features, generator=gen) / m.in_features**0.5
            for p, m in modules.items()
        }
        b = {p: torch.randn(m.out_features, LORA_RANK, generator=gen) * B_STD for p, m in modules.items()}
        out.append(LoraAdapterWeights(f"a{i}", a, b, LORA_ALPHA / LORA_RANK))
    return out
