"""Drawing responses from a composed model π_S (token-level arithmetic, renormalised each step).

`next_token` (one step: combine the next-token log-softmaxes, draw with common random numbers) →
`decoder` (the batched decode loop) → `coalition_responses` (one coalition's responses, cached); and
`importance` (one proposal pool reweighted for every coalition). "Sampling" here means sampling tokens;
the game engine's sampling of coalitions lives in `valuation.games.estimators`.
"""
