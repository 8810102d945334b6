"""The benchmark suite (`python -m benchmarks`, `payoutsim bench`): speed and accuracy figures, not tests.

Outside the wheel: nothing in valuation, market or dashboard imports it. `suite` runs the parts of
`parts/` (a–e) and `report` writes the JSON report; `bench_exact_shapley.py` and `bench_fused_decoding.py`
are stand-alone experiments (`python -m benchmarks.bench_fused_decoding`).
"""
