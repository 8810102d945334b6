"""Rich tables the market commands share."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from market.money import format_minor


def payout_table(run: Any, *, title: str, caption: str | None = None) -> Table:
    """One period's payout table: member, value, std err, share, amount, and a total row equal to the pool.

    Args:
        run: a `market.rules.PeriodRun`.
    """
    pay = run.payout
    cur = pay.currency
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("member", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("std err", justify="right")
    table.add_column("share", justify="right")
    table.add_column(f"amount ({cur})", justify="right", no_wrap=True)
    for i, member in enumerate(pay.members):
        table.add_row(
            member,
            f"{pay.values[i]:.6g}",
            f"{pay.std_errs[i]:.2g}",
            f"{100 * pay.shares[i]:.2f}%",
            format_minor(pay.amounts[i], cur),
        )
    table.add_section()
    table.add_row("total", "", "", "100.00%" if run.pool_minor else "", format_minor(sum(pay.amounts), cur))
    return table
