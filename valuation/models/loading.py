"""Load a prepared base model for scoring, sampling or training; a small chat-completion helper.

torch and transformers are imported inside functions (`import torch` ≈ 1.5 s, `import transformers, peft`
≈ 4.8 s), so commands that never load a model do not pay for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from valuation.models.cache import BaseModelInfo
from valuation.models.devices import current_placement

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_base_model(
    info: BaseModelInfo, *, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (in eval mode) and its tokenizer, on the device of `valuation.models.devices.current_placement`.

    ``dtype`` defaults to the placement's dtype (``torch.float32`` on the CPU; training passes float32 for
    its master weights). Safetensors only, never ``trust_remote_code``. The tokenizer always has a pad
    token (the eos token when the dir defines none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    placement = current_placement()
    tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        info.path, dtype=dtype or placement.torch_dtype(), use_safetensors=True, trust_remote_code=False
    )
    if not placement.on_cpu:
        model.to(placement.device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class Completion:
    """A chat completion: the text, how many tokens it has and the decode speed."""

    text: str
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def complete_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 0.7,
    seed: int = 0,
) -> Completion:
    """Answer one user message with the tokenizer's chat template (greedy by default; seeded sampling
    with ``do_sample=True``). The text excludes the prompt and special tokens."""
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    torch.manual_seed(seed)
    kwargs = (
        {"do_sample": True, "temperature": temperature, "top_k": 0} if do_sample else {"do_sample": False}
    )
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs
        )
    seconds = time.perf_counter() - start
    new = out[0, inputs["input_ids"].shape[1] :]
    return Completion(
        text=tokenizer.decode(new, skip_special_tokens=True).strip(), new_tokens=len(new), seconds=seconds
    )
