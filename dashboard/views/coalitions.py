"""Coalitions: every coalition's utility per objective, and the marginal contributions behind a value.

A run of more than 16 members has 2^n coalitions (2^64 at 64 members): the page shows a seeded sample
instead — ∅, the grand coalition, every singleton and leave-one-out and `read_model.SAMPLED_COALITIONS`
coalitions of random sizes, evaluated on the run's compact game — and the marginal contributions of
`read_model.MARGINALS_PER_SIZE` sampled coalitions per size, whose weighted sum estimates the Shapley value
(`market.coalition_samples`). Both are labelled as samples.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts
from dashboard.common import TABLE_HEIGHT, cached_coalitions, cached_marginals, pick_run, require_ledger
from market.read_model import MARGINALS_PER_SIZE, SAMPLED_COALITIONS, WEIGHTED

HEATMAP_MAX_MEMBERS = 6
BARS_MAX_MEMBERS = 5

st.header("Coalitions")
path, version = require_ledger()
run = pick_run(path, version, "coalitions_run")
if not run.has_game:
    st.info("This run has no stored coalition table (more than 16 members) and no compact game.")
    st.stop()

frame = cached_coalitions(path, version, run.run_id)
sampled = run.is_compact
if sampled:
    shown = frame["index"].nunique()
    st.subheader(f"Utility of {shown} sampled coalitions of {run.n} members (sampled, not all 2^{run.n})")
    st.altair_chart(charts.coalition_lattice(frame))
    st.caption(
        f"∅ (the base model), all {run.n} members, the {run.n} singletons, the {run.n} leave-one-outs and "
        f"{SAMPLED_COALITIONS} coalitions of random sizes (seed {run.seed}), evaluated on the run's compact "
        "game. `weighted` is Σ_k a_k u_k with the run's objective weights."
    )
    with st.expander(f"All {shown} sampled coalitions"):
        st.dataframe(frame, hide_index=True, width="stretch", height=TABLE_HEIGHT, key="coalitions_sampled",
                     column_order=["kind", "coalition", "size", "objective", "utility", "created", "members"])
else:
    st.subheader(f"Utility of every coalition ({2 ** run.n} coalitions of {run.n} members)")
    if run.n <= HEATMAP_MAX_MEMBERS:
        st.altair_chart(charts.coalition_heatmap(frame), width="stretch")
    else:
        st.altair_chart(charts.coalition_lattice(frame))
    st.caption("∅ is the base model. `weighted` is Σ_k a_k u_k with the run's objective weights.")

st.subheader("Marginal contributions behind one member's value" + (" (sampled)" if sampled else ""))
c1, c2 = st.columns(2)
member = c1.selectbox("Member", list(run.members), key="coalitions_member")
objectives = list(run.table_objectives) + ([WEIGHTED] if len(run.table_objectives) > 1 else [])
objective = c2.selectbox("Objective", objectives, index=len(objectives) - 1, key="coalitions_objective")
marg = cached_marginals(path, version, run.run_id, member, objective)
total = float(marg["contribution"].sum())
st.altair_chart(charts.marginal_bars(marg, by_coalition=run.n <= BARS_MAX_MEMBERS), width="stretch")
if sampled:
    st.metric(f"Estimated Shapley value of {member} ({objective}) = Σ weight × marginal", f"{total:.6g}")
    i = run.members.index(member)
    recorded = run.values[i] if objective == WEIGHTED else (
        run.phi[i, run.objectives.index(objective)] if objective in run.objectives else None
    )
    st.caption(
        f"From {len(marg)} sampled coalitions S ⊆ N∖{{i}} ({MARGINALS_PER_SIZE} per size |S|, one at |S| = 0 "
        f"and n − 1): φ̂_i = Σ_s 1/n · mean over the samples of size s of (v(S ∪ i) − v(S)), a stratified "
        f"estimate, not all 2^{run.n - 1} coalitions."
        + (f" The run's recorded {run.rule} value: {recorded:.6g}." if recorded is not None else "")
    )
else:
    st.metric(f"Shapley value of {member} ({objective}) = Σ weight × marginal", f"{total:.6g}")
    st.caption(
        "φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ i) − v(S)): each row is one coalition S that member "
        "i joins."
    )
with st.expander("All marginal contributions" + (" (sampled)" if sampled else "")):
    st.dataframe(marg, hide_index=True, width="stretch", key="coalitions_marginals")
