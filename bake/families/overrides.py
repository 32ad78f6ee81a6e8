"""Hand-written data, only where derivation cannot decide: each entry with its reason.

Adding a family that the probe cannot handle is one entry here plus its tiny test (a model type in
`tests/test_coverage.py`'s list, which bakes and verifies it):

- `REFUSED`: a model type bake must refuse although its tiny instance probes cleanly, and why;
- `DEFAULTS`: config arguments for a type's *default* config, where transformers' defaults leave a
  key unset or set it so that no model of the type builds (a real checkpoint's config sets them).
  Used only for the coverage table's default configs.
"""

from __future__ import annotations

# model_type -> why bake refuses it (checked before any probe)
REFUSED: dict[str, str] = {
    "rwkv": "transformers' RWKV fails in generate() on the tiny instance bake verifies with (a size mismatch "
            "inside modeling_rwkv), so no bake of it could be verified here",
    "jamba": "transformers' Jamba fails in generate() on the tiny instance bake verifies with (its cache holds "
             "no attention layer), so no bake of it could be verified here",
    **dict.fromkeys(("gemma4_assistant", "gemma4_unified_assistant"),
                    "a speculative-decoding drafter: its layers read the key/value cache of the Gemma 4 model it "
                    "drafts for, so it does not run alone; bake the target model"),
    "xlstm": "transformers' xLSTM fails in its forward with a cache on the tiny instance bake verifies with "
             "(`matC_old has wrong shape` in the recurrent step), so no bake of it could be verified here",
    "longcat_flash": "LongCat-Flash's shortcut-connected MoE block (two attention and two dense sublayers around "
                     "a MoE branch with identity experts) defeats the derived adapter: a tiny model's hooked and "
                     "baked outputs differ (max |dlogit| 3.97) for every kind, so it needs a hand-written one",
    "moss_transcribe_diarize": "a speech model: its hooked and baked tiny instances differ (0.08 max logit) even "
                               "for one exact AURA edit, so bake cannot verify it",
}

_QSA = {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 256, "indexer_budget": 2048,
        "indexer_compress_ratio": 4}

# model_type -> (arguments for its default config, why)
DEFAULTS: dict[str, tuple[dict, str]] = {
    "lfm2_moe": ({"num_hidden_layers": 24, "layer_types": ["full_attention" if i in (2, 6, 10, 14, 18, 21) else "conv"
                                                           for i in range(24)]},
                 "LFM2-MoE's default config sets no layer_types (its checkpoints do: LFM2-8B-A1B's 24 convolution "
                 "and attention blocks)"),
    "bamba": ({"attn_layer_indices": [9, 18, 27]},
              "the default config has only Mamba layers, on which transformers' generate fails (a cache with no "
              "attention layer); Bamba-9B's checkpoint puts attention at layers 9, 18 and 27"),
    "granitemoehybrid": ({"layer_types": ["full_attention" if i % 8 == 7 else "linear_attention" for i in range(32)]},
                         "the default config has only Mamba layers, on which transformers' generate fails (a cache "
                         "with no attention layer); Granite 4.0-H checkpoints interleave attention layers (here "
                         "every 8th)"),
    "xmod": ({"default_language": "en_XX"}, "X-MOD runs only with a language adapter chosen"),
    "dbrx": ({"attn_config": {"rope_theta": 500000.0, "kv_n_heads": 8, "clip_qkv": 8}},
             "DBRX's attention reads attn_config.rope_theta, which the default attn_config lacks (checkpoints set it)"),
    "dots1": ({"n_routed_experts": 128, "n_shared_experts": 2},
              "dots.llm1's default config leaves its expert counts unset (the checkpoint: 128 routed, 2 shared)"),
    "qwen4_exp_text": (_QSA, "the default layer pattern uses indexed attention, whose indexer sizes the default "
                             "config leaves unset"),
    "qwen4_exp": ({"text_config": _QSA}, "as qwen4_exp_text, inside the multimodal config"),
    "cohere_compass_text": ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
                            "the default config has per-layer-type RoPE but no entry for its full-attention layers"),
}


def refused(config: dict) -> str | None:
    mt = config.get("model_type")
    why = REFUSED.get(mt)
    return f"model_type={mt!r}: {why}" if why else None


def defaults(model_type: str) -> dict:
    """The arguments that make the default config of `model_type` build (usually none)."""
    return DEFAULTS.get(model_type, ({}, ""))[0]
