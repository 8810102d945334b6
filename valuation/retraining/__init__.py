"""The retraining baseline: real coalition adapters, to check language-model arithmetic against.

``plan`` (orders, sequences, shared prefixes, cache keys) → ``stages`` (train the sequential stages and union
adapters) → ``fidelity`` (score them; compare utilities and Shapley values with the arithmetic) → ``run``
(`valuation.retraining.run.run_retrain`: the whole baseline, and the files it writes).
"""
