"""Helpful and harmful items of the synthetic market corpus, drawn from the text templates.

Two item types are built here, both pure functions of a `random.Random`; their texts come from the TOML
files in ``valuation/synth/templates/`` (:mod:`valuation.synth.template_files`), this module holds only
how slots are drawn and filled:

* `HelpfulItem` — a benign instruction (tips, definitions, translation, arithmetic, lists, unit
  conversion, opposites, capitals, how-to steps, thank-you notes) with several correct, specific
  answers (`goods`), one correct but minimal answer (`terse`) and vague or wrong answers (`bads`).
  Bad answers are never refusal-like and never rude, so helpful data carries no harmlessness signal.
* `SafetyItem` — a harmful request (insult, threat, cheating, account break-in, rumour, mockery,
  shoplifting, a money scam, a hateful message) with a polite `refusal` that offers a safe
  alternative and a rude `compliance` that uses mild insults / profanity ("idiot", "stupid", "damn",
  "shut up") so that `profanity_check.predict_prob` scores it high.

Every item has a `key`: the family and its slot values WITHOUT the phrasing frame of the prompt. The
held-out split is a fixed hash partition of keys (`is_eval_key`), so an evaluation prompt is a
different instance (not a re-phrasing) of the training styles, for every seed.

Texts are short: prompts ≤ 25 words, answers ≤ 50 words (`MAX_PROMPT_WORDS`, `MAX_ANSWER_WORDS`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from valuation.synth.template_files import load_template

MAX_PROMPT_WORDS = 25
MAX_ANSWER_WORDS = 50
EVAL_KEY_FRACTION = 0.25
"""Share of the instance space (by key hash) reserved for the held-out evaluation sets."""


@dataclass(frozen=True)
class HelpfulItem:
    """A benign instruction with graded answers. `goods` has ≥ 2 distinct correct answers."""

    family: str
    key: str
    prompt: str
    goods: tuple[str, ...]
    terse: str
    bads: tuple[str, ...]


@dataclass(frozen=True)
class SafetyItem:
    """A harmful request with a polite refusal (safe alternative) and a rude harmful compliance."""

    category: str
    key: str
    prompt: str
    refusal: str
    compliance: str


def is_eval_key(key: str) -> bool:
    """True when the instance `key` belongs to the held-out evaluation partition.

    Rule: the first 16 bits of sha256(key) / 65536 < EVAL_KEY_FRACTION. Independent of the seed.
    """
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big")
    return h / 65536 < EVAL_KEY_FRACTION


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _low(text: str) -> str:
    return text[:1].lower() + text[1:]


def _join_and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _numbered(items: list[str]) -> str:
    return " ".join(f"{i + 1}. {t}" for i, t in enumerate(items))


def _counts(template: dict[str, Any]) -> dict[int, str]:
    """A template's `counts` table ({"2": "two", …}) with integer keys, in file order."""
    return {int(n): word for n, word in template["counts"].items()}


# ---------------------------------------------------------------------------------------------------
# Helpful families: each draws its slots (in a fixed order of rng calls), then `_helpful` fills the
# family's `good`, `terse`, `bad` and (last draw) `frames` patterns.
# ---------------------------------------------------------------------------------------------------


def _helpful(
    family: str,
    key: str,
    template: dict[str, Any],
    slots: dict[str, Any],
    rng: random.Random,
    *,
    vague: str | None = None,
    frames: Sequence[str] | None = None,
) -> HelpfulItem:
    """Fill the family's patterns with `slots` ({vague}: the chosen vague pattern, itself filled) and
    draw the prompt's frame (from `frames`, default the template's `frames`)."""
    fill = {**slots, "vague": vague.format(**slots)} if vague is not None else slots
    goods = tuple(p.format(**fill) for p in template["good"])
    bads = tuple(p.format(**fill) for p in template["bad"])
    prompt = rng.choice(frames if frames is not None else template["frames"]).format(**fill)
    return HelpfulItem(family, key, prompt, goods, template["terse"].format(**fill), bads)


def _tips(rng: random.Random) -> HelpfulItem:
    t = load_template("tips")
    topics = t["topics"]
    counts = _counts(t)
    topic = rng.choice(sorted(topics))
    n = rng.choice(tuple(counts))
    tips = topics[topic]
    first = rng.sample(tips, n)
    second = rng.sample(tips, n)
    while second == first:
        second = rng.sample(tips, n)
    other = rng.choice([x for x in sorted(topics) if x != topic])
    wrong = rng.sample(topics[other], n)
    slots = {
        "topic": topic,
        "n": counts[n],
        "first": _numbered(first),
        "second": _numbered(second),
        "wrong": _numbered(wrong),
        "tip": first[0],
    }
    return _helpful("tips", f"tips|{topic}|{n}", t, slots, rng, vague=rng.choice(t["vague"]))


def _define(rng: random.Random) -> HelpfulItem:
    t = load_template("define")
    terms = t["terms"]
    term = rng.choice(sorted(terms))
    definition, detail = terms[term]
    other = rng.choice([x for x in sorted(terms) if x != term])
    slots = {
        "term": term,
        "Term": _cap(term),
        "definition": definition,
        "definition_lc": _low(definition),
        "detail": detail,
        "wrong": terms[other][0].split(" is ", 1)[1],
    }
    return _helpful("define", f"define|{term}", t, slots, rng, vague=rng.choice(t["vague"]))


def _translate(rng: random.Random) -> HelpfulItem:
    t = load_template("translate")
    phrases, languages = t["phrases"], t["languages"]
    phrase = rng.choice(sorted(phrases))
    li = rng.randrange(len(languages))
    lang = languages[li]
    right = phrases[phrase][li]
    wrong_lang = rng.choice([x for x in phrases[phrase] if x != right])
    other = rng.choice([p for p in sorted(phrases) if p != phrase])
    vague = rng.choice(t["vague"])
    slots = {
        "phrase": phrase,
        "Phrase": _cap(phrase),
        "language": lang,
        "translation": right,
        "wrong": rng.choice((wrong_lang, phrases[other][li])),
    }
    return _helpful("translate", f"translate|{phrase}|{lang}", t, slots, rng, vague=vague)


ARITHMETIC_OPERATIONS = ("plus", "minus", "times")
"""The operations of the arithmetic family; their number ranges are in `_arithmetic`, texts in the template."""


def _arithmetic(rng: random.Random) -> HelpfulItem:
    t = load_template("arithmetic")
    op = rng.choice(ARITHMETIC_OPERATIONS)
    if op == "times":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c = a * b
    elif op == "plus":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        c = a + b
    else:
        a = rng.randint(10, 99)
        b = rng.randint(1, a - 1)
        c = a - b
    w = c + rng.choice((-10, -2, -1, 1, 2, 10))
    operation = t["operations"][op]
    slots = {"a": a, "b": b, "c": c, "op": op, "symbol": operation["symbol"], "wrong": w}
    return _helpful(
        "arithmetic",
        f"arith|{op}|{a}|{b}",
        t,
        slots,
        rng,
        vague=rng.choice(t["vague"]),
        frames=operation["frames"],
    )


def _listing(rng: random.Random) -> HelpfulItem:
    t = load_template("list")
    categories = t["categories"]
    counts = _counts(t)
    cat = rng.choice(sorted(categories))
    n = rng.choice(tuple(counts))
    items = categories[cat]
    first = rng.sample(items, n)
    second = rng.sample(items, n)
    while sorted(second) == sorted(first):
        second = rng.sample(items, n)
    others = [x for c, xs in sorted(categories.items()) if c != cat for x in xs]
    wrong = rng.sample(others, n)
    slots = {
        "category": cat,
        "n": counts[n],
        "first": _join_and(first),
        "second": _join_and(second),
        "wrong": _join_and(wrong),
        "Item": _cap(first[0]),
    }
    return _helpful("list", f"list|{cat}|{n}", t, slots, rng, vague=rng.choice(t["vague"]))


def _units(rng: random.Random) -> HelpfulItem:
    t = load_template("units")
    conv = rng.choice(t["conversions"])
    n = rng.randint(2, 12)
    slots = {
        "n": n,
        "small": conv["small"],
        "big": conv["big"],
        "one": conv["one"],
        "factor": conv["factor"],
        "c": n * conv["factor"],
        "wrong": n * conv["wrong_factor"],
    }
    return _helpful("units", f"units|{conv['small']}|{conv['big']}|{n}", t, slots, rng)


def _opposite(rng: random.Random) -> HelpfulItem:
    t = load_template("opposite")
    words = t["words"]
    word = rng.choice(sorted(words))
    antonym, synonym = words[word]
    slots = {"word": word, "antonym": antonym, "synonym": synonym}
    return _helpful("opposite", f"opposite|{word}", t, slots, rng, vague=rng.choice(t["vague"]))


def _capital(rng: random.Random) -> HelpfulItem:
    t = load_template("capital")
    countries = t["countries"]
    country = rng.choice(sorted(countries))
    capital, guess = countries[country]
    slots = {"country": country, "capital": capital, "guess": guess}
    return _helpful("capital", f"capital|{country}", t, slots, rng)


def _steps(rng: random.Random) -> HelpfulItem:
    t = load_template("steps")
    tasks = t["tasks"]
    task = rng.choice(sorted(tasks))
    s1, s2, s3 = tasks[task]
    slots = {"task": task, "step1": s1, "step2": s2, "step3": s3, "Step1": _cap(s1)}
    return _helpful("steps", f"steps|{task}", t, slots, rng, vague=rng.choice(t["vague"]))


def _note(rng: random.Random) -> HelpfulItem:
    t = load_template("note")
    person = rng.choice(t["people"])
    gift = rng.choice(t["gifts"])
    slots = {"person": person, "gift": gift}
    return _helpful("note", f"note|{person}|{gift}", t, slots, rng, vague=rng.choice(t["vague"]))


HELPFUL_FAMILIES: dict[str, Callable[[random.Random], HelpfulItem]] = {
    "tips": _tips,
    "define": _define,
    "translate": _translate,
    "arithmetic": _arithmetic,
    "list": _listing,
    "units": _units,
    "opposite": _opposite,
    "capital": _capital,
    "steps": _steps,
    "note": _note,
}
"""Family name (= its template file's name) → the builder of one item of that family."""


def helpful_item(rng: random.Random) -> HelpfulItem:
    """One benign instruction from a uniformly chosen family."""
    family = rng.choice(sorted(HELPFUL_FAMILIES))
    return HELPFUL_FAMILIES[family](rng)


# ---------------------------------------------------------------------------------------------------
# Safety (harmful request) categories: the tables of templates/safety.toml
# ---------------------------------------------------------------------------------------------------


def safety_item(rng: random.Random) -> SafetyItem:
    """One harmful request from a uniformly chosen category, with a refusal and a rude compliance."""
    t = load_template("safety")
    categories = t["categories"]
    category = rng.choice(sorted(categories))
    cat = categories[category]
    person = rng.choice(t["people"])
    slot = rng.choice(cat["slots"])
    request = rng.choice(cat["requests"]).format(person=person, slot=slot)
    prompt = rng.choice(t["request_frames"]).format(Request=_cap(request), request=request)
    fill = {"person": person, "slot": slot, "Slot": _cap(slot)}
    compliance = rng.choice(cat["compliances"]).format(**fill)
    refusal = rng.choice(cat["refusals"]).format(**fill)
    uses_person = any("{person}" in r for r in cat["requests"])
    key = f"safety|{category}|{person if uses_person else '-'}|{slot}"
    return SafetyItem(category, key, prompt, refusal, compliance)
