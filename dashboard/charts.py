"""Altair chart builders of the dashboard (pure functions: data frame in, chart out)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from market.currencies import minor_units


def payout_bars(
    frame: pd.DataFrame, currency: str, interval: str | None = None, *, by_amount: bool = False
) -> alt.Chart | alt.LayerChart:
    """Bar per member of its payout (``amount_minor`` shown in major units) with the share as tooltip;
    with `interval` (a column title such as ``"95% interval"``) and columns ``amount_lo_minor``,
    ``amount_hi_minor``, an error bar per member over that interval. `by_amount`: bars sorted by amount,
    highest first, with vertical member labels (many members), else in the frame's order."""
    scale = 10 ** minor_units(currency)
    data = frame.assign(amount=frame["amount_minor"] / scale)
    tooltip: list[Any] = ["member", "sources", alt.Tooltip("share %:Q", format=".2f"), f"amount ({currency})"]
    with_bars = interval is not None and "amount_lo_minor" in frame.columns
    if with_bars:
        data = data.assign(amount_lo=frame["amount_lo_minor"] / scale, amount_hi=frame["amount_hi_minor"] / scale)
        tooltip += ["± std err", interval]
    order: Any = list(data.sort_values("amount", ascending=False, kind="stable")["member"]) if by_amount else None
    axis = alt.Axis(labelAngle=-90, labelFontSize=9) if by_amount else alt.Axis()
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("member:N", sort=order, title="member", axis=axis),
            y=alt.Y("amount:Q", title=f"payout ({currency})"),
            color=alt.Color("member:N", legend=None),
            tooltip=tooltip,
        )
        .properties(height=280)
    )
    if not with_bars:
        return bars
    errors = (
        alt.Chart(data)
        .mark_errorbar(ticks=True, color="black", thickness=1.5)
        .encode(
            x=alt.X("member:N", sort=order),
            y=alt.Y("amount_lo:Q", title=f"payout ({currency})"),
            y2="amount_hi:Q",
            tooltip=tooltip,
        )
    )
    return (bars + errors).properties(height=280)


def rank_heatmap(frame: pd.DataFrame, members: list[str]) -> alt.LayerChart:
    """P(row member paid more than column member) as a heatmap (`dashboard.common.rank_frame` rows):
    colour = P, the value written in each cell; pairs ``not resolved`` (P between 0.05 and 0.95) outlined
    in black and marked with a ``?``."""
    wide, narrow = len(members) <= 6, len(members) > 8
    base = alt.Chart(frame).encode(
        x=alt.X("other:N", sort=members, title="… than this member",
                axis=alt.Axis(labelAngle=-60 if narrow else 0, orient="top", labelOverlap=False)),
        y=alt.Y("member:N", sort=members, title="P(this member paid more …)"),
    )
    tooltip = ["member", "other", alt.Tooltip("p:Q", title="P(member paid more)", format=".3f"), "pair"]
    rect = base.mark_rect().encode(
        color=alt.Color("p:Q", title="P", scale=alt.Scale(scheme="blueorange", domain=[0, 1], domainMid=0.5)),
        stroke=alt.condition("datum.pair == 'not resolved'", alt.value("black"), alt.value("white")),
        strokeWidth=alt.condition("datum.pair == 'not resolved'", alt.value(3), alt.value(1)),
        tooltip=tooltip,
    )
    text = base.mark_text(fontSize=10 if narrow else 12).encode(
        text=alt.Text("label:N"),
        color=alt.condition("datum.p < 0.2 || datum.p > 0.8", alt.value("white"), alt.value("black")),
        tooltip=tooltip,
    ).transform_calculate(
        label="format(datum.p, '.2f') + (datum.pair == 'not resolved' ? ' ?' : '')"
    )
    step = 64 if wide else 30 if narrow else 40  # 12 members (the top 12 of a large run) fit a half-width column
    return (rect + text).properties(width=alt.Step(step), height=alt.Step(36 if wide else 26))


def tradeoff_scatter(
    points: pd.DataFrame, x: str, y: str, bar: str = "±1 std err", *, labelled: list[str] | None = None
) -> alt.LayerChart:
    """The paper's Figure 2: each member at (φ_x, φ_y) with error bars on both axes and the y = x diagonal.

    `points` has columns ``member, label, x, y`` and either ``x_lo, x_hi, y_lo, y_hi`` (an interval, e.g.
    the recorded 95% intervals; `bar` names it, e.g. ``"95% interval"``) or ``x_se, y_se`` (±1 std err).
    `labelled`: the members whose names are written next to their point (None: every member, with a
    colour legend; a list: only those, no legend — many members, the tooltip names every point).
    """
    if "x_lo" in points.columns:
        data = points
    else:
        data = points.assign(
            x_lo=points["x"] - points["x_se"], x_hi=points["x"] + points["x_se"],
            y_lo=points["y"] - points["y_se"], y_hi=points["y"] + points["y_se"],
        )
    lo = float(min(data["x_lo"].min(), data["y_lo"].min(), 0.0))
    hi = float(max(data["x_hi"].max(), data["y_hi"].max(), 0.0))
    pad = 0.08 * (hi - lo or 1.0)
    domain = [lo - pad, hi + pad]
    data = data.assign(
        x_bar=[f"{a:.4g} – {b:.4g}" for a, b in zip(data["x_lo"], data["x_hi"], strict=True)],
        y_bar=[f"{a:.4g} – {b:.4g}" for a, b in zip(data["y_lo"], data["y_hi"], strict=True)],
    )
    base = alt.Chart(data)
    xs = alt.Scale(domain=domain, nice=False)
    ys = alt.Scale(domain=domain, nice=False)
    diagonal = (
        alt.Chart(pd.DataFrame({"v": domain}))
        .mark_line(strokeDash=[6, 4], color="gray")
        .encode(x=alt.X("v:Q", scale=xs), y=alt.Y("v:Q", scale=ys))
    )
    zero_x = alt.Chart(pd.DataFrame({"v": [0.0]})).mark_rule(color="lightgray").encode(y="v:Q")
    zero_y = alt.Chart(pd.DataFrame({"v": [0.0]})).mark_rule(color="lightgray").encode(x="v:Q")
    xbars = base.mark_rule().encode(x=alt.X("x_lo:Q", scale=xs), x2="x_hi:Q", y=alt.Y("y:Q", scale=ys),
                                    color=alt.Color("member:N", legend=None))
    ybars = base.mark_rule().encode(y=alt.Y("y_lo:Q", scale=ys), y2="y_hi:Q", x=alt.X("x:Q", scale=xs),
                                    color=alt.Color("member:N", legend=None))
    legend: Any = alt.Legend(title="member") if labelled is None else None
    dots = base.mark_circle(size=140 if labelled is None else 70, opacity=0.9).encode(
        x=alt.X("x:Q", scale=xs, title=f"{x} value (φ)"),
        y=alt.Y("y:Q", scale=ys, title=f"{y} value (φ)"),
        color=alt.Color("member:N", legend=legend),
        tooltip=[
            "label",
            alt.Tooltip("x:Q", title=x, format=".4g"),
            alt.Tooltip("x_bar:N", title=f"{x} {bar}"),
            alt.Tooltip("y:Q", title=y, format=".4g"),
            alt.Tooltip("y_bar:N", title=f"{y} {bar}"),
        ],
    )
    named = base if labelled is None else alt.Chart(data[data["member"].isin(labelled)])
    text = named.mark_text(dx=9, dy=-9, align="left").encode(
        x=alt.X("x:Q", scale=xs), y=alt.Y("y:Q", scale=ys), text="member:N"
    )
    return (diagonal + zero_x + zero_y + xbars + ybars + dots + text).properties(height=420)


def payout_curve(curve: pd.DataFrame, x: str, current: float, currency: str, digits: int) -> alt.LayerChart:
    """Each member's payout as the weight of `x` goes from 0 to 1, with a rule at the current weight."""
    data = curve.assign(amount=curve["amount_minor"] / 10**digits)
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("weight:Q", title=f"weight of {x}", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("amount:Q", title=f"payout ({currency})"),
            color=alt.Color("member:N", title="member"),
            tooltip=["member", alt.Tooltip("weight:Q", format=".2f"), alt.Tooltip("amount:Q", format=",.2f")],
        )
    )
    rule = alt.Chart(pd.DataFrame({"weight": [current]})).mark_rule(color="red", strokeDash=[4, 3]).encode(x="weight:Q")
    return (lines + rule).properties(height=380)


def coalition_heatmap(frame: pd.DataFrame) -> alt.LayerChart:
    """Heatmap: coalitions (rows, by index) × objectives (columns), colour = utility gain over ∅."""
    order = frame.drop_duplicates("index").sort_values(["size", "index"])["coalition"].tolist()
    base = alt.Chart(frame).encode(
        x=alt.X("objective:N", title="objective", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("coalition:N", sort=order, title="coalition", axis=alt.Axis(labelLimit=320)),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("created:Q", title="v(S) − v(∅)", scale=alt.Scale(scheme="redblue", domainMid=0)),
        tooltip=["coalition", "objective", alt.Tooltip("utility:Q", format=".4f"), alt.Tooltip("created:Q", format=".4f")],
    )
    text = base.mark_text(fontSize=11).encode(text=alt.Text("utility:Q", format=".3f"))
    return (rect + text).properties(height=alt.Step(20))


def coalition_lattice(frame: pd.DataFrame) -> alt.Chart:
    """Lattice view: every coalition's utility against its size, one panel per objective. Sampled
    coalitions (a ``kind`` column: base, grand, singleton, leave-one-out, sampled) are coloured by kind on
    a quantitative size axis (up to n + 1 sizes)."""
    sampled = "kind" in frame.columns
    tooltip: list[Any] = ["coalition", "objective", alt.Tooltip("utility:Q", format=".4f")]
    if sampled:
        tooltip = ["kind", "size", *tooltip]
    return (
        alt.Chart(frame)
        .mark_circle(size=50 if not sampled else 30, opacity=0.6)
        .encode(
            x=alt.X("size:Q" if sampled else "size:O", title="coalition size"),
            y=alt.Y("utility:Q", title="utility", scale=alt.Scale(zero=False)),
            color=alt.Color("kind:N" if sampled else "objective:N", title="coalition" if sampled else "objective"),
            column=alt.Column("objective:N", title=None),
            tooltip=tooltip,
        )
        .properties(width=220, height=260)
    )


def marginal_bars(frame: pd.DataFrame, by_coalition: bool) -> alt.Chart:
    """Shapley-weighted marginal contributions: one bar per coalition S (small games) or the sum per |S|."""
    if by_coalition:
        return (
            alt.Chart(frame)
            .mark_bar()
            .encode(
                y=alt.Y("coalition:N", sort=None, title="joins coalition S", axis=alt.Axis(labelLimit=320)),
                x=alt.X("contribution:Q", title="weight × (v(S ∪ i) − v(S))"),
                color=alt.condition("datum.contribution >= 0", alt.value("#4c78a8"), alt.value("#e45756")),
                tooltip=["coalition", "size", alt.Tooltip("marginal:Q", format=".4f"),
                         alt.Tooltip("weight:Q", format=".4f"), alt.Tooltip("contribution:Q", format=".5f")],
            )
            .properties(height=alt.Step(22))
        )
    grouped = frame.groupby("size", as_index=False).agg(contribution=("contribution", "sum"), mean=("marginal", "mean"))
    return (
        alt.Chart(grouped)
        .mark_bar()
        .encode(
            x=alt.X("size:O", title="|S| (size of the coalition joined)"),
            y=alt.Y("contribution:Q", title="Σ weight × marginal"),
            tooltip=["size", alt.Tooltip("mean:Q", title="mean marginal", format=".4f"),
                     alt.Tooltip("contribution:Q", format=".5f")],
        )
        .properties(height=260)
    )
