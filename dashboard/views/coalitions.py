"""Coalitions: every coalition's utility per objective, and the marginal contributions behind a value."""

from __future__ import annotations

import streamlit as st

from dashboard import charts
from dashboard.common import cached_coalitions, cached_marginals, pick_run, require_ledger
from market.read_model import WEIGHTED

HEATMAP_MAX_MEMBERS = 6
BARS_MAX_MEMBERS = 5

st.header("Coalitions")
path, version = require_ledger()
run = pick_run(path, version, "coalitions_run")
if not run.has_table:
    st.info("This run has no stored coalition table (more than 16 members).")
    st.stop()

frame = cached_coalitions(path, version, run.run_id)
st.subheader(f"Utility of every coalition ({2 ** run.n} coalitions of {run.n} members)")
if run.n <= HEATMAP_MAX_MEMBERS:
    st.altair_chart(charts.coalition_heatmap(frame), width="stretch")
else:
    st.altair_chart(charts.coalition_lattice(frame))
st.caption("∅ is the base model. `weighted` is Σ_k a_k u_k with the run's objective weights.")

st.subheader("Marginal contributions behind one member's value")
c1, c2 = st.columns(2)
member = c1.selectbox("Member", list(run.members), key="coalitions_member")
objectives = list(run.table_objectives) + ([WEIGHTED] if len(run.table_objectives) > 1 else [])
objective = c2.selectbox("Objective", objectives, index=len(objectives) - 1, key="coalitions_objective")
marg = cached_marginals(path, version, run.run_id, member, objective)
total = float(marg["contribution"].sum())
st.altair_chart(charts.marginal_bars(marg, by_coalition=run.n <= BARS_MAX_MEMBERS), width="stretch")
st.metric(f"Shapley value of {member} ({objective}) = Σ weight × marginal", f"{total:.6g}")
st.caption(
    "φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ i) − v(S)): each row is one coalition S that member "
    "i joins."
)
with st.expander("All marginal contributions"):
    st.dataframe(marg, hide_index=True, width="stretch", key="coalitions_marginals")
