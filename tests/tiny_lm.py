"""Small models for the tests, the one home of "a tiny model with random adapters": a tiny random Llama
(`tiny_llama`), a character tokenizer (`TinyTokenizer`) and three random peft LoRA adapters
(`write_random_adapters`; the session fixture `random_adapters` of conftest.py writes them once) for the
composition and decoding tests (`test_multilora_sampling`, `test_packed`, `test_importance`), and the smallest
`tiny` preset the pipeline tests build (`TINY_PRESET`, as a dict and as a ``[model.tiny]`` TOML table)."""

from __future__ import annotations

from pathlib import Path

import torch

#: The smallest ``tiny`` base-model preset the pipeline tests build (seconds, not minutes).
TINY_PRESET = {
    "vocab_size": 300,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "steps": 20,
    "batch_size": 16,
}
TINY_PRESET_TOML = "[model.tiny]\n" + "".join(f"{key} = {value}\n" for key, value in TINY_PRESET.items())


def tiny_model_toml(cache: object) -> str:
    """A ``[model]`` table with the smallest tiny preset (built into the model cache ``cache``) and a one-epoch
    ``[training]`` table: the fastest valuation config the pipeline tests use."""
    return (
        f'[model]\nbase = "tiny"\ncache_dir = "{cache}"\n{TINY_PRESET_TOML}'
        "[training]\nepochs = 1\nbatch_size = 8\nmax_length = 96\n"
    )


VOCAB = 96


class TinyTokenizer:
    """A minimal tokenizer: characters → ids 4.. (0 pad, 1 eos); no chat template."""

    pad_token_id = 0
    eos_token_id = 1
    eos_token = "<eos>"
    chat_template = None

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [4 + (ord(c) % (VOCAB - 4)) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + (i % 26)) for i in ids if i >= 4)


def tiny_llama(seed: int = 0):
    """A tiny random Llama (vocabulary `VOCAB`, 2 layers, hidden 32) initialised from ``seed``, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=1,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


ADAPTER_SPECS = [  # (r, alpha, targets, rslora)
    (4, 8, ["q_proj", "v_proj"], False),
    (8, 16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], False),
    (2, 4, ["down_proj", "o_proj"], True),
]


def write_random_adapters(root: Path) -> list[Path]:
    """Three peft LoRA adapter dirs under ``root`` with random (non-zero) A and B, different ranks and targets."""
    from peft import LoraConfig, get_peft_model

    dirs = []
    for i, (r, alpha, targets, rslora) in enumerate(ADAPTER_SPECS):
        torch.manual_seed(100 + i)
        peft_model = get_peft_model(
            tiny_llama(),
            LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, use_rslora=rslora),
        )
        with torch.no_grad():  # make the deltas large enough to matter
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(5.0)
        out = root / f"a{i}"
        peft_model.save_pretrained(out)
        dirs.append(out)
    return dirs
