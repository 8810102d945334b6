"""Shared pieces of the dashboard pages: the ledger in use, cached reads, empty states, run picker.

Every read goes through `market.read_model` and is cached with `st.cache_data`, keyed by the ledger path
and its version (mtime and size of the file and its WAL), so a new run in the ledger is picked up on the
next interaction and nothing is recomputed otherwise.

Runs of more than `MANY_MEMBERS` members (up to 64 and beyond: a compact game, no 2^n table) are shown
compactly: tables sorted by amount with the top `TOP_K` first and every member in an expander, charts of
the top `TOP_K`, no per-member legend (`top_members`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from market import read_model
from market.money import format_minor

LEDGER_KEY = "ledger_path"
Version = tuple[int, int, int, int]
#: Above this many members a page shows the top `TOP_K` (by amount) in charts and lists every member in
#: an expander or a scrolling table (the coalition table's limit: `valuation.games.stability.CORE_MAX_MEMBERS`).
MANY_MEMBERS = 16
TOP_K = 12
#: Height (pixels) of a scrolling table of many members.
TABLE_HEIGHT = 420


# ---------------------------------------------------------------------------------------------------
# the ledger in use


def current_ledger() -> str:
    """The ledger path: the sidebar's value, else ``$PAYOUTSIM_LEDGER``, else ``runs/ledger.duckdb``."""
    value = st.session_state.get(LEDGER_KEY)
    return str(read_model.ledger_path(value or None))


def ledger_sidebar() -> None:
    """The sidebar's ledger field (shared by every page)."""
    if LEDGER_KEY not in st.session_state:
        st.session_state[LEDGER_KEY] = str(read_model.ledger_path())
    st.sidebar.text_input(
        "Ledger file (DuckDB)",
        key=LEDGER_KEY,
        help="The payout ledger written by `payoutsim payout --ledger FILE`; opened read-only.",
    )
    st.sidebar.caption("Opened read-only: the dashboard never blocks a writer for long.")


def require_ledger() -> tuple[str, Version]:
    """(path, version) of a readable ledger with at least one run; otherwise show what to do and stop."""
    path = current_ledger()
    status = read_model.ledger_status(path)
    if status.state == "ok":
        return path, read_model.ledger_version(path)
    if status.state == "busy":
        st.warning(status.message, icon="⏳")
        st.button("Retry", key="retry_busy", type="primary")
    elif status.state in ("missing", "empty"):
        st.info(status.message, icon="ℹ️")
        st.markdown(
            "**Get started:** record the bundled example (4 members, 3 periods, 2 objectives):\n\n"
            f"```bash\n{read_model.EXAMPLE_COMMAND} --ledger {path}\n```\n"
            "then come back here (or set the ledger file in the sidebar)."
        )
    else:
        st.error(status.message)
    st.stop()
    raise RuntimeError("unreachable")  # st.stop() raises; keeps type checkers happy


# ---------------------------------------------------------------------------------------------------
# cached reads (path + version are the cache key)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_runs(path: str, version: Version) -> list[read_model.RunSummary]:
    return read_model.runs(path)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_run(path: str, version: Version, run_id: str) -> read_model.RunData:
    return read_model.load_run(path, run_id)


@st.cache_data(show_spinner=False, max_entries=512)
def cached_weighted(path: str, version: Version, run_id: str, weights: tuple[tuple[str, float], ...]) -> Any:
    return read_model.weighted_payout(cached_run(path, version, run_id), dict(weights))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_curve(path: str, version: Version, run_id: str, x: str, y: str, steps: int) -> list[dict[str, Any]]:
    return read_model.payout_curve(cached_run(path, version, run_id), x, y, steps)


@st.cache_data(show_spinner=False, max_entries=512)
def cached_what_if(path: str, version: Version, run_id: str, members: tuple[str, ...], rule: str) -> Any:
    return read_model.what_if(cached_run(path, version, run_id), members, rule)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_coalitions(path: str, version: Version, run_id: str) -> pd.DataFrame:
    return pd.DataFrame(read_model.coalition_rows(cached_run(path, version, run_id)))


@st.cache_data(show_spinner=False, max_entries=256)
def cached_marginals(path: str, version: Version, run_id: str, member: str, objective: str) -> pd.DataFrame:
    return pd.DataFrame(read_model.marginal_contributions(cached_run(path, version, run_id), member, objective))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_objective_values(path: str, version: Version, run_id: str) -> tuple[Any, ...]:
    return read_model.objective_values(cached_run(path, version, run_id))


@st.cache_data(show_spinner=False, max_entries=32)
def cached_ledger_rows(path: str, version: Version) -> pd.DataFrame:
    return pd.DataFrame(read_model.ledger_rows(path), columns=list(read_model.EXPORT_COLUMNS))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_export(
    path: str, version: Version, run_ids: tuple[str, ...], periods: tuple[str, ...], members: tuple[str, ...], fmt: str
) -> bytes:
    rows = read_model.ledger_rows(path, run_ids=run_ids, periods=periods, members=members)
    return read_model.export_bytes(rows, "csv" if fmt == "csv" else "parquet")


# ---------------------------------------------------------------------------------------------------
# widgets and formatting


def pick_run(path: str, version: Version, key: str, *, help: str | None = None) -> read_model.RunData:
    """A run picker (latest run first by default); returns the chosen run's data."""
    summaries = cached_runs(path, version)
    labels = {s.run_id: s.label for s in summaries}
    ids = [s.run_id for s in reversed(summaries)]
    run_id = st.selectbox(
        "Run (scenario · period · rule)",
        ids,
        format_func=lambda rid: labels[rid],
        key=key,
        help=help or "Runs recorded in the ledger, newest first.",
    )
    return cached_run(path, version, run_id)


def top_members(members: Sequence[str], amounts: Sequence[int], k: int = TOP_K) -> list[str]:
    """The `k` members paid most (ties: the run's member order), highest first."""
    order = sorted(range(len(members)), key=lambda i: (-int(amounts[i]), i))
    return [members[i] for i in order[:k]]


def money(minor: int, currency: str) -> str:
    """``"36975.53 EUR"``."""
    return f"{format_minor(int(minor), currency)} {currency}"


def amounts_frame(
    run: read_model.RunData,
    amounts: Sequence[int],
    shares: Sequence[float],
    values: Sequence[float],
    std_errs: Sequence[float],
    members: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The payout table of `members` (default: the run's): member, sources, value, std err, share (%),
    amount (decimal string) and amount_minor (integer minor units)."""
    members = list(run.members if members is None else members)
    sources = dict(zip(run.members, run.sources, strict=True))
    return pd.DataFrame(
        {
            "member": members,
            "sources": [", ".join(sources[m]) for m in members],
            "value": [float(v) for v in values],
            "std err": [float(s) for s in std_errs],
            "share %": [100.0 * float(s) for s in shares],
            f"amount ({run.currency})": [format_minor(int(a), run.currency) for a in amounts],
            "amount_minor": [int(a) for a in amounts],
        }
    )


def interval_label(unc: read_model.RunUncertainty) -> str:
    """``"95% interval"`` (the recorded level)."""
    return f"{100 * unc.level:g}% interval"


def with_intervals(run: read_model.RunData, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (`amounts_frame` of the run's *recorded* payout, same members) with the recorded amount
    uncertainty: ``± std err`` (the amount's std err, in the currency), ``95% interval`` (``lo – hi``) and
    the interval in minor units (``amount_lo_minor``, ``amount_hi_minor``, for charts). Unchanged when the
    run has no uncertainty."""
    unc = run.uncertainty
    if unc is None:
        return frame
    index = [run.members.index(m) for m in frame["member"]]
    se = [unc.amount_se[i] for i in index]
    lo, hi = [unc.amount_lo[i] for i in index], [unc.amount_hi[i] for i in index]
    out = frame.copy()
    at = out.columns.get_loc("amount_minor")
    out.insert(at, interval_label(unc), [f"{format_minor(a, run.currency)} – {format_minor(b, run.currency)}" for a, b in zip(lo, hi, strict=True)])
    out.insert(at, "± std err", ["–" if s != s else format_minor(round(s), run.currency) for s in se])  # NaN: no spread
    out["amount_lo_minor"], out["amount_hi_minor"] = lo, hi
    return out


def rank_frame(run: read_model.RunData) -> pd.DataFrame:
    """The rank confidence as long rows ``member, other, p, pair`` (``p`` = P(member paid more than other);
    ``pair``: ``resolved``, ``not resolved`` (P between 0.05 and 0.95) or ``tied`` (both paid the same in
    every replicate)); empty without uncertainty."""
    unc = run.uncertainty
    if unc is None:
        return pd.DataFrame(columns=["member", "other", "p", "pair"])
    unresolved = {frozenset((a, b)) for a, b, _ in unc.unresolved(run.members)}
    rows = []
    for i, a in enumerate(run.members):
        for j, b in enumerate(run.members):
            if i == j:
                continue
            if read_model.always_tied(unc, i, j):
                pair = "tied"
            else:
                pair = "not resolved" if frozenset((a, b)) in unresolved else "resolved"
            rows.append({"member": a, "other": b, "p": float(unc.rank[i, j]), "pair": pair})
    return pd.DataFrame(rows)


def verdict(stability: Mapping[str, Any] | read_model.StabilityReport) -> None:
    """Show a stability verdict (stored `StabilityReport.to_json_dict` or a fresh report) in the words
    `payoutsim payout` prints: green when stable, red when not, blue when the core was not checked."""
    stable, text = read_model.stability_verdict(stability)
    show = st.success if stable is True else st.info if stable is None else st.error
    show(text.replace("\n", "  \n"))  # a Markdown line break keeps the worst blocking coalitions on their own line
