"""Learning artifacts from data: AURA alphas (and means), steering vectors, refusal directions, SAEs.

`learners.py` holds the learners `bake learn` and inline `{learn: {...}}` in recipes run (data
in, a safetensors file out; bake.planner.learned caches them for recipes). `collect.py` runs the
model in batches and pools activations; `stats.py` scores units (pure, vectorized); `refusal.py`
chooses the refusal direction on a validation split; `data.py` reads text data (CSV, JSONL, JSON,
text, Hub datasets); `sae.py` trains a TopK SAE on one layer; `explain.py` explains SAE features
by mutual information with a fixed vocabulary (`bake explain`, and words as features in recipes).
"""
