"""`bake learn aura|steer|refusal`: data in, an artifact file out (and a summary to print).

Each function has the CLI's options as keyword arguments, writes one safetensors file that a
recipe can use directly, and returns a JSON-able summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from safetensors.torch import save_file

from ..errors import BakeError
from ..artifacts import imports
from ..model.device import parse_size
from . import collect as learn
from . import data as data_mod
from . import refusal

# part of the cache key of learned artifacts: bump it when a learner computes something else from the
# same options (2: AURA responses in float64 with positions counted over real tokens)
LEARNER_VERSION = 2


@dataclass(frozen=True)
class Opt:
    """A learner option, declared once in the learner's signature (`Annotated[type, Opt(...)]`): the
    API's keyword argument with its default, `bake learn WHAT --option` (with this help), and the
    options a recipe's `{learn: {...}}` accepts."""

    help: str
    choices: tuple = ()


A = Annotated
Model = A[str, Opt("the model: a folder, .gguf, Hub id or builtin:NAME")]
Out = A[str, Opt("the artifact file to write (.safetensors)")]
MaxMemory = A[str | None, Opt("memory the model may take (e.g. 8GB, 512MiB); a larger model is streamed from "
                              "disk, one module at a time, each batch reading it once (default: 60% of the "
                              "memory available)")]
RUN_ARGS = ("progress", "runner", "trust_remote_code")  # given by the caller, not options


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # str, int, float or bool
    many: bool  # a list of values
    default: object  # inspect.Parameter.empty: required
    opt: Opt


def options(fn) -> list[Option]:
    """A learner's options, in its signature's order (the caller's run arguments left out)."""
    import inspect
    import typing

    hints = typing.get_type_hints(fn, include_extras=True)
    out = []
    for name, p in inspect.signature(fn).parameters.items():
        if name in RUN_ARGS:
            continue
        hint = hints[name]
        opt = next(m for m in hint.__metadata__ if isinstance(m, Opt))
        base = typing.get_args(hint)[0]
        many = typing.get_origin(base) in (tuple, list)
        kinds = [t for t in typing.get_args(base) if t not in (type(None), Ellipsis)] or [base]
        out.append(Option(name, kinds[0], many, p.default, opt))
    return out


LEARNERS = {"aura": "learn_aura", "steer": "learn_steer", "refusal": "learn_refusal", "sae": "learn_sae",
            "lineas": "learn_lineas"}


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss where /proc is missing, which on Linux carries a
    parent's peak over exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_artifact(what: str):
    """The `refuse` rule of `bake learn WHAT --out X --force`: X may be replaced only when `bake learn`
    wrote it (an SAE folder whose cfg.json says so; a .safetensors file whose metadata names the
    format `learn WHAT` writes)."""
    formats = {"aura": "bake-aura", "steer": "bake-steer", "refusal": "bake-refusal", "lineas": "bake-lineas"}

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


def learn_aura(
        model: Model, data: A[str, Opt("CSV/TSV/JSONL/JSON file or a Hub dataset id[:split], with text and 0/1 labels")],
        out: Out,
        modules: A[tuple[str, ...], Opt("module name patterns whose output units are scored")] = (
            "model.layers.*.mlp.up_proj",),
        text_column: A[str | None, Opt("the data's text column (default: guessed)")] = None,
        label_column: A[str | None, Opt("the data's label column (default: guessed)")] = None,
        layout: A[str | None, Opt("a named column layout", choices=("jigsaw", "davidson"))] = None,
        pooling: A[str, Opt("how a unit's response is pooled over a text's tokens",
                            choices=("max", "mean", "last"))] = "max",
        max_length: A[int, Opt("tokens per text at most")] = 128,
        batch_size: A[int, Opt("texts per forward pass")] = 32,
        score: A[str, Opt("how well a unit detects the positive class",
                          choices=("auroc", "aucpr", "cohens_d", "point_biserial"))] = "auroc",
        rule: A[str, Opt("score -> alpha: aura (1 - Gini from AUROC), damp (--value), det0 (0 for detectors)",
                         choices=("aura", "damp", "det0"))] = "aura",
        top_k: A[int | None, Opt("damp only the k best units")] = None,
        top_fraction: A[float | None, Opt("damp only this fraction of the best units")] = None,
        per_layer: A[bool, Opt("top-k per module instead of globally")] = False,
        value: A[float, Opt("alpha of damped units (rule damp)")] = 0.5,
        strength: A[float, Opt("alpha -> 1 - s (1 - alpha)")] = 1.0,
        zscore: A[bool, Opt("z-score the ranking score across modules")] = False,
        limit: A[int | None, Opt("use a seeded, stratified sample of this many examples")] = None,
        statedict: A[str | None, Opt("also export an ml-aura .statedict folder here")] = None,
        dtype: A[str, Opt("compute dtype of the forward passes: float64 gives the same alphas for any batch size and "
                          "padding; float32 is about 2x faster on CPU, and near-ties may swap ranks",
                          choices=("float64", "float32"))] = "float64",
        means: A[bool, Opt("also store each unit's mean response on the negative texts (mu/<module>), which a "
                           "recipe's `mu:` reads for the mean-shift form")] = False,
        progress=True, runner=None, trust_remote_code=False, max_memory: MaxMemory = None) -> dict:
    """AURA alphas from labelled texts (AUROC of each unit as a detector)."""
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


def learn_steer(
        model: Model, out: Out,
        positive: A[str | None, Opt("texts showing the behaviour to add (one per line, or a data file)")] = None,
        negative: A[str | None, Opt("texts showing its opposite")] = None,
        data: A[str | None, Opt("instead of --positive/--negative: one labelled data file (label 1: the behaviour "
                                "to add, 0: its opposite; --away swaps them)")] = None,
        away: A[bool, Opt("with --data: learn the vector away from label 1 (0 minus 1), e.g. to remove toxicity")] = False,
        layers: A[str, Opt("the blocks to learn at: 8:16, 3,5 or all")] = "all",
        site: A[str, Opt("where the recipe's steer adds it (its `site:`): learned on the residual stream there",
                         choices=("block_out", "attn_out", "mlp_out"))] = "block_out",
        method: A[str, Opt("difference of means, or its first principal component",
                           choices=("mean-diff", "pca"))] = "mean-diff",
        position: A[str, Opt("the token read: last, mean, or -k (k-th from the end)")] = "last",
        normalize: A[str | None, Opt("unit: norm 1; resid: the mean norm of the residual stream there",
                                     choices=("unit", "resid"))] = None,
        chat: A[bool, Opt("format texts with the chat template first")] = False,
        from_gguf: A[str | None, Opt("import a llama.cpp / repeng control vector (direction.N -> block N)")] = None,
        from_sae: A[str | None, Opt("import a SAELens SAE folder's decoder row (with --feature)")] = None,
        feature: A[int | None, Opt("the SAE latent whose decoder row --from-sae imports")] = None,
        from_steering_vectors: A[str | None, Opt("import a steering-vectors .pt (layer_activations)")] = None,
        progress=True, runner=None, trust_remote_code=False, max_memory: MaxMemory = None) -> dict:
    """A steering vector from contrasting texts, or imported: learned (mean-diff / pca) or imported
    (GGUF control vector, SAELens row, steering-vectors).
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
        if data is not None and (positive or negative):
            raise BakeError("learn steer: give --data (one labelled file) or --positive and --negative, not both")
        if data is None and (not positive or not negative):
            raise BakeError("learn steer needs --positive and --negative, or --data (a labelled file), "
                            "or an import: --from-gguf/--from-sae")
        if away and data is None:
            raise BakeError("learn steer: --away reverses --data's labels; with --positive/--negative swap the files")
        if data is not None:
            pos, neg = _by_label(data_mod.load(data, need_labels=True), away)
        else:
            pos, neg = data_mod.load(positive).texts, data_mod.load(negative).texts
        runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
        if isinstance(position, str) and position.lstrip("-").isdigit():
            position = int(position)
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


def _by_label(ds, away: bool) -> tuple[list[str], list[str]]:
    """(texts to move toward, texts to move away from) of a labelled data set: 1 and 0, swapped by `away`."""
    ones, zeros = ds.of(1), ds.of(0)
    if not ones or not zeros:
        raise BakeError(f"{ds.source}: a steering vector contrasts two sets; the data has no label-"
                        f"{0 if ones else 1} texts")
    return (zeros, ones) if away else (ones, zeros)


def learn_refusal(
        model: Model, harmful: A[str, Opt("harmful instructions (JSON list, JSONL, text or a Hub dataset)")],
        harmless: A[str, Opt("harmless instructions")], out: Out,
        harmful_val: A[str | None, Opt("harmful instructions the direction is chosen on (default: a quarter of "
                                       "--harmful)")] = None,
        harmless_val: A[str | None, Opt("harmless instructions the direction is chosen on")] = None,
        kl_max: A[float, Opt("the most KL on harmless prompts a chosen direction may cost")] = 0.1,
        prune_last: A[float, Opt("discard candidates in this last fraction of the layers")] = 0.2,
        limit: A[int | None, Opt("sample this many training instructions of each kind")] = None,
        val_limit: A[int | None, Opt("sample this many validation instructions of each kind")] = None,
        projected: A[bool, Opt("remove the harmless-mean component")] = False,
        layers: A[str | None, Opt("only these candidate layers (e.g. 4:24)")] = None,
        progress=True, runner=None, trust_remote_code=False, max_memory: MaxMemory = None) -> dict:
    """The refusal direction (difference in means, chosen on validation)."""
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


def learn_sae(
        model: Model, out: A[str, Opt("a folder (cfg.json + sae_weights.safetensors)")],
        data: A[tuple[str, ...], Opt("text files or Hub dataset ids (every token is a sample)")],
        layer: A[int, Opt("the block whose output (hook_resid_post) it reads")],
        d_sae: A[int, Opt("number of features")] = 1024,
        k: A[int, Opt("active features per token (TopK)")] = 16,
        continue_tokens: A[int, Opt("extend each text by this many tokens sampled from the model itself "
                                    "(seeded)")] = 0,
        max_length: A[int, Opt("tokens per text at most")] = 128,
        steps: A[int, Opt("training steps")] = 3000,
        batch_size: A[int, Opt("tokens per training step")] = 512,
        lr: A[float, Opt("learning rate (Adam)")] = 1e-3,
        seed: A[int, Opt("seed of the initialization and the token order")] = 0,
        text_column: A[str | None, Opt("the data's text column (default: guessed)")] = None,
        progress=True, runner=None, trust_remote_code=False, max_memory: MaxMemory = None) -> dict:
    """Train a TopK SAE on one block's output (every token of `data`, optionally each text continued
    by the model itself) and save it in SAELens's layout into the folder `out`."""
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


def learn_lineas(
        model: Model, data: A[str, Opt("CSV/TSV/JSONL/JSON file or a Hub dataset id[:split], with text and 0/1 labels: "
                                       "label 1 is the source (the behaviour to move away from), 0 the target")],
        out: Out,
        modules: A[tuple[str, ...], Opt("module name patterns whose input gets the map (a block's MLP: the "
                                        "normalized state its input projections read, where the paper places it)")] = (
            "model.layers.*.mlp",),
        text_column: A[str | None, Opt("the data's text column (default: guessed)")] = None,
        label_column: A[str | None, Opt("the data's label column (default: guessed)")] = None,
        layout: A[str | None, Opt("a named column layout", choices=("jigsaw", "davidson"))] = None,
        samples: A[int, Opt("texts of each side, a seeded sample (the paper: 32)")] = 32,
        steps: A[int, Opt("optimization steps, one forward and one backward pass each (the paper: 1000)")] = 1000,
        batch_size: A[int, Opt("texts of each side per step")] = 32,
        lr: A[float, Opt("learning rate (cosine-annealed)")] = 0.1,
        optimizer: A[str, Opt("sgd: the paper's; adam: steps that do not scale with the loss (whose size depends on "
                              "the model's activations)", choices=("sgd", "adam"))] = "sgd",
        final_lr: A[float, Opt("the annealed learning rate at the end, as a fraction of --lr")] = 0.01,
        l1: A[float, Opt("sparsity: soft-threshold of each unit's (scale - 1) and shift (lasso)")] = 0.0,
        group: A[float, Opt("sparsity: shrink of each module's map as a group (group lasso)")] = 0.0,
        power: A[int, Opt("the Wasserstein distance's power p (|sorted x - sorted y|^p)", choices=(1, 2))] = 2,
        pooling: A[str, Opt("how a text's activations are pooled over its tokens",
                            choices=("mean", "max", "last"))] = "mean",
        max_length: A[int, Opt("tokens per text at most")] = 64,
        seed: A[int, Opt("seed of the samples and of each step's batch")] = 0,
        progress=True, runner=None, trust_remote_code=False, max_memory: MaxMemory = None) -> dict:
    """LinEAS maps (a per-unit scale and shift on the input of each matched module), fitted end to end
    so that the source texts' activations, mapped, match the target texts' (sliced-Wasserstein loss)."""
    import random

    from . import lineas

    t0 = time.time()
    for name, v in (("--samples", samples), ("--steps", steps), ("--batch-size", batch_size),
                    ("--max-length", max_length)):
        if not isinstance(v, int) or v < 1:
            raise BakeError(f"learn lineas: {name} {v!r}: give a positive integer")
    if not (lr > 0 and 0 < final_lr <= 1 and l1 >= 0 and group >= 0):
        raise BakeError("learn lineas: need --lr > 0, 0 < --final-lr <= 1, --l1 >= 0 and --group >= 0")
    ds = data_mod.load(data, text_column, label_column, layout, need_labels=True)
    rng = random.Random(seed)
    sides = []
    for label, what in ((1, "source (label 1)"), (0, "target (label 0)")):
        texts = ds.of(label)
        if not texts:
            raise BakeError(f"{ds.source}: no {what} texts; LinEAS maps the source texts' activations onto the "
                            "target texts', so it needs both labels")
        sides.append(rng.sample(texts, min(samples, len(texts))))
    source, target = sides
    runner = runner or learn.Runner(model, trust_remote_code, parse_size(max_memory))
    if runner.streamed:
        raise BakeError(f"learn lineas: {runner.ckpt.spec} does not fit the memory budget, and LinEAS backpropagates "
                        "through the whole model each step, which bake does not stream; give it more memory "
                        "(--max-memory) or a machine where the model fits")
    maps, figures = lineas.fit_model(runner, list(modules), source, target, steps=steps, batch_size=batch_size,
                                     lr=lr, final_lr=final_lr, l1=l1, group=group, p=power, seed=seed,
                                     optimizer=optimizer, pooling=pooling, max_length=max_length, progress=progress)
    per_step = figures.pop("seconds_fit") / steps
    tensors = {}
    for m, (scale, shift) in maps.items():
        tensors[f"scale/{m}"] = scale.contiguous()
        tensors[f"shift/{m}"] = shift.contiguous()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"format": "bake-lineas", "modules": ",".join(maps),
                                           "figures": json.dumps(figures)})
    return {"out": str(out), "modules": len(maps), "source": len(source), "target": len(target), **figures,
            "steps": steps, "seconds_total": round(time.time() - t0, 1),
            "seconds_per_step": round(per_step, 3), "peak_rss_mb": round(_peak_rss_mb())}


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
