"""A scenario: one pooling agreement (members, sources, revenue, fee, rule, objective weights).

`schema` (the TOML schema and its parsing, `load_scenario`) → `inputs.load_inputs` (the coalition table
and data it references, cross-checked) → `valuation` (running the valuation config it names).
"""
