"""One LoRA adapter per data source, trained with DPO (trl + peft); the paper's n fine-tunings.

`config.TrainingConfig` (LoRA and DPO settings) → `dpo.train_adapters` (resumable; one adapter per source)
→ `store` (the adapters' manifests, finished-or-not, content hashes). `merge` builds a weight-level merged
adapter of a coalition (peft `add_weighted_adapter`), a baseline to compare with the arithmetic.
"""
