"""Light text perturbations that turn a source into a near-copy (the `duplicate` adversarial source).

Each perturbation keeps the meaning and the quality ordering of chosen vs rejected:
punctuation (a final '.' becomes '!', a comma is dropped), word swaps from a fixed synonym table, and
reordering of UNORDERED list items (numbered tips "1. … 2. …" are renumbered; "a, b and c" lists).
How-to steps ("First, … Then, …") are never reordered.
"""

from __future__ import annotations

import random
import re

_SWAPS: tuple[tuple[str, str], ...] = (
    ("Give", "Provide"),
    ("Explain", "Describe"),
    ("What is", "What's"),
    ("please", "kindly"),
    ("can't", "cannot"),
    ("won't", "will not"),
    ("I'd rather", "I would rather"),
    ("Here are", "These are"),
    ("so much", "very much"),
    ("usually", "often"),
    ("every day", "daily"),
    ("Then,", "Next,"),
    ("Finally,", "Lastly,"),
    ("really", "truly"),
    ("Try these:", "Some ideas:"),
    ("Simply put,", "In short,"),
    ("Sure.", "Sure!"),
    ("Easy.", "Easy!"),
)
_NUMBERED = re.compile(r"(\d+)\. (.*?)(?=\s\d+\. |$)")


def _final_bang(text: str, rng: random.Random) -> str:
    return text[:-1] + "!" if text.endswith(".") else text


def _drop_comma(text: str, rng: random.Random) -> str:
    spots = [m.start() for m in re.finditer(r"[A-Za-z], ", text)]
    if not spots:
        return text
    i = rng.choice(spots) + 1
    return text[:i] + text[i + 1 :]


def _swap_word(text: str, rng: random.Random) -> str:
    options = [(a, b) for a, b in _SWAPS if a in text]
    if not options:
        return text
    a, b = rng.choice(options)
    return text.replace(a, b, 1)


def _reorder_items(text: str, rng: random.Random) -> str:
    """Shuffle numbered items ("1. x 2. y") or an "a, b and c" list after a colon; else unchanged."""
    head = ""
    body = text
    if text.startswith(("Try these: ", "Some ideas: ")):
        head, body = text.split(": ", 1)
        head += ": "
    if body.startswith("1. "):
        items = [m.group(2) for m in _NUMBERED.finditer(body)]
        if len(items) < 2:
            return text
        order = items[:]
        while order == items:
            rng.shuffle(order)
        return head + " ".join(f"{i + 1}. {t}" for i, t in enumerate(order))
    m = re.fullmatch(r"(.*: )(.+)\.", text)
    if m and " and " in m.group(2):
        items = re.split(r", | and ", m.group(2))
        if len(items) < 2:
            return text
        order = items[:]
        while order == items:
            rng.shuffle(order)
        return m.group(1) + ", ".join(order[:-1]) + " and " + order[-1] + "."
    return text


PERTURBATIONS = (_final_bang, _drop_comma, _swap_word, _reorder_items)


def perturb_text(text: str, rng: random.Random) -> str:
    """Apply the first perturbation (in a random order) that changes `text`; unchanged if none applies."""
    for fn in rng.sample(PERTURBATIONS, len(PERTURBATIONS)):
        out = fn(text, rng)
        if out != text:
            return out
    return text


def perturb_pair(prompt: str, chosen: str, rejected: str, rng: random.Random) -> tuple[str, str, str]:
    """Perturb each field with probability ½, and at least one field, so the pair always changes.

    Falls back to swapping the prompt's final '?' for '.' when no perturbation applies anywhere.
    """
    fields = [prompt, chosen, rejected]
    picks = [rng.random() < 0.5 for _ in fields]
    out = [perturb_text(f, rng) if pick else f for f, pick in zip(fields, picks, strict=True)]
    for i in rng.sample(range(3), 3):
        if out != fields:
            break
        out[i] = perturb_text(fields[i], rng)
    if out == fields:
        out[0] = prompt[:-1] + "." if prompt.endswith("?") else prompt + "."
    return out[0], out[1], out[2]
