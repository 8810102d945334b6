"""payoutsim.market — scenarios (pooling agreements), payout rules, stability checks, the ledger,
exports and the `payoutsim` command line. Imports `valuation`; never imports `dashboard`.
"""
