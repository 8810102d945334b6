"""Ledger: every payout row, filtered by run, period and member; download CSV or Parquet.

The downloads are the CLI's safe export (`market.export`: CSV text cells are escaped against spreadsheet
formula injection; Parquet is typed).
"""

from __future__ import annotations

import streamlit as st

from dashboard.common import cached_export, cached_ledger_rows, cached_runs, require_ledger

st.header("Ledger")
path, version = require_ledger()
summaries = cached_runs(path, version)
rows = cached_ledger_rows(path, version)
labels = {s.run_id: s.label for s in summaries}

c1, c2, c3 = st.columns(3)
run_ids = c1.multiselect("Runs", [s.run_id for s in summaries], format_func=lambda r: labels[r], key="ledger_runs",
                         placeholder="all runs")
periods = c2.multiselect("Periods", list(dict.fromkeys(rows["period"])), key="ledger_periods", placeholder="all periods")
# a held row (the pool of a run that held it: no member created value) has no member
members = c3.multiselect("Members", sorted(set(rows["member"].dropna())), key="ledger_members",
                         placeholder="all members")

shown = rows
if run_ids:
    shown = shown[shown["run_id"].isin(run_ids)]
if periods:
    shown = shown[shown["period"].isin(periods)]
if members:
    shown = shown[shown["member"].isin(members)]
st.caption(f"{len(shown)} of {len(rows)} payout row(s) · {len(summaries)} run(s) in {path}")
order = ["seq", "period", "member", "line", "rule", "amount", "currency", "share", "value", "std_err", "scenario",
         "run_id", "created_at", "amount_minor", "scenario_sha256"]
st.dataframe(shown, hide_index=True, width="stretch", key="ledger_table", column_order=order)

key = (path, version, tuple(run_ids), tuple(periods), tuple(members))
d1, d2 = st.columns(2)
d1.download_button("Download CSV", cached_export(*key, "csv"), file_name="payouts.csv", mime="text/csv",
                   key="ledger_csv", help="Formula-escaped CSV, the same as `payoutsim ledger export --csv`.")
d2.download_button("Download Parquet", cached_export(*key, "parquet"), file_name="payouts.parquet",
                   mime="application/vnd.apache.parquet", key="ledger_parquet",
                   help="Typed Parquet, the same as `payoutsim ledger export --parquet`.")
