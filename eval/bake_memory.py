"""Peak memory and speed of the streaming rewrite on a checkpoint much larger than one shard.

    .venv/bin/python eval/bake_memory.py [--hidden 2048] [--layers 8] [--shard-mb 256]

Writes a random Llama checkpoint (sharded safetensors, written shard by shard, never whole in
memory), then, in a fresh process, plans and rewrites an `ablate` (every residual writer, untied
embeddings) plus a `steer` (a new bias) into it, and prints the model size, the largest shard,
the rewrite time and the peak RSS of that process. Verification is not part of this figure (it
loads the model); the point is that the bake itself is bounded by a shard, not the model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from bake import api
from bake.rewrite import rewrite
r = {recipe!r}
t = time.time()
p = api.plan(r, progress=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = Path({out!r}); out.mkdir()
stats = rewrite(p, out, progress=False)
print(json.dumps({{"seconds": time.time() - t, "edited": len(stats), "base_rss_mb": base,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def write_checkpoint(folder: Path, hidden: int, layers: int, inter: int, vocab: int, shard_mb: int) -> int:
    folder.mkdir(parents=True)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": hidden // 128,
           "num_key_value_heads": hidden // 128, "vocab_size": vocab, "tie_word_embeddings": True,
           "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(cfg))
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        pre = f"model.layers.{i}."
        shapes.update({pre + "self_attn.q_proj.weight": (hidden, hidden), pre + "self_attn.k_proj.weight": (hidden, hidden),
                       pre + "self_attn.v_proj.weight": (hidden, hidden), pre + "self_attn.o_proj.weight": (hidden, hidden),
                       pre + "mlp.gate_proj.weight": (inter, hidden), pre + "mlp.up_proj.weight": (inter, hidden),
                       pre + "mlp.down_proj.weight": (hidden, inter), pre + "input_layernorm.weight": (hidden,),
                       pre + "post_attention_layernorm.weight": (hidden,)})
    shards, cur, size, total = [], {}, 0, 0
    for name, shape in shapes.items():
        n = torch.Size(shape).numel() * 4
        if cur and size + n > shard_mb << 20:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shape
        size += n
        total += n
    shards.append(cur)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: torch.randn(s) * 0.02 for n, s in shard.items()}, str(folder / fname))
        weight_map.update({n: fname for n in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-mb", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.time()
        total = write_checkpoint(tmp / "model", args.hidden, args.layers, args.inter, args.vocab, args.shard_mb)
        largest = max(p.stat().st_size for p in (tmp / "model").glob("*.safetensors"))
        print(f"model: {total / 2**20:.0f} MiB float32 in {len(list((tmp / 'model').glob('*.safetensors')))} shards "
              f"(largest {largest / 2**20:.0f} MiB), written in {time.time() - t:.0f} s")
        torch.manual_seed(0)
        save_file({"v": torch.randn(args.hidden)}, str(tmp / "v.safetensors"))
        recipe = {"model": str(tmp / "model"), "interventions": [
            {"kind": "steer", "layers": [args.layers // 2], "vector": str(tmp / "v.safetensors"), "scale": 2.0},
            {"kind": "ablate", "direction": str(tmp / "v.safetensors")}]}
        code = CHILD.format(root=str(ROOT), recipe=recipe, out=str(tmp / "out"))
        res = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        print(f"bake (plan + streaming rewrite, {res['edited']} tensors edited or added): {res['seconds']:.1f} s, "
              f"{total / 2**20 / res['seconds']:.0f} MiB/s, peak RSS {res['peak_rss_mb']:.0f} MiB "
              f"({res['peak_rss_mb'] / (total / 2**20):.0%} of the model size; {res['base_rss_mb']:.0f} MiB of it "
              f"before the rewrite started: Python, torch, transformers)")


if __name__ == "__main__":
    main()
