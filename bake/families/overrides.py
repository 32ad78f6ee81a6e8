"""Hand-written data, only where derivation cannot decide: each entry with its reason.

Adding a family that the probe cannot handle is one entry here plus its tiny test (a model type in
`tests/test_coverage.py`'s list, which bakes and verifies it):

- `REFUSED`: a model type bake must refuse although its tiny instance probes cleanly, and why;
- `DEFAULTS`: config keys that a type's *default* config leaves unset, so that no tiny model of it
  can be built for the coverage table (a real checkpoint's config sets them). Used only where the
  config lacks the key.
"""

from __future__ import annotations

# model_type -> why bake refuses it (checked before any probe)
REFUSED: dict[str, str] = {
    "rwkv": "transformers' RWKV fails in generate() on the tiny instance bake verifies with (a size mismatch "
            "inside modeling_rwkv), so no bake of it could be verified here",
    "jamba": "transformers' Jamba fails in generate() on the tiny instance bake verifies with (its cache holds "
             "no attention layer), so no bake of it could be verified here",
    "moss_transcribe_diarize": "a speech model: its hooked and baked tiny instances differ (0.08 max logit) even "
                               "for one exact AURA edit, so bake cannot verify it",
}

# model_type -> (config keys for its default config, why)
DEFAULTS: dict[str, tuple[dict, str]] = {
    "lfm2_moe": ({"layer_types": ["conv", "full_attention", "conv", "full_attention"]},
                 "LFM2-MoE's default config sets no layer_types (its checkpoints do): convolution and attention blocks"),
}


def refused(config: dict) -> str | None:
    mt = config.get("model_type")
    why = REFUSED.get(mt)
    return f"model_type={mt!r}: {why}" if why else None


def defaults(model_type: str, config: dict) -> dict:
    """`config` with the DEFAULTS entry of its type filled in where unset."""
    keys = DEFAULTS.get(model_type, ({}, ""))[0]
    return {**config, **{k: v for k, v in keys.items() if config.get(k) is None}}
