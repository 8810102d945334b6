"""Coalition utilities: what a coalition's composed model is worth, one number per objective.

* `preference` — held-out preference pairs E_k: u_k(S) = mean over E_k of σ(β·margin_S) (``bt``), the
  accuracy, or log σ(β·margin_S), from the cached per-model log-ratios (no model call per coalition);
* `reward` — the mean reward of responses sampled from π_S (direct, or one importance-sampled pool);
* `scorers` — the reward scorers R_k (profanity, a Bradley–Terry head on MiniLM embeddings, any HF
  classifier or callable) and the head's training.
"""
