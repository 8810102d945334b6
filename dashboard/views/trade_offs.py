"""Trade-offs: each member's value per objective (the paper's Figure 2) and payouts under other weights.

The slider re-weights the stored per-objective values by linearity (Σ_k a_k φ_k, no recomputation) and
splits the pool with the run's rule's negative policy and largest-remainder rounding
(`market.read_model.weighted_payout`). The plane's error bars are the run's recorded per-objective
intervals when it has them (else ±1 std err); the payout table shows the recorded amount intervals only
at the recorded weights (`market.read_model.same_weights`): they are not recomputed for other weights.

With more than `MANY_MEMBERS` members the plane names only the `TOP_K` members paid most (every point has
its tooltip), the payout table shows those first with every member in an expander, and the curve follows
the top `TOP_K` at the chosen weight. Re-weighting stays linear (no recomputation), so it is as fast at 64
members as at 4.
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
    cached_curve,
    cached_objective_values,
    cached_weighted,
    interval_label,
    money,
    pick_run,
    require_ledger,
    top_members,
    with_intervals,
)
from market import read_model
from market.currencies import minor_units
from market.read_model import EXAMPLE_COMMAND

st.header("Trade-offs between objectives")
path, version = require_ledger()
run = pick_run(path, version, "tradeoffs_run")

objective_names, phi, phi_se, method = cached_objective_values(path, version, run.run_id)
many = run.n > MANY_MEMBERS
objectives = list(objective_names)
if len(objectives) < 2:
    st.info(
        f"Run #{run.seq} has {'one objective' if objectives else 'no per-objective values'} "
        f"(rule {run.rule!r}), so there is no trade-off to explore. Value a game with two objective "
        "columns (e.g. helpfulness and harmlessness) and give their weights in the scenario's [objectives] "
        f"table, e.g. `{EXAMPLE_COMMAND}`."
    )
    st.stop()

c1, c2 = st.columns(2)
x = c1.selectbox("x objective", objectives, index=0, key="tradeoffs_x")
y_choices = [o for o in objectives if o != x]
y = c2.selectbox("y objective", y_choices, index=0, key="tradeoffs_y")

ix, iy = objectives.index(x), objectives.index(y)
points = pd.DataFrame(
    {
        "member": list(run.members),
        "label": [f"{m} ({', '.join(s)})" for m, s in zip(run.members, run.sources, strict=True)],
        "x": phi[:, ix],
        "y": phi[:, iy],
        "x_se": phi_se[:, ix],
        "y_se": phi_se[:, iy],
    }
)
intervals = read_model.objective_intervals(run)
if intervals is not None and run.uncertainty is not None:
    lo, hi, level = intervals
    points = points.assign(x_lo=lo[:, ix], x_hi=hi[:, ix], y_lo=lo[:, iy], y_hi=hi[:, iy])
    bar = f"{100 * level:g}% interval"
    bars = f"{bar}s on both axes ({run.uncertainty.replicates} replicates; resampled: {run.uncertainty.resampled})"
else:
    bar, bars = "±1 std err", "±1 standard error (no per-objective intervals recorded for this run)"
named = top_members(run.members, run.amounts) if many else None
st.altair_chart(charts.tradeoff_scatter(points, x, y, bar, labelled=named), width="stretch")
if many:
    st.caption(f"{run.n} members; the {TOP_K} paid most in the run are named (hover any point for its member).")
st.caption(
    f"{method} value of each member (its sources in the tooltip) for {x} (x) and {y} (y), {bars}; "
    "above the dashed y = x line a member's data helps more with the second objective."
)

wx, wy = run.weights.get(x, 0.0), run.weights.get(y, 0.0)
default = round(wx / (wx + wy), 2) if wx + wy > 0 else 0.5
a = st.slider(
    f"Weight of {x} (the weight of {y} is 1 − this)",
    min_value=0.0,
    max_value=1.0,
    value=float(default),
    step=0.05,
    key="tradeoffs_weight",
    help="Payouts are re-computed by linearity of the value: Σ a_k φ_k, then split with the run's rule.",
)
weights = {o: 0.0 for o in objectives}
weights[x], weights[y] = float(a), 1.0 - float(a)
wp = cached_weighted(path, version, run.run_id, tuple(sorted(weights.items())))
frame = amounts_frame(run, wp.amounts, wp.shares, wp.values, wp.std_errs)
recorded = read_model.same_weights(run, weights) or wp.method == "unchanged"
if recorded and run.uncertainty is not None:  # the recorded payout: its recorded std errs and intervals apply
    frame["std err"] = list(run.std_errs)
    frame = with_intervals(run, frame).drop(columns=["amount_lo_minor", "amount_hi_minor"])
frame["stored amount_minor"] = list(run.amounts)
frame["change"] = frame["amount_minor"] - frame["stored amount_minor"]
st.subheader(f"Payouts at {x} = {a:.2f}, {y} = {1 - a:.2f}")
shown = frame.assign(**{"share %": frame["share %"].map(lambda v: f"{v:.2f}"), "value": frame["value"].map(lambda v: f"{v:.6g}"),
                         "std err": frame["std err"].map(lambda v: f"{v:.2g}")})
if many:
    top = top_members(list(shown["member"]), list(shown["amount_minor"]))
    st.table(shown.set_index("member").loc[top])
    st.caption(f"The {TOP_K} members paid most at these weights (of {run.n}); every member below.")
    with st.expander(f"All {run.n} members"):
        st.dataframe(shown, hide_index=True, width="stretch", height=TABLE_HEIGHT, key="tradeoffs_all")
else:
    st.table(shown.set_index("member"))
if run.uncertainty is not None and not recorded:
    st.caption(
        f"No interval for these weights: the recorded {interval_label(run.uncertainty)}s (Payouts page) belong to the "
        f"run's weights ({', '.join(f'{k} {v:g}' for k, v in sorted(run.weights.items()))}) and are not "
        "recomputed for others. The std err column is the value's (Σ |a_k| · se_k, conservative)."
    )
method = {"linear": "by linearity (Σ a_k φ_k of the stored values)",
          "re-solved": "by re-solving the least core on the stored coalition table (not linear)",
          "unchanged": f"unchanged: rule {run.rule!r} does not depend on the weights"}[wp.method]
held = f" + held {money(wp.held_minor, run.currency)}" if wp.held_minor else ""
st.caption(f"Total {money(sum(wp.amounts), run.currency)}{held} = pool; amounts {method}.")
for w in wp.warnings:
    st.warning(w)

steps = (6 if run.is_compact else 11) if wp.method == "re-solved" else 21  # a re-solve per step
curve = pd.DataFrame(cached_curve(path, version, run.run_id, x, y, steps))
if many:
    curve = curve[curve["member"].isin(top_members(run.members, wp.amounts))]
    st.subheader(f"Payout across the weight range: the {TOP_K} members paid most at {x} = {a:.2f}")
else:
    st.subheader("Each member's payout across the weight range")
st.altair_chart(charts.payout_curve(curve, x, float(a), run.currency, minor_units(run.currency)), width="stretch")
