"""Payouts: one run's split of the pool — value, share and amount per member; totals equal the pool.

With the run's recorded uncertainty (`market.read_model.RunUncertainty`): each amount's std err and 95%
interval in the table, error bars in the chart, what was resampled, and the rank confidence — P(row
member paid more than column member), pairs not resolved (P between 0.05 and 0.95) outlined.

With more than `MANY_MEMBERS` members the table is sorted by amount (scrolling), the bars are sorted by
amount, the rank confidence shows the top `TOP_K` members and the unresolved pairs are counted, listed in
an expander.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.common import (
    MANY_MEMBERS,
    TABLE_HEIGHT,
    TOP_K,
    amounts_frame,
    interval_label,
    money,
    pick_run,
    rank_frame,
    require_ledger,
    top_members,
    verdict,
    with_intervals,
)
from market.read_model import RESOLVED

st.header("Payouts")
path, version = require_ledger()
run = pick_run(path, version, "payouts_run")
unc = run.uncertainty

cols = st.columns(4)
cols[0].metric("Pool (revenue − fee)", money(run.pool_minor, run.currency))
cols[1].metric("Revenue", money(run.revenue_minor, run.currency))
cols[2].metric("Platform fee", money(run.fee_minor, run.currency))
cols[3].metric("Rule", run.rule, help=f"negative values: {run.negative}")

frame = with_intervals(run, amounts_frame(run, run.amounts, run.shares, run.values, run.std_errs))
many = run.n > MANY_MEMBERS
if many:
    frame = frame.sort_values("amount_minor", ascending=False, kind="stable")
interval = interval_label(unc) if unc is not None else None
# without uncertainty: table and chart side by side; with it the table is wider (± std err, interval), so it
# takes the whole width and the chart shares a row with the rank confidence below
left, right = st.columns([3, 2]) if unc is None else (st.container(), None)
with left:
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        height=TABLE_HEIGHT if many else "auto",
        column_config={
            "value": st.column_config.NumberColumn(format="%.6g"),
            "std err": st.column_config.NumberColumn(format="%.2g", help="the value's standard error"),
            "share %": st.column_config.NumberColumn(format="%.2f"),
            "± std err": st.column_config.TextColumn(help=f"the amount's standard error ({run.currency})"),
            "amount_lo_minor": None,
            "amount_hi_minor": None,
        },
    )
    if many:
        st.caption(f"{run.n} members, sorted by amount (scroll for all; click a header to sort).")
    total = sum(run.amounts)
    if run.held_minor and total == 0:
        st.caption(
            f"Nothing paid: the pool {money(run.pool_minor, run.currency)} is held (no member created value; "
            f"no_value = {run.no_value!r}). Paid 0 + held {money(run.held_minor, run.currency)} = the pool."
        )
    else:
        check = "equals" if total == run.pool_minor else "DOES NOT equal"
        st.caption(f"Total paid {money(total, run.currency)} {check} the pool {money(run.pool_minor, run.currency)}.")
    if unc is None:
        st.caption(
            "No uncertainty recorded for this run (a coalition table without standard errors or eval items, "
            "or a ledger written before uncertainty was recorded): the amounts are shown as exact."
        )
    else:
        st.caption(
            f"Uncertainty: {unc.describe()}. Each replicate recomputes the values, the negative-value policy, "
            f"the shares and the rounding to minor units; the error bars are the amounts' {interval}s."
        )
if right is not None:
    with right:
        st.altair_chart(charts.payout_bars(frame, run.currency, by_amount=many), width="stretch")
else:
    chart, ranks_col = st.columns([1, 1])
    chart.altair_chart(charts.payout_bars(frame, run.currency, interval, by_amount=many), width="stretch")

weights = ", ".join(f"{k} {v:g}" for k, v in sorted(run.weights.items()))
st.caption(f"Objective weights: {weights}. Scenario {run.scenario!r}, period {run.period!r}, run {run.run_id}.")
verdict(run.stability)
for w in run.warnings:
    st.warning(w)

if unc is not None and run.n > 1:
    with ranks_col:
        st.subheader("Rank confidence", help="P(row member is paid more than column member) over the replicates")
        ranks = rank_frame(run)
        shown = top_members(run.members, run.amounts) if many else list(run.members)
        if many:
            ranks = ranks[ranks["member"].isin(shown) & ranks["other"].isin(shown)]
            st.caption(f"The {TOP_K} members paid most (of {run.n}), highest first.")
        st.altair_chart(charts.rank_heatmap(ranks, shown), width="content")
        unresolved = unc.unresolved(run.members)
        lo, hi = 1 - RESOLVED, RESOLVED
        texts = [f"{a} and {b}: P({a if p >= 0.5 else b} paid more) = {max(p, 1 - p):.2f}" for a, b, p in unresolved]
        if unresolved and many:
            st.warning(f"Not resolved (P between {lo:.2f} and {hi:.2f}): {len(unresolved)} pair(s) of members.")
            with st.expander(f"All {len(unresolved)} unresolved pairs"):
                st.dataframe(
                    pd.DataFrame({"pair": texts}), hide_index=True, width="stretch", key="payouts_unresolved"
                )
        elif unresolved:
            st.warning(f"Not resolved (P between {lo:.2f} and {hi:.2f}, outlined, '?'): {'; '.join(texts)}.")
        else:
            st.caption(f"Every pair's order is resolved (P ≤ {lo:.2f} or ≥ {hi:.2f}).")
        tied = sorted({" and ".join(sorted((r.member, r.other))) for r in ranks.itertuples() if r.pair == "tied"})
        tie_note = f" Paid the same in every replicate: {', '.join(tied)}." if tied else ""
        if many and tied:
            tie_note = f" {len(tied)} pair(s) were paid the same in every replicate (ties)."
        st.caption(
            f"Each cell: the share of the {unc.replicates} replicate payouts in which the row member is paid more "
            f"than the column member (ties count half).{tie_note}"
        )
