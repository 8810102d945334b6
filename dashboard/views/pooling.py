"""Pooling what-if: toggle members in and out, pick the rule; value created, payouts, stability.

Everything comes from the run's stored game (`market.read_model.what_if`): the coalition table, or for
a run of more than 16 members its compact game (no retraining either way). A smaller pool earns the
grand pool's pot scaled by the value it creates (as in `market.pooling`). With more than `MANY_MEMBERS`
members the pool is chosen by leaving members out (a multiselect instead of a checkbox per member); a
large pool of a compact game is valued with the rule's sampled estimator (`read_model.WHAT_IF_BUDGET`
evaluations) and its stability is checked for individual rationality only.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.common import (
    MANY_MEMBERS,
    TABLE_HEIGHT,
    amounts_frame,
    cached_what_if,
    money,
    pick_run,
    require_ledger,
    verdict,
)
from market import read_model

st.header("Pooling what-if")
path, version = require_ledger()
run = pick_run(path, version, "pooling_run")
if not run.has_game:
    st.info(
        "This run has no stored game (more than 16 members and no compact game in the ledger), so what-ifs "
        "are not available."
    )
    st.stop()

rules = read_model.what_if_rules(run)
many = run.n > MANY_MEMBERS
if many:
    left_out = st.multiselect(
        f"Members left out of the pool ({run.n} members; none left out = the recorded pool)",
        list(run.members),
        key=f"pool_out_{run.run_id}",
        placeholder="everyone is in the pool",
    )
    chosen = [m for m in run.members if m not in set(left_out)]
else:
    st.write("Members in the pool:")
    cols = st.columns(min(len(run.members), 6))
    chosen = []
    for i, m in enumerate(run.members):
        if cols[i % len(cols)].checkbox(m, value=True, key=f"pool_{run.run_id}_{m}", help=", ".join(run.sources[i])):
            chosen.append(m)
rule = st.selectbox(
    "Payout rule", rules, index=rules.index(run.rule) if run.rule in rules else 0, key=f"pool_rule_{run.run_id}",
    help="robust_shapley needs the members' data and is not offered here.",
)
if not chosen:
    st.warning("Pick at least one member.")
    st.stop()

wi = cached_what_if(path, version, run.run_id, tuple(chosen), rule)
c = st.columns(3)
c[0].metric("Value created v'(S)", f"{wi.value_created:.6g}",
            help="Objective-weighted utility of the pool minus the base model's (utility units).")
c[1].metric("Share of the grand pool's value", f"{100 * wi.value_created / wi.grand_value:.1f}%" if wi.grand_value else "—")
c[2].metric("Pool's revenue", money(wi.revenue_minor, run.currency))
if wi.method == "sampled":
    st.caption(
        f"Valued with the sampled estimator of rule {rule!r} on the run's compact game ({wi.budget} coalition "
        f"evaluations, seed {run.seed}): the values carry estimator noise (std err column)."
    )
elif wi.method == "recorded":
    st.caption("The whole pool under the run's own rule: the recorded payout.")

pay = wi.payout
frame = amounts_frame(run, pay.amounts, pay.shares, pay.values, pay.std_errs, members=pay.members)
grand = dict(zip(run.members, run.amounts, strict=True))
frame["in the recorded run"] = [grand[m] for m in pay.members]
st.dataframe(frame, hide_index=True, width="stretch", key="pool_table", height=TABLE_HEIGHT if many else "auto",
             column_config={"value": st.column_config.NumberColumn(format="%.6g"),
                            "share %": st.column_config.NumberColumn(format="%.2f")})
for w in pay.warnings:
    st.warning(w)

rep = wi.stability
verdict(rep)
if not wi.full_stability:
    st.caption(
        f"A pool of {len(pay.members)} members has 2^{len(pay.members)} coalitions: only individual rationality "
        "is checked (each member gets at least what it creates alone), as for the recorded run."
    )
if rep.blocking:
    st.subheader("Blocking coalitions (would do better on their own)")
    st.dataframe(
        pd.DataFrame({"coalition": ["+".join(c) for c, _ in rep.blocking], "excess": [e for _, e in rep.blocking]}),
        hide_index=True, width="stretch", key="pool_blocking",
    )
