"""Tiny random models of every supported family, built from configs (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

# name -> (model_type, config overrides, sharded)
TINY = {
    "llama": ("llama", dict(tie_word_embeddings=True), True),
    "llama-untied": ("llama", dict(tie_word_embeddings=False), False),
    "mistral": ("mistral", dict(sliding_window=None), True),
    "mistral-window": ("mistral", dict(sliding_window=16), False),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True), False),
    "qwen3": ("qwen3", dict(head_dim=8), True),
    "gemma3": ("gemma3_text", dict(head_dim=8, tie_word_embeddings=True, sliding_window=8,
                                   query_pre_attn_scalar=8), False),
    "gpt2": ("gpt2", dict(vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64,
                          tie_word_embeddings=True), True),
    "mixtral": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2), False),
}


def build(name: str, dest: Path, seed: int = 0) -> Path:
    """Save tiny model `name` to `dest` (safetensors; sharded for some) and return the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, over, sharded = TINY[name]
    kw = {} if model_type == "gpt2" else dict(COMMON)
    kw.update(over)
    cfg = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init is nearly uniform at this size; make logits informative
        for pname, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)  # norm scales and biases away from 1 / 0
            elif p.ndim >= 2:
                p.normal_(0, 0.3)
    model.save_pretrained(dest, max_shard_size="40KB" if sharded else "1GB")
    return dest
