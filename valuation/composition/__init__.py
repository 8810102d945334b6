"""Language-model arithmetic: a coalition's model built from the base and its sources' adapters.

log π_S(y|x) = log π₀(y|x) + Σ_{ℓ∈S} w_ℓ^S (log π_ℓ(y|x) − log π₀(y|x)). `arithmetic` holds the weights and
the sequence-level combination, `logprobs` scores responses once per model into a cache, `multilora`
runs the base and several adapters in one batched forward, `packed` speeds up its decode steps on CPU.
"""
