"""The rich console every command prints with: user text is shown as written, never interpreted.

Names, cells and paths come from users' files. Printed through a plain `rich.console.Console`, a member
called ``[bold]x[/]`` would print as a bold ``x``, ``:thumbs_up:`` as an emoji, and ``\\x1b[31m`` or a NUL
would reach the terminal raw. `safe_console` returns a console with markup, emoji codes and highlighting
off, whose every string (printed text, table cells, titles, captions) passes through
`valuation.text.printable` first: control characters print as escapes (``\\x1b[31m``). Line breaks of
the program's own multi-line strings are kept; a name cannot hold one (names are checked at load).
Progress bars built on it must not use markup either (``TextColumn(..., markup=False)``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from valuation.text import printable


class SafeConsole(Console):
    """A rich `Console` that shows every string literally (see the module docstring)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Like `Console.render_str`, on ``text`` with its control characters escaped (but for ``\\n``),
        markup and emoji codes never interpreted."""
        safe = "\n".join(printable(line) for line in text.split("\n"))
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(safe, **kwargs)


def safe_console(*, stderr: bool = False, width: int | None = None) -> SafeConsole:
    """A `SafeConsole` on stdout (or stderr), `width` columns wide when given (else the terminal's)."""
    return SafeConsole(stderr=stderr, width=width, markup=False, emoji=False, highlight=False)
