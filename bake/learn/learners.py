"""`bake learn aura|steer|refusal`: data in, an artifact file out (and a summary to print).

Each function has the CLI's options as keyword arguments, writes one safetensors file that a
recipe can use directly, and returns a JSON-able summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import BakeError
from ..artifacts import imports
from . import collect as learn
from . import data as data_mod
from . import refusal

# part of the cache key of learned artifacts: bump it when a learner computes something else from the
# same options (2: AURA responses in float64 with positions counted over real tokens)
LEARNER_VERSION = 2


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss where /proc is missing, which on Linux carries a
    parent's peak over exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_size(size: str | int | None) -> int | None:
    """Bytes from `--max-memory` ("2GB", "512MiB", "1.5G" or a number of bytes)."""
    import re

    if size is None or isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*", str(size), re.IGNORECASE)
    if not m:
        raise BakeError(f"--max-memory {size!r}: give a size such as 8GB, 512MiB or a number of bytes")
    unit = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * unit ** "_KMGT".index(m.group(2).upper() or "_"))


def own_artifact(what: str):
    """The `refuse` rule of `bake learn WHAT --out X --force`: X may be replaced only when `bake learn`
    wrote it (an SAE folder whose cfg.json says so; a .safetensors file whose metadata names the
    format `learn WHAT` writes)."""
    formats = {"aura": "bake-aura", "steer": "bake-steer", "refusal": "bake-refusal"}

    def refuse(path: Path) -> str | None:
        if what == "sae":
            try:
                cfg = json.loads((path / "cfg.json").read_text())
                by = (cfg.get("metadata") or {}).get("trained_by")
            except (OSError, ValueError, AttributeError):
                by = None
            extra = {f.name for f in path.iterdir()} - {"cfg.json", "sae_weights.safetensors"}
            if by != "bake learn sae":
                return "its cfg.json does not say it trained it"
            return f"it holds more than an SAE: {', '.join(sorted(extra)[:3])}" if extra else None
        try:
            from ..model.source import read_metadata

            fmt = read_metadata(path).get("format")
        except BakeError:
            fmt = None
        if fmt == formats[what]:
            return None
        return f"its metadata says format {fmt!r}, not {formats[what]!r}" if fmt else "it holds no bake metadata"
    refuse.command = f"bake learn {what}"
    return refuse


def learn_aura(model, data, out, modules=("model.layers.*.mlp.up_proj",), text_column=None, label_column=None,
               layout=None, pooling="max", max_length=128, batch_size=32, score="auroc", rule="aura", top_k=None,
               top_fraction=None, per_layer=False, value=0.5, strength=1.0, zscore=False, limit=None,
               statedict=None, dtype="float64", means=False, progress=True, runner=None, trust_remote_code=False,
               max_memory=None) -> dict:
    t0 = time.time()
    for name, v in (("--batch-size", batch_size), ("--max-length", max_length)):
        if not isinstance(v, int) or v < 1:
            raise BakeError(f"learn aura: {name} {v!r}: give a positive integer")
    ds = data_mod.load(data, text_column, label_column, layout, need_labels=True, limit=limit)
    if len(set(ds.labels)) < 2:
        raise BakeError(f"{ds.source}: all {len(ds.labels)} examples have label {ds.labels[0]} (one class); AURA ranks "
                        "units by how well they separate the two classes, so it needs examples of both")
    runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
    mods = runner.modules(list(modules))
    t1 = time.time()
    resp = runner.responses(ds.texts, mods, pooling, max_length, batch_size, progress, getattr(torch, dtype))
    t2 = time.time()
    alphas, scores, aurocs = learn.aura_alphas(resp, ds.labels, rule=rule, score=score, k=top_k,
                                               fraction=top_fraction, per_layer=per_layer, value=value,
                                               strength=strength, zscore=zscore)
    y = torch.tensor(ds.labels)  # with `means`, the mean-shift target of aura's `mu:` is stored beside the alphas
    mu = {m: x[y == 0].mean(0) for m, x in resp.items()} if means else None
    learn.save_alphas(Path(out), alphas, aurocs, scores, score, mu)
    if statedict:
        learn.export_statedict(alphas, Path(statedict))
    flat = torch.cat([a for a in aurocs.values()])
    names = [f"{m}[{j}]" for m, a in aurocs.items() for j in range(a.numel())]
    top = flat.topk(min(10, flat.numel()))
    return {
        "out": str(out), "examples": len(ds.texts), "positives": int(sum(ds.labels)), "modules": len(mods),
        "units": int(flat.numel()), "units_auroc_gt_0.5": int((flat > 0.5).sum()),
        "units_damped": int(sum(int((a < 1).sum()) for a in alphas.values())),
        "top10": [{"unit": names[i], "auroc": round(v, 4)} for v, i in zip(top.values.tolist(), top.indices.tolist())],
        "seconds_total": round(time.time() - t0, 1), "seconds_responses": round(t2 - t1, 1),
        "sentences_per_s": round(len(ds.texts) / max(t2 - t1, 1e-9), 1), "peak_rss_mb": round(_peak_rss_mb()),
        "dtype": dtype, "streamed": runner.streamed, "processes": learn.process_count(),
    }


def learn_steer(model, out, positive=None, negative=None, layers="all", site="block_out", method="mean-diff",
                position="last", normalize=None, chat=False, from_gguf=None, from_sae=None, feature=None,
                from_steering_vectors=None, progress=True, runner=None, trust_remote_code=False,
                max_memory=None) -> dict:
    """Learn (mean-diff / pca) or import (GGUF control vector, SAELens row, steering-vectors) a vector.
    `site`: where in each block the vector is meant to be added (a recipe's `steer` site): learned on
    the residual stream there (block_out and mlp_out: the block's output; attn_out: the stream right
    after the attention write). Imports come as their tools wrote them, at block outputs."""
    if from_gguf or from_sae or from_steering_vectors:
        from ..model.config import hidden_size, num_layers
        from ..model.source import Checkpoint, resolve_model

        ckpt = model if isinstance(model, Checkpoint) else (resolve_model(str(model)) if model else None)
        n = num_layers(ckpt.config) if ckpt else None
        d = hidden_size(ckpt.config) if ckpt else None
        if from_gguf:
            vecs = imports.read_control_vector(Path(from_gguf))
        elif from_sae:
            if feature is None:
                raise BakeError("--from-sae needs --feature N (the SAE latent whose decoder row to use)")
            layer, v = imports.read_sae_row(Path(from_sae), int(feature))
            vecs = {layer: v}
        else:
            vecs = imports.read_steering_vectors(Path(from_steering_vectors))
        if n is None:
            raise BakeError("--model is needed to size the [num_layers, hidden] tensor")
        full = imports.to_steering_tensor(vecs, n, d)
        layers_used = sorted(vecs)
        if site != "block_out":
            raise BakeError(f"--site {site}: an imported vector was made at block outputs; import it with the "
                            "default site (block_out) and steer at block_out")
    else:
        if not positive or not negative:
            raise BakeError("learn steer needs --positive and --negative (or an import: --from-gguf/--from-sae)")
        runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
        if isinstance(position, str) and position.lstrip("-").isdigit():
            position = int(position)
        pos = data_mod.load(positive).texts
        neg = data_mod.load(negative).texts
        if chat:
            pos, neg = [runner.chat(t) for t in pos], [runner.chat(t) for t in neg]
        layers_used = learn.parse_layers(layers, runner.n_layers)
        a = runner.residuals(pos, layers_used, position, progress=progress, site=site)
        b = runner.residuals(neg, layers_used, position, progress=progress, site=site)
        if method == "mean-diff":
            v = learn.mean_diff(a, b)
        elif method == "pca":
            v = learn.pca_diff(a, b)
        else:
            raise BakeError(f"unknown method {method!r}; use mean-diff or pca")
        v = learn.normalize(v, normalize, torch.cat([a, b]))
        full = imports.to_steering_tensor(dict(zip(layers_used, v.float())), runner.n_layers)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({"vector": full.float().contiguous()}, str(out),
              metadata={"format": "bake-steer", "layers": ",".join(map(str, layers_used)), "site": site})
    return {"out": str(out), "layers": layers_used, "site": site,
            "norms": {i: round(full[i].norm().item(), 4) for i in layers_used}}


def learn_refusal(model, harmful, harmless, out, harmful_val=None, harmless_val=None, kl_max=0.1,
                  prune_last=0.2, limit=None, val_limit=None, projected=False, layers=None, progress=True,
                  runner=None, trust_remote_code=False,
                  max_memory=None) -> dict:
    runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
    hf = data_mod.load(harmful, limit=limit).texts
    hl = data_mod.load(harmless, limit=limit).texts
    cands, positions = refusal.candidate_directions(runner, hf, hl, progress)
    hf_val = data_mod.load(harmful_val, limit=val_limit).texts if harmful_val else hf[: max(8, len(hf) // 4)]
    hl_val = data_mod.load(harmless_val, limit=val_limit).texts if harmless_val else hl[: max(8, len(hl) // 4)]
    best, rows = refusal.select(runner, cands, positions, hf_val, hl_val, kl_max, prune_last,
                                learn.parse_layers(layers, runner.n_layers) if layers else None, progress)
    direction = best.pop("direction")
    if projected:
        mean_hl = runner.residuals([runner.chat(t) for t in hl], [best["layer"]], best["position"],
                                   progress=False).mean(0)[0]
        direction = refusal.project_harmless(direction, mean_hl)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({"direction": direction.float().contiguous(),
               "candidates": cands.float().contiguous()}, str(out),
              metadata={"format": "bake-refusal", "layer": str(best["layer"]), "position": str(best["position"])})
    return {"out": str(out), "chosen": best, "candidates": rows}


def learn_sae(model, out, data, layer, d_sae=1024, k=16, continue_tokens=0, max_length=128, steps=3000,
              batch_size=512, lr=1e-3, seed=0, text_column=None, progress=True, runner=None,
              trust_remote_code=False, max_memory=None) -> dict:
    """Train a TopK SAE on the output of block `layer` (every token of `data`, optionally each text
    continued by the model itself) and save it in SAELens's layout into the folder `out`."""
    from ..artifacts import sae as sae_format
    from .sae import train

    runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
    if not 0 <= int(layer) < runner.n_layers:
        raise BakeError(f"learn sae: layer {layer} is out of range; the model has {runner.n_layers} blocks")
    if not (isinstance(d_sae, int) and isinstance(k, int) and 1 <= k <= d_sae):
        raise BakeError(f"learn sae: need integers 1 <= k <= d_sae, got k={k!r}, d_sae={d_sae!r}")
    if not (int(steps) >= 1 and int(batch_size) >= 1 and float(lr) > 0 and int(continue_tokens) >= 0
            and int(max_length) >= 1):
        raise BakeError("learn sae: --steps, --batch-size and --max-length must be >= 1, --lr > 0, "
                        "--continue-tokens >= 0")
    texts = [t for spec in ([data] if isinstance(data, str) else data)
             for t in data_mod.load(spec, text_column=text_column).texts]
    if continue_tokens:
        texts = runner.continue_texts(texts, int(continue_tokens), seed=seed, progress=progress)
    x, _ = runner.token_states(texts, int(layer), max_length=max_length, progress=progress)
    if len(x) < 10 * k:
        raise BakeError(f"learn sae: {len(x)} tokens are too few to train an SAE with k={k}; give more text "
                        "(or continue_tokens: N)")
    hook = f"blocks.{int(layer)}.hook_resid_post"
    sae, figures = train(x, d_sae, k, steps=steps, batch_size=batch_size, lr=lr, seed=seed, hook_name=hook,
                         progress=progress)
    sae.extra = {"metadata": {"model_name": runner.ckpt.spec, "hook_name": hook, "trained_by": "bake learn sae",
                              "texts": len(texts), "training": figures}}
    sae_format.write(sae, Path(out))
    return {"out": str(out), "hook_name": hook, "texts": len(texts), **figures}


learn_sae.folder = True  # its artifact is a folder (SAELens layout), not one .safetensors file


# --- learning inside a recipe (`alphas: {learn: {...}}`) -----------------------------------------

PATH_OPTS = ("data", "positive", "negative", "harmful", "harmless", "harmful_val", "harmless_val",
              "from_gguf", "from_sae", "from_steering_vectors")


def learner(name: str):
    """A kind's learner: a function of this module, or `package.module:function` (a plug-in's own)."""
    if ":" in name:
        import importlib

        mod, _, fn = name.partition(":")
        return getattr(importlib.import_module(mod), fn)
    return globals()[name]
