"""Learning artifacts from data: AURA alphas (and means), steering vectors, refusal directions.

`learners.py` is `bake learn` and inline `{learn: {...}}` in recipes (data in, a cached
safetensors file out). `collect.py` runs the model in batches and pools activations; `stats.py`
scores units (pure, vectorized); `refusal.py` chooses the refusal direction on a validation
split; `data.py` reads text data (CSV, JSONL, JSON, text, Hub datasets).
"""
