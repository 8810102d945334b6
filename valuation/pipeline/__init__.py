"""The valuation run: config → data → base model → adapters → log-prob tables → coalition table → values.

`config` (the TOML schema) → `inputs.prepare_inputs` → `run.run_train` / `run.run_value` (through
`tables` / `reward_tables` for the coalition table and `valuation.members` for member values) →
`outputs.write_run` (the run directory); `outcome.ValuationRun` is what a run returns; the values'
standard errors and intervals come from a bootstrap over the table's per-item terms
(`run.with_eval_intervals`), and `rounds` grows the eval size until they are narrow enough. `payoutsim train` and `payoutsim value`
call `run_train` and `run_value`.
"""
