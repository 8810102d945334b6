"""Payouts: one run's split of the pool — value, share and amount per member; totals equal the pool."""

from __future__ import annotations

import streamlit as st

from dashboard import charts
from dashboard.common import amounts_frame, money, pick_run, require_ledger, verdict

st.header("Payouts")
path, version = require_ledger()
run = pick_run(path, version, "payouts_run")

cols = st.columns(4)
cols[0].metric("Pool (revenue − fee)", money(run.pool_minor, run.currency))
cols[1].metric("Revenue", money(run.revenue_minor, run.currency))
cols[2].metric("Platform fee", money(run.fee_minor, run.currency))
cols[3].metric("Rule", run.rule, help=f"negative values: {run.negative}")

frame = amounts_frame(run, run.amounts, run.shares, run.values, run.std_errs)
left, right = st.columns([3, 2])
with left:
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "value": st.column_config.NumberColumn(format="%.6g"),
            "std err": st.column_config.NumberColumn(format="%.2g"),
            "share %": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    total = sum(run.amounts)
    if run.held_minor and total == 0:
        st.caption(
            f"Nothing paid: the pool {money(run.pool_minor, run.currency)} is held (no member created value; "
            f"no_value = {run.no_value!r}). Paid 0 + held {money(run.held_minor, run.currency)} = the pool."
        )
    else:
        check = "equals" if total == run.pool_minor else "DOES NOT equal"
        st.caption(f"Total paid {money(total, run.currency)} {check} the pool {money(run.pool_minor, run.currency)}.")
with right:
    st.altair_chart(charts.payout_bars(frame, run.currency), width="stretch")

weights = ", ".join(f"{k} {v:g}" for k, v in sorted(run.weights.items()))
st.caption(f"Objective weights: {weights}. Scenario {run.scenario!r}, period {run.period!r}, run {run.run_id}.")
verdict(run.stability)
for w in run.warnings:
    st.warning(w)
