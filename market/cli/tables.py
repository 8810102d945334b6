"""The rich tables the market commands print: payouts, pool comparisons, the ledger's runs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from market.money import format_minor
from market.period import PeriodRun
from market.pooling import PoolComparison
from market.read_model import RunSummary
from market.recommend import EXHAUSTIVE_MAX_MEMBERS, PoolRecommendation


def payout_table(run: PeriodRun, *, title: str, caption: str | None = None) -> Table:
    """One period's payout table: member, value ± its standard error, share, amount and, when the payout's
    uncertainty is known (`market.uncertainty`), the amount's standard error and its interval; a ``held``
    row when the pool was held (``no_value = "hold"``: no member created value) and a total row equal to
    the pool (paid + held)."""
    pay = run.payout
    cur = pay.currency
    unc = run.uncertainty
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("member", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("std err", justify="right")
    table.add_column("share", justify="right")
    table.add_column(f"amount ({cur})", justify="right", no_wrap=True)
    if unc is not None:
        table.add_column("± std err", justify="right", no_wrap=True)
        table.add_column(f"{unc.level:.0%} interval", justify="right", no_wrap=True)
        lo, hi = unc.amount_interval()
        amount_se = unc.amount_se
    for i, member in enumerate(pay.members):
        cells = [
            member,
            f"{pay.values[i]:.6g}",
            f"{pay.std_errs[i]:.2g}",
            f"{100 * pay.shares[i]:.2f}%",
            format_minor(pay.amounts[i], cur),
        ]
        if unc is not None:
            cells += [format_minor(round(float(amount_se[i])), cur), f"{format_minor(int(lo[i]), cur)} – {format_minor(int(hi[i]), cur)}"]
        table.add_row(*cells)
    table.add_section()
    pad = ["", ""] if unc is not None else []
    if pay.held_minor:
        table.add_row("held: not paid out", "", "", "", format_minor(pay.held_minor, cur), *pad)
    share = "100.00%" if run.pool_minor and not pay.held_minor else ""
    table.add_row("total", "", "", share, format_minor(sum(pay.amounts) + pay.held_minor, cur), *pad)
    return table


def uncertainty_lines(run: PeriodRun) -> list[str]:
    """What the intervals of `payout_table` rest on, and the rank confidence of neighbours in the payout
    order: ``P(bob paid more than alice) = 0.97``; a pair whose order is below 0.95 either way is called
    unresolved. Empty without uncertainty."""
    unc = run.uncertainty
    if unc is None:
        return ["uncertainty: none (exact values of a coalition table without standard errors)"]
    pay = run.payout
    lines = [f"uncertainty: {unc.n_replicates} replicate payouts; {unc.kind}"]
    if unc.refused:
        lines.append(f"  negative = 'error' would have refused to pay in {unc.refused} of {unc.n_replicates} replicates")
    if unc.held:
        lines.append(f"  the pool would have been held in {unc.held} of {unc.n_replicates} replicates")
    order = sorted(range(len(pay.members)), key=lambda i: (-pay.amounts[i], pay.members[i]))
    paid = [i for i in order if pay.amounts[i] > 0 or unc.amounts[:, i].max() > 0]
    rank = unc.rank
    for a, b in itertools.pairwise(paid):
        p = float(rank[a, b])
        verdict = "resolved" if p >= 0.95 or p <= 0.05 else "NOT resolved"
        lines.append(f"  P({pay.members[a]} paid more than {pay.members[b]}) = {p:.2f} ({verdict})")
    return lines


def held_line(held_minor: int, currency: str) -> str:
    """The line printed under a payout table when the pool was held (``no_value = "hold"``)."""
    amount = format_minor(held_minor, currency)
    return (
        f"held: {amount} {currency} not paid out: no member created value ([market] no_value = \"hold\"); "
        f"paid 0 + held {amount} = the pool"
    )


def pool_table(comparison: PoolComparison) -> Table:
    """One row per compared structure: the value it creates and every member's payout, with the change
    from the grand pool in parentheses and who is better off than in the grand pool."""
    cur = comparison.currency
    members = comparison.members
    table = Table(
        title=f"{comparison.scenario} — period {comparison.period} — rule {comparison.rule} — pool "
        f"{format_minor(comparison.pool_minor, cur)} {cur}",
        title_justify="left",
    )
    table.add_column("structure", no_wrap=True)
    table.add_column("value created", justify="right")
    for m in members:
        table.add_column(m, justify="right", no_wrap=True)
    table.add_column("better off than in the grand pool")
    for s in comparison.structures:
        cells = []
        for m in members:
            cell = format_minor(s.payouts[m], cur)
            if s is not comparison.grand and s.delta[m]:
                cell += f" ({'+' if s.delta[m] > 0 else ''}{format_minor(s.delta[m], cur)})"
            cells.append(cell)
        better = ", ".join(s.better_off) if s is not comparison.grand else ""
        table.add_row(s.name, f"{s.value_created:.6g}", *cells, better or ("—" if s is not comparison.grand else ""))
    return table


def recommend_table(rec: PoolRecommendation) -> Table:
    """The recommended pool's members: marginal contribution, the rule's value, share and amount, and the
    core allocation's amount when one is given."""
    cur = rec.currency
    table = Table(title=f"the pool {'+'.join(rec.pool)} under rule {rec.rule}", title_justify="left")
    for col in ("member", "marginal v'(T) − v'(T∖i)", "value", "share", "amount"):
        table.add_column(col, justify="left" if col == "member" else "right", no_wrap=True)
    if rec.core_amounts is not None:
        table.add_column("core allocation", justify="right", no_wrap=True)
    marginal = dict(rec.marginals)
    for i, m in enumerate(rec.pool):
        cells = [m, f"{marginal[m]:.6g}", f"{rec.payout.values[i]:.6g}", f"{rec.payout.shares[i]:.2%}",
                 format_minor(rec.payout.amounts[i], cur)]
        if rec.core_amounts is not None:
            cells.append(format_minor(rec.core_amounts[i], cur))
        table.add_row(*cells)
    return table


def recommend_lines(rec: PoolRecommendation, *, head: bool) -> list[str]:
    """The words around `recommend_table`: before it (``head``) the pool, its value against the grand
    pool's, who is left out and why, its revenue; after it the stability verdict, the least-core ε and
    what it means, the core allocation and the notes."""
    cur = rec.currency
    if head:
        ratio = f" (×{rec.value / rec.grand_value:.3g})" if rec.grand_value > 0 else ""
        lines = [
            f"{rec.scenario} — period {rec.period} — rule {rec.rule} — recommended pool: {'+'.join(rec.pool)} "
            f"({len(rec.pool)} of {len(rec.members)} members; {rec.how})",
            f"value created: {rec.value:.6g} by the pool vs {rec.grand_value:.6g} by the grand pool{ratio}",
        ]
        if rec.left_out:
            why = ", ".join(f"{m} (adding them changes the value by {d:+.6g})" for m, d in rec.left_out)
            lines.append(f"left out: {why}")
        else:
            lines.append("left out: nobody (the grand pool creates the most value)")
        lines.append(f"revenue of the pool: {format_minor(rec.revenue_minor, cur)} {cur} (the grand pool's pot "
                     f"{format_minor(rec.pool_minor, cur)} {cur} × value created / the grand pool's)")
        return lines
    lines = [f"stability of the {rec.rule} payout on this pool: {rec.stability.verdict()}"]
    bound = "" if rec.epsilon_exact else " (a lower bound: constraint generation did not converge)"
    meaning = {True: "the core is non-empty: a stable split exists",
               False: "the core is empty: no split is stable (a subsidy of ε per coalition would make one)",
               None: "unknown whether the core is empty"}[rec.core_nonempty]
    share = f" ({rec.epsilon / rec.value:.2%} of the pool's value)" if rec.value > 0 else ""
    lines.append(f"least-core ε of the pool's game: {rec.epsilon:.6g}{share}{bound} → {meaning}")
    if rec.core_nonempty is False:
        lines.append(f"alone, the pool's members would create {rec.alone_value:.6g} in total (the pool: {rec.value:.6g})")
    if rec.core_amounts is not None:
        split = ", ".join(f"{m} {format_minor(a, cur)}" for m, a in zip(rec.pool, rec.core_amounts, strict=True))
        lines.append(f"a stable split (least-core payoff, in the core): {split} {cur}")
    lines.extend(f"note: {n}" for n in rec.notes)
    alt = rec.stable_alternative
    if rec.core_nonempty is False:
        if alt is None and len(rec.members) > EXHAUSTIVE_MAX_MEMBERS:
            lines.append(f"a stable alternative pool is looked for only up to {EXHAUSTIVE_MAX_MEMBERS} members (every "
                         "pool, in decreasing value): not here")
        elif alt is None:
            lines.append("no pool with a non-empty core creates value (among those examined)")
        else:
            split = alt.core_amounts if alt.core_amounts is not None else alt.payout.amounts
            how = "least-core payoff" if alt.core_amounts is not None else f"the {alt.rule} payout, in the core"
            paid = ", ".join(f"{m} {format_minor(a, cur)}" for m, a in zip(alt.pool, split, strict=True))
            lines.append(
                f"the most valuable STABLE pool: {'+'.join(alt.pool)} — value {alt.value:.6g} "
                f"({alt.value / rec.value:.1%} of the recommended pool's), revenue "
                f"{format_minor(alt.revenue_minor, cur)} {cur}; a stable split ({how}): {paid} {cur}"
            )
    return lines


def runs_table(ledger: Path, runs: Sequence[RunSummary]) -> Table:
    """The ledger's runs: seq, run id, creation time, scenario, period, rule, pool, stable."""
    table = Table(title=f"{ledger}: {len(runs)} run(s)", title_justify="left")
    for col in ("seq", "run_id", "created (UTC)", "scenario", "period", "rule", "pool", "stable"):
        table.add_column(col, no_wrap=True)
    for r in runs:
        table.add_row(
            str(r.seq),
            r.run_id,
            r.created_at,
            r.scenario,
            r.period,
            r.rule,
            f"{format_minor(r.pool_minor, r.currency)} {r.currency}",
            {True: "yes", False: "no", None: "?"}[r.stable],
        )
    return table


def run_payouts_table(run_id: str, rows: Sequence[Mapping[str, Any]], pool_minor: int | None = None) -> Table:
    """One run's payout rows (`market.ledger.run_payouts`): member, value, share, amount, currency; given
    the run's `pool_minor`, a ``held`` row when the payouts sum to less (``no_value = "hold"``)."""
    table = Table(title=f"run {run_id}", title_justify="left")
    for col in ("member", "value", "share", "amount", "currency"):
        table.add_column(col, justify="left" if col in ("member", "currency") else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["member"], f"{r['value']:.6g}", f"{100 * r['share']:.2f}%",
            format_minor(r["amount_minor"], r["currency"]), r["currency"],
        )
    held = 0 if pool_minor is None or not rows else pool_minor - sum(int(r["amount_minor"]) for r in rows)
    if held:
        cur = rows[0]["currency"]
        table.add_section()
        table.add_row("held: not paid out", "", "", format_minor(held, cur), cur)
    return table
