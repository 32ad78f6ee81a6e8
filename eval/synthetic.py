"""Synthetic Llama-shaped checkpoints with random weights, written shard by shard (never whole in
memory), for the out-of-core benchmark and its small version in the tests.

    write_llama(folder, hidden=4096, layers=32, inter=14336, vocab=128256, shard_mb=4096)  # ~16 GB bf16
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

PRESETS = {  # size -> Llama-shaped (hidden, layers, intermediate, vocab); bfloat16 bytes in brackets
    "1": (2048, 16, 5632, 32000),  # ~1.2 GB
    "4": (3072, 28, 8192, 128256),  # ~6.4 GB (Llama 3.2 3B's shape)
    "16": (4096, 32, 14336, 128256),  # ~16.1 GB (Llama 3.1 8B's shape)
}


def shapes(hidden: int, layers: int, inter: int, vocab: int, heads: int | None = None, kv: int | None = None) -> dict:
    heads = heads or max(1, hidden // 128)
    kv = kv or max(1, heads // 4)
    hd = hidden // heads
    out = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        out.update({pre + "input_layernorm.weight": (hidden,), pre + "self_attn.q_proj.weight": (hidden, hidden),
                    pre + "self_attn.k_proj.weight": (kv * hd, hidden), pre + "self_attn.v_proj.weight": (kv * hd, hidden),
                    pre + "self_attn.o_proj.weight": (hidden, hidden), pre + "post_attention_layernorm.weight": (hidden,),
                    pre + "mlp.gate_proj.weight": (inter, hidden), pre + "mlp.up_proj.weight": (inter, hidden),
                    pre + "mlp.down_proj.weight": (hidden, inter)})
    out.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    return out


def write_llama(folder: Path, hidden: int, layers: int, inter: int, vocab: int, shard_mb: int,
                dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> int:
    """Write the checkpoint (untied embeddings, sharded like `save_pretrained`); return its bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    heads = max(1, hidden // 128)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": max(1, heads // 4), "vocab_size": vocab, "tie_word_embeddings": False,
           "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "rope_theta": 500000.0,
           "dtype": str(dtype).removeprefix("torch.")}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    size = torch.finfo(dtype).bits // 8
    shards, cur, cur_bytes, total = [], {}, 0, 0
    for name, shape in shapes(hidden, layers, inter, vocab).items():
        n = torch.Size(shape).numel() * size
        if cur and cur_bytes + n > shard_mb << 20:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name] = shape
        cur_bytes += n
        total += n
    shards.append(cur)
    g = torch.Generator().manual_seed(seed)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (torch.ones(s) if len(s) == 1 else torch.randn(s, generator=g) * s[-1] ** -0.5).to(dtype)
                   for n, s in shard.items()}
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        del tensors
        weight_map.update({n: fname for n in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=1))
    return total
