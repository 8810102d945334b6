"""payoutsim.dashboard — the Streamlit app. Reads results and the ledger only through `market`'s
public API; imports no training code.
"""
