"""Record formats: detection from a record's keys, and one parser per format.

Every parser turns one raw record (a dict read from JSON / CSV / Parquet / a HF dataset) into a
:class:`ParsedRecord` ``(prompt, chosen, rejected, labels)`` or raises ``InputError`` naming the file,
the record's location and the offending field.

Formats (``FORMATS``; ``auto`` detects from the first record, ``hf-dataset`` names the container, its
records are detected like ``auto``):

- ``columns``: ``prompt`` (text or chat messages), ``chosen``, ``rejected`` (text), optional ``source``.
- ``ultrafeedback`` (UltraFeedback-binarized style): ``chosen`` / ``rejected`` are message lists
  ``[{"role": "user", ...}, {"role": "assistant", ...}]``; the response is the final assistant message,
  the prompt the shared message prefix (or the ``prompt`` text when the prefix is empty).
- ``hh-rlhf``: ``chosen`` / ``rejected`` are full dialogues ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``; the
  prompt is everything up to the last ``"\\n\\nAssistant:"`` (as chat messages), the response what follows
  (stripped). Two repairs for real data, each reported as a finding: if the two dialogues diverge before
  their last Assistant turn, the prompt is the longest shared prefix ending at an Assistant turn of both
  (``hh-prefix``; no such turn -> error); an empty final Assistant turn is kept as an empty response
  (``empty-turn``; in HH-RLHF it is a labelled outcome: the assistant said nothing).
- ``sharegpt`` (ShareGPT-preference): ``conversations`` ``[{"from": "system"|"human"|"gpt", "value"}]``,
  ``chosen`` / ``rejected`` ``{"from": "gpt", "value": str}``; prompt = the conversation as chat messages.

Optional labels in every format: a ``labels`` object ``{objective: number}`` and/or flat
``label_<objective>`` columns (numbers; in CSV, numeric text; an empty cell means no label).

Checks common to all formats: the prompt and both responses are non-empty (except the HH-RLHF empty
turn above) and chosen differs from rejected (compared after stripping surrounding whitespace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from valuation.errors import InputError, field_path
from valuation.sources.schema import ROLES, Prompt

FORMATS = ("auto", "columns", "ultrafeedback", "hh-rlhf", "sharegpt", "hf-dataset")
RECORD_FORMATS = ("columns", "ultrafeedback", "hh-rlhf", "sharegpt")

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass(frozen=True)
class RecordContext:
    """Where a record was read: ``file`` (for messages), ``location`` (``"line 7"``, ``"row 3"``, …) and
    whether cells are untyped text (CSV), so labels are parsed from text."""

    file: str
    location: str
    text_cells: bool = False

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, file=self.file, row=self.location, field=field)


@dataclass
class ParsedRecord:
    prompt: Prompt
    chosen: str
    rejected: str
    labels: dict[str, float] | None = None
    findings: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)


def check_format(fmt: str, file: str | None = None) -> str:
    """Return ``fmt`` if it is one of ``FORMATS``, else raise ``InputError`` listing them."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}", file=file, field="format")
    return fmt


def detect_format(record: Mapping[str, Any], ctx: RecordContext) -> str:
    """The record format of ``record`` from its keys (see the module docstring)."""
    if "conversations" in record:
        return "sharegpt"
    if isinstance(record.get("chosen"), list):
        return "ultrafeedback"
    if "prompt" in record:
        return "columns"
    if "chosen" in record and "rejected" in record:
        return "hh-rlhf"
    keys = ", ".join(repr(k) for k in record) or "none"
    raise ctx.error(
        f"cannot detect the record format from its keys ({keys}); expected columns (prompt, chosen, "
        "rejected), ultrafeedback (chosen/rejected message lists), hh-rlhf (chosen/rejected dialogues) or "
        "sharegpt (conversations, chosen, rejected); or pass --format"
    )


def parse_record(fmt: str, record: Mapping[str, Any], ctx: RecordContext) -> ParsedRecord:
    """Parse one record in record format ``fmt`` (one of ``RECORD_FORMATS``) and check it."""
    if not isinstance(record, Mapping):
        raise ctx.error(f"expected an object (a record with named fields), got {_type_name(record)}")
    parsed = _PARSERS[fmt](record, ctx)
    parsed.labels = _labels(record, ctx)
    return parsed


# ---------------------------------------------------------------- helpers


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _get(record: Mapping[str, Any], key: str, ctx: RecordContext) -> Any:
    if key not in record:
        raise ctx.error("missing field", field=key)
    return record[key]


def _text(value: Any, ctx: RecordContext, name: str, *, what: str = "text", allow_empty: bool = False) -> str:
    """``value`` as text; CSV nulls read as empty text. Raises on a wrong type or (unless allowed) blank text."""
    if value is None and ctx.text_cells:
        value = ""
    if not isinstance(value, str):
        raise ctx.error(f"expected {what} (a string), got {_type_name(value)}", field=name)
    if not allow_empty and not value.strip():
        raise ctx.error(f"empty {what}", field=name)
    return value


def _messages(value: Any, ctx: RecordContext, name: str) -> list[dict[str, str]]:
    """A chat message list ``[{"role": one of ROLES, "content": str}, ...]``, validated."""
    if not isinstance(value, list | tuple):
        raise ctx.error(f"expected a list of chat messages, got {_type_name(value)}", field=name)
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        where = field_path((name, i))
        if not isinstance(msg, Mapping):
            raise ctx.error(f"expected a message object {{role, content}}, got {_type_name(msg)}", field=where)
        if "role" not in msg:
            raise ctx.error("missing field", field=f"{where}.role")
        role = msg["role"]
        if role not in ROLES:
            raise ctx.error(f"unknown role {role!r}; roles: {', '.join(ROLES)}", field=f"{where}.role")
        if "content" not in msg:
            raise ctx.error("missing field", field=f"{where}.content")
        content = _text(msg["content"], ctx, f"{where}.content", what="message content", allow_empty=True)
        out.append({"role": str(role), "content": content})
    return out


def _check_prompt(prompt: Prompt, ctx: RecordContext, name: str) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ctx.error("empty prompt", field=name)
    elif not any(m["content"].strip() for m in prompt):
        raise ctx.error("empty prompt (no message has content)", field=name)


def _check_pair(
    prompt: Prompt, chosen: str, rejected: str, ctx: RecordContext, *, prompt_field: str,
    chosen_field: str = "chosen", rejected_field: str = "rejected", allow_empty_responses: bool = False,
) -> None:
    _check_prompt(prompt, ctx, prompt_field)
    if not allow_empty_responses:
        if not chosen.strip():
            raise ctx.error("empty response", field=chosen_field)
        if not rejected.strip():
            raise ctx.error("empty response", field=rejected_field)
    if chosen.strip() == rejected.strip():
        raise ctx.error("chosen and rejected responses are identical", field=rejected_field)


def _number(value: Any, ctx: RecordContext, name: str) -> float | None:
    """A label value: a finite number; CSV text is parsed, an empty cell / null means no label."""
    if value is None:
        return None
    if ctx.text_cells and isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = float(value)
        except ValueError:
            raise ctx.error(f"expected a number, got {value!r}", field=name) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.error(f"expected a number, got {_type_name(value)}", field=name)
    if not math.isfinite(value):
        raise ctx.error(f"expected a finite number, got {value!r}", field=name)
    return float(value)


def _labels(record: Mapping[str, Any], ctx: RecordContext) -> dict[str, float] | None:
    labels: dict[str, float] = {}
    if record.get("labels") is not None:
        raw = record["labels"]
        if not isinstance(raw, Mapping):
            raise ctx.error(f"expected an object {{objective: number}}, got {_type_name(raw)}", field="labels")
        for key, value in raw.items():
            number = _number(value, ctx, f"labels.{key}")
            if number is not None:
                labels[str(key)] = number
    for key, value in record.items():
        if isinstance(key, str) and key.startswith("label_") and len(key) > len("label_"):
            number = _number(value, ctx, key)
            if number is not None:
                labels[key[len("label_"):]] = number
    return labels or None


# ---------------------------------------------------------------- parsers


def _parse_columns(record: Mapping[str, Any], ctx: RecordContext) -> ParsedRecord:
    raw_prompt = _get(record, "prompt", ctx)
    prompt: Prompt
    if isinstance(raw_prompt, list | tuple):
        prompt = _messages(raw_prompt, ctx, "prompt")
    else:
        prompt = _text(raw_prompt, ctx, "prompt", what="prompt")
    chosen = _text(_get(record, "chosen", ctx), ctx, "chosen", what="response")
    rejected = _text(_get(record, "rejected", ctx), ctx, "rejected", what="response")
    _check_pair(prompt, chosen, rejected, ctx, prompt_field="prompt")
    return ParsedRecord(prompt, chosen, rejected)


def _parse_ultrafeedback(record: Mapping[str, Any], ctx: RecordContext) -> ParsedRecord:
    sides: dict[str, list[dict[str, str]]] = {}
    for side in ("chosen", "rejected"):
        messages = _messages(_get(record, side, ctx), ctx, side)
        if not messages:
            raise ctx.error("empty message list", field=side)
        if messages[-1]["role"] != "assistant":
            raise ctx.error(
                f"the last message must be the assistant's response, got role {messages[-1]['role']!r}",
                field=field_path((side, len(messages) - 1, "role")),
            )
        sides[side] = messages
    prefix = sides["chosen"][:-1]
    if prefix != sides["rejected"][:-1]:
        raise ctx.error("chosen and rejected do not share the same prompt messages", field="rejected")
    prompt: Prompt = prefix
    prompt_field = "chosen"
    if not prefix:
        text = _text(_get(record, "prompt", ctx), ctx, "prompt", what="prompt")
        prompt = [{"role": "user", "content": text}]
        prompt_field = "prompt"
    chosen = sides["chosen"][-1]["content"]
    rejected = sides["rejected"][-1]["content"]
    n_c, n_r = len(sides["chosen"]) - 1, len(sides["rejected"]) - 1
    _check_pair(prompt, chosen, rejected, ctx, prompt_field=prompt_field,
                chosen_field=field_path(("chosen", n_c, "content")), rejected_field=field_path(("rejected", n_r, "content")))
    return ParsedRecord(prompt, chosen, rejected)


def _dialogue_messages(text: str, ctx: RecordContext, name: str) -> list[dict[str, str]]:
    """Split an HH-RLHF dialogue prefix ``"\\n\\nHuman: a\\n\\nAssistant: b…"`` into chat messages."""
    if not text.strip():
        raise ctx.error("empty prompt (nothing before the first Assistant turn)", field=name)
    if text.startswith("Human:"):
        text = "\n\n" + text
    messages: list[dict[str, str]] = []
    markers = ((HUMAN, "user"), (ASSISTANT, "assistant"))
    first = min((i for i in (text.find(HUMAN), text.find(ASSISTANT)) if i >= 0), default=-1)
    if first < 0 or text[:first].strip():
        raise ctx.error(f"a dialogue must start with {HUMAN.strip()!r}", field=name)
    pos = first
    while pos < len(text):
        marker, role = next((m, r) for m, r in markers if text.startswith(m, pos))
        start = pos + len(marker)
        following = [i for i in (text.find(HUMAN, start), text.find(ASSISTANT, start)) if i >= 0]
        end = min(following, default=len(text))
        messages.append({"role": role, "content": text[start:end].strip()})
        pos = end
    return messages


def _parse_hh(record: Mapping[str, Any], ctx: RecordContext) -> ParsedRecord:
    chosen_d = _text(_get(record, "chosen", ctx), ctx, "chosen", what="dialogue")
    rejected_d = _text(_get(record, "rejected", ctx), ctx, "rejected", what="dialogue")
    findings: list[tuple[str, str]] = []
    for side, dialogue in (("chosen", chosen_d), ("rejected", rejected_d)):
        if ASSISTANT not in dialogue:
            raise ctx.error(f"no {ASSISTANT.strip()!r} turn in the dialogue", field=side)
    cut = chosen_d.rfind(ASSISTANT)
    if cut != rejected_d.rfind(ASSISTANT) or chosen_d[:cut] != rejected_d[:cut]:
        # Real data: the dialogues diverge earlier. Use the last Assistant marker inside the shared prefix.
        shared = next((i for i, (a, b) in enumerate(zip(chosen_d, rejected_d, strict=False)) if a != b),
                      min(len(chosen_d), len(rejected_d)))
        cut = chosen_d.rfind(ASSISTANT, 0, shared)
        if cut < 0:
            raise ctx.error(
                f"chosen and rejected dialogues do not share a prompt (they differ before the first "
                f"{ASSISTANT.strip()!r} turn)", field="rejected",
            )
        findings.append((
            "hh-prefix",
            "chosen and rejected dialogues differ before their last Assistant turn; the prompt is their "
            "shared prefix up to the last common Assistant turn, later turns stay in the response",
        ))
    prompt = _dialogue_messages(chosen_d[:cut], ctx, "chosen")
    chosen = chosen_d[cut + len(ASSISTANT):].strip()
    rejected = rejected_d[cut + len(ASSISTANT):].strip()
    for side, response in (("chosen", chosen), ("rejected", rejected)):
        if not response:
            findings.append(("empty-turn", f"the final Assistant turn of '{side}' is empty; kept as an empty response"))
    _check_pair(prompt, chosen, rejected, ctx, prompt_field="chosen", allow_empty_responses=True)
    return ParsedRecord(prompt, chosen, rejected, findings=findings)


def _sharegpt_turn(value: Any, ctx: RecordContext, name: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ctx.error(f"expected a turn object {{from, value}}, got {_type_name(value)}", field=name)
    if "from" not in value:
        raise ctx.error("missing field", field=f"{name}.from")
    who = value["from"]
    if who not in SHAREGPT_ROLES:
        raise ctx.error(f"unknown speaker {who!r}; speakers: system, human, gpt", field=f"{name}.from")
    if "value" not in value:
        raise ctx.error("missing field", field=f"{name}.value")
    content = _text(value["value"], ctx, f"{name}.value", what="message content", allow_empty=True)
    return {"role": SHAREGPT_ROLES[who], "content": content}


def _parse_sharegpt(record: Mapping[str, Any], ctx: RecordContext) -> ParsedRecord:
    turns = _get(record, "conversations", ctx)
    if not isinstance(turns, list | tuple):
        raise ctx.error(f"expected a list of turns, got {_type_name(turns)}", field="conversations")
    prompt = [_sharegpt_turn(t, ctx, field_path(("conversations", i))) for i, t in enumerate(turns)]
    if not prompt:
        raise ctx.error("empty prompt (no turns)", field="conversations")
    if prompt[-1]["role"] != "user":
        raise ctx.error("the last turn must be from 'human' (the responses answer it)",
                        field=field_path(("conversations", len(prompt) - 1, "from")))
    responses: dict[str, str] = {}
    for side in ("chosen", "rejected"):
        turn = _sharegpt_turn(_get(record, side, ctx), ctx, side)
        if turn["role"] != "assistant":
            raise ctx.error("the response must be from 'gpt'", field=f"{side}.from")
        responses[side] = turn["content"]
    _check_pair(prompt, responses["chosen"], responses["rejected"], ctx, prompt_field="conversations",
                chosen_field="chosen.value", rejected_field="rejected.value")
    return ParsedRecord(prompt, responses["chosen"], responses["rejected"])


_PARSERS: dict[str, Callable[[Mapping[str, Any], RecordContext], ParsedRecord]] = {
    "columns": _parse_columns,
    "ultrafeedback": _parse_ultrafeedback,
    "hh-rlhf": _parse_hh,
    "sharegpt": _parse_sharegpt,
}
