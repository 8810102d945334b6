"""payoutsim dashboard: explore payouts, pooling agreements and multi-objective trade-offs.

Run with ``payoutsim dashboard [--ledger FILE]`` (or ``streamlit run dashboard/app.py``). The ledger comes
from the sidebar, else ``$PAYOUTSIM_LEDGER``, else ``runs/ledger.duckdb``. Reads only through
`market.read_model` (no training code is imported).
"""

from __future__ import annotations

import streamlit as st

from dashboard.common import ledger_sidebar

PAGES = (
    ("views/payouts.py", "Payouts", ":material/payments:"),
    ("views/trade_offs.py", "Trade-offs", ":material/balance:"),
    ("views/pooling.py", "Pooling what-if", ":material/group_work:"),
    ("views/coalitions.py", "Coalitions", ":material/hub:"),
    ("views/ledger.py", "Ledger", ":material/receipt_long:"),
)


def main() -> None:
    st.set_page_config(page_title="payoutsim", page_icon=":material/payments:", layout="wide")
    nav = st.navigation([st.Page(path, title=title, icon=icon) for path, title, icon in PAGES])
    st.sidebar.title("payoutsim")
    ledger_sidebar()
    nav.run()


main()
