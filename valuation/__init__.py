"""payoutsim.valuation — data sources, per-source DPO adapters, LM-arithmetic coalition models,
coalition utilities and the game engine (Shapley and other semivalues with standard errors).

This layer never imports `market` or `dashboard`.
"""
