"""Proving the bake: the hooked source against the baked checkpoint.

`verifier.py` runs both on the probe prompts (float64 when they fit in memory, streamed when not)
and compares logits and greedy generations; `localcheck.py` checks each hooked module against its
baked twin, one module at a time from disk, for models too large for either.
"""
