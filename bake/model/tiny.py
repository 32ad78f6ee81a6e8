"""Tiny random instances of a model type: the same config class with small sizes.

`shrink(config)` keeps every flag of a config (sliding windows, biases, layer patterns, expert
counts > 1, tying) and replaces sizes with small ones, so that a model of the same structure builds
in milliseconds. The adapter probe (`probe.py`) runs on such an instance of the user's own config;
the coverage table runs it on each model type's default config.
"""

from __future__ import annotations

import torch

D, HEADS, KV, HEAD_DIM = 64, 4, 2, 16
N_LAYERS = 4
SIZES = {  # config key -> the tiny value (applied only where the original is larger)
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "model_dim", "embedding_dim", "emb_dim",
                     "hidden_size_global"), D),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num", "kv_n_heads"), KV),
    **dict.fromkeys(("head_dim", "kv_channels", "attention_head_dim", "rotary_dim", "d_head"), HEAD_DIM),
    **dict.fromkeys(("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim", "d_inner", "d_ff"), 96),
    **dict.fromkeys(("moe_intermediate_size", "expert_intermediate_size", "expert_ffn_hidden_size"), 32),
    "shared_expert_intermediate_size": 48,
    **dict.fromkeys(EXPERT_KEYS := ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts",
                                    "num_routed_experts"), 4),
    "zero_expert_num": 2,  # LongCat's identity experts
    **dict.fromkeys(("index_n_heads", "indexer_n_heads"), 4),  # sparse attention's token indexer
    **dict.fromkeys(("index_head_dim", "indexer_head_dim"), 16),
    **dict.fromkeys(("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k", "num_selected_experts"), 2),
    **dict.fromkeys(("n_group", "num_expert_group", "topk_group", "n_shared_experts", "first_k_dense_replace"), 1),
    "linear_num_heads": 4, "linear_head_dim": 16,  # linear-attention blocks (Kimi Linear, Ring)
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim"), 16),  # gated delta nets (Qwen3-Next, 3.5):
    "linear_num_key_heads": 2, "linear_num_value_heads": 4,  # their default 8192-channel conv made tests slow
    **dict.fromkeys(("mamba_n_heads", "n_mamba_heads"), 4), "n_groups": 2,
    **dict.fromkeys(("state_size", "mamba_d_state"), 16), **dict.fromkeys(("time_step_rank", "mamba_dt_rank"), 8),
    "encoder_hash_byte_group_vocab": 64,  # BLT's hashed n-gram embeddings
    **dict.fromkeys(("vocab_size", "vocab_size_per_layer_input"), 256), "hidden_size_per_layer_input": 16,
    "unpadded_vocab_size": 250,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"), 256),
    "q_lora_rank": 32, "kv_lora_rank": 16,
    **dict.fromkeys(("sliding_window", "sliding_window_size", "attention_window_size", "window_size"), 8),
    "full_attention_interval": 2,
}
MAX_PARAMS = 50_000_000  # the builtin random MoE has about 13M
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "num_blocks")
VOCAB = 256


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _layers(d: dict) -> int | None:
    return next((d[k] for k in LAYER_KEYS if _int(d.get(k))), None)


def _shrink_list(v: list, n_orig: int, n: int) -> list:
    """A per-layer list cut to n layers, keeping one layer of every kind the original has."""
    if len(v) != n_orig or not all(isinstance(x, (str, int, float, bool, type(None))) for x in v):
        return v
    head = list(v[:n])
    missing = [x for x in dict.fromkeys(v) if x not in head]
    for j, x in enumerate(missing[:n - 1]):
        head[n - 1 - j] = x
    return head


def shrink(d: dict, n_layers: int = N_LAYERS) -> dict:
    """A config dict with small sizes and the same structure (recursing into sub-configs)."""
    n_orig = _layers(d)
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and n_orig and v and all(str(x).isdigit() for x in v):  # per-layer overrides
            out[k] = {x: shrink(y, n_layers) if isinstance(y, dict) else y for x, y in v.items() if int(x) < n_layers}
        elif isinstance(v, dict) and (k.endswith("config") or "model_type" in v):
            out[k] = shrink(v, n_layers)
        elif k in SIZES and _int(v) and v > SIZES[k]:
            out[k] = SIZES[k]
        elif k in SIZES and isinstance(v, list) and v and all(map(_int, v)):  # one size per layer (Gemma 3n)
            out[k] = [min(x, SIZES[k]) for x in v[:n_layers]]
        elif k in LAYER_KEYS and _int(v):
            out[k] = min(v, n_layers)
        elif isinstance(v, list) and n_orig and len(v) == n_orig and n_orig > n_layers:
            out[k] = _shrink_list(v, n_orig, min(n_orig, n_layers))
        elif k.endswith(("layer_indices", "layer_ids")) and isinstance(v, list) and v and all(map(_int, v)):
            kept = [i for i in v if i < n_layers]  # layers of another kind (e.g. attention among Mamba layers)
            out[k] = kept if kept else [n_layers - 1]
        elif k.endswith("token_id") and _int(v) and v >= VOCAB:
            out[k] = VOCAB - 1 - (sum(map(ord, k)) % 16)
        else:
            out[k] = v
    for kv in ("num_key_value_heads", "num_query_groups"):
        if _int(d.get(kv)) and d.get(kv) == d.get("num_attention_heads"):
            out[kv] = out["num_attention_heads"]  # no grouped-query attention (MLA): keep it so
    experts = any(_int(d.get(k)) and d[k] > 1 for k in EXPERT_KEYS)
    for k in ("num_experts_per_tok", "moe_intermediate_size"):  # default configs that leave them unset
        if experts and k in d and d[k] is None:
            out[k] = SIZES[k]
    return _consistent(out, d)


def _consistent(d: dict, orig: dict) -> dict:
    """Sizes that configs tie together: MLA head dims, Mamba heads, unset head_dim / kv heads."""
    if "qk_rope_head_dim" in d:  # multi-head latent attention: rope and no-rope parts of the head
        d.update(qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16)
        if "qk_head_dim" in d:
            d["qk_head_dim"] = 16
        if "head_dim" in d:  # the rope part (DeepSeek), or the whole head (dots3's sliding layers)
            d["head_dim"] = 8 if orig.get("head_dim") == orig.get("qk_rope_head_dim") else 16
    elif _int(d.get("qk_nope_head_dim")):  # a per-layer override of the no-rope part alone
        d["qk_nope_head_dim"] = 8
    if "head_dim" in d and d["head_dim"] is None and "hidden_size" in d:
        d["head_dim"] = HEAD_DIM
    if "num_key_value_heads" in d and d["num_key_value_heads"] is None and "hidden_size" in d:
        d["num_key_value_heads"] = KV
    expand = d.get("expand") or d.get("mamba_expand")
    if _int(expand) and _int(d.get("hidden_size")):
        for heads, dim in (("mamba_n_heads", "mamba_d_head"), ("n_mamba_heads", "mamba_headdim"), ("num_heads", "head_dim")):
            if _int(d.get(heads)) and dim in d:
                d[dim] = expand * d["hidden_size"] // d[heads]
                break
        if _int(d.get("mamba_d_ssm")):  # Falcon-H1: the SSM width is heads x head dim
            d["mamba_d_ssm"] = expand * d["hidden_size"]
    if _int(d.get("attention_hidden_size")) and _int(d.get("hidden_size")):  # Zamba: attention on [x, x0]
        d["attention_hidden_size"] = 2 * d["hidden_size"]
    kinds = list(dict.fromkeys(d.get("layer_types") or []))
    if _int(d.get("num_kv_shared_layers")) and d["num_kv_shared_layers"] and 2 * len(kinds) == len(d["layer_types"]):
        d["layer_types"] = kinds + kinds  # the shared half reuses the caches of the first half: one per kind
        d["num_kv_shared_layers"] = len(kinds)
    if isinstance(d.get("hybrid_layer_ids"), list) and isinstance(d.get("layers_block_type"), list):
        d["hybrid_layer_ids"] = [i for i, t in enumerate(d["layers_block_type"]) if t == "hybrid"]
    return d


def tiny_config(config: dict):
    """The transformers config object of a tiny model with the structure of `config` (a dict)."""
    from transformers import AutoConfig

    d = shrink({k: v for k, v in config.items() if k not in ("transformers_version", "auto_map", "quantization_config")})
    mt = d.pop("model_type")
    return AutoConfig.for_model(mt, **d)


def build(cfg, seed: int = 0, dtype=torch.float64):
    """A tiny model of `cfg` with weights drawn so that its logits and activations are informative."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # refuse a config whose "tiny" instance is not (a size key bake does not shrink)
        try:
            n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
        except (TypeError, ValueError):
            n = 0
    if n > MAX_PARAMS:
        raise ValueError(f"the tiny instance of this config would have {n:,} parameters (a size bake does not shrink)")
    torch.manual_seed(seed)
    kw = {"experts_implementation": "eager"}
    try:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, **kw)
    except (TypeError, ValueError):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                if p.ndim == 1:
                    p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
                else:
                    p.normal_(0, 0.3 / max(1, p.shape[-1]) ** 0.5 * 4, generator=g)
    return model.eval()


def save(config: dict, dest, seed: int = 0, dtype=torch.float32):
    """Write a tiny random checkpoint with the structure of `config` to folder `dest` (safetensors)."""
    cfg = tiny_config(config)
    model = build(cfg, seed=seed, dtype=dtype)
    model.save_pretrained(dest, safe_serialization=True)
    return dest
