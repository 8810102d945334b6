"""The synthetic corpus's text templates: TOML files shipped in ``valuation/synth/templates/``.

One file per helpful family (``tips.toml``, ``define.toml``, …, named as in
:data:`valuation.synth.items.HELPFUL_FAMILIES`) and one for the harmful-request categories
(``safety.toml``). Each file's header comment says what it holds and what its ``str.format``
placeholders mean; the builders in :mod:`valuation.synth.items` fill them in. Editing a file changes the
generated corpus (and so every corpus checksum); the files ship in the wheel as package data.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from typing import Any

TEMPLATE_PACKAGE = "valuation.synth"
TEMPLATE_DIR = "templates"


@cache
def load_template(name: str) -> dict[str, Any]:
    """The parsed ``templates/<name>.toml`` (tables and arrays in file order), read once per process.

    The dict is shared between callers, who must not change it.
    """
    resource = files(TEMPLATE_PACKAGE) / TEMPLATE_DIR / f"{name}.toml"
    return tomllib.loads(resource.read_text(encoding="utf-8"))
