"""LinEAS (Rodriguez et al., "Linear End-to-end Activation Steering", NeurIPS 2025): the math.

A per-unit affine map `scale * x + shift` at each intervened module, fitted end to end: the source
texts run through the model with every map attached, so a layer's map is fitted on activations that
already went through the earlier layers' maps, and one loss over all layers is backpropagated once
per step. The loss is the sliced-Wasserstein distance on the canonical directions (each unit's 1-D
Wasserstein distance between the mapped source and the target activations, each text pooled over
its tokens), averaged over units and over layers. Sparsity is a sparse group lasso on
(scale - 1, shift), applied as a proximal step after each gradient step (soft-threshold per unit,
then a shrink of each layer's vector as a group). Small pure functions; the loop is `fit`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import BakeError


def quantiles(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k sorted sample quantiles of each column of x [n, N] at levels (i + 1/2) / k -> [k, N]
    (k = n: x sorted; k < n: the order statistics at those levels, so unequal sets compare)."""
    n = x.shape[0]
    idx = ((torch.arange(k, dtype=torch.float64) + 0.5) * n / k).floor().long().clamp_max(n - 1)
    return x.sort(0).values[idx]


def wasserstein_units(x: torch.Tensor, y: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Each unit's 1-D Wasserstein distance to the power p between samples x [n, N] and y [m, N] -> [N]:
    the mean of |sorted x - sorted y|^p over min(n, m) matched quantiles (exact for n = m)."""
    if x.ndim != 2 or y.ndim != 2:
        raise BakeError(f"lineas: samples must be [samples, units]; got {list(x.shape)} and {list(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise BakeError(f"lineas: an empty sample set ({x.shape[0]} source, {y.shape[0]} target samples)")
    if x.shape[1] != y.shape[1]:
        raise BakeError(f"lineas: source and target widths differ ({x.shape[1]} vs {y.shape[1]} units)")
    k = min(x.shape[0], y.shape[0])
    return (quantiles(x, k) - quantiles(y, k)).abs().pow(p).mean(0)


def sliced_loss(source: dict, target: dict, p: int = 2) -> torch.Tensor:
    """LinEAS's loss: per-unit Wasserstein (the sliced distance on the canonical directions) averaged over
    units, then over the modules. source, target: {module: [samples, units]}."""
    missing = set(source) ^ set(target)
    if missing:
        raise BakeError(f"lineas: modules without both source and target samples: {sorted(missing)[:3]}")
    return torch.stack([wasserstein_units(source[m], target[m], p).mean() for m in source]).mean()


def prox(scale: torch.Tensor, shift: torch.Tensor, tau: float, l1: float, group: float) -> None:
    """The sparse group lasso's proximal step on one module's map, in place: (scale - 1) and shift each
    soft-thresholded at tau * l1 per unit, then each shrunk as a group by tau * group * sqrt(units)."""
    with torch.no_grad():
        for v, base in ((scale, 1.0), (shift, 0.0)):
            d = v - base
            if l1 > 0:
                d = d.sign() * (d.abs() - tau * l1).clamp_min(0)
            if group > 0:
                norm = d.norm()
                d = d * (1 - tau * group * math.sqrt(d.numel()) / norm).clamp_min(0) if norm > 0 else d
            v.copy_(base + d)


def support(scale: torch.Tensor, shift: torch.Tensor, tol: float = 1e-6) -> int:
    """Units the map changes (|scale - 1| or |shift| above tol)."""
    return int(((scale - 1).abs() > tol).logical_or(shift.abs() > tol).sum())


def cosine_lr(step: int, steps: int, lr: float, final: float) -> float:
    """Cosine annealing from lr to lr * final over `steps`."""
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))


def fit(run: Callable[[list[int], dict], dict], n_source: int, target: dict, widths: dict, steps: int,
        batch_size: int, lr: float = 0.1, final_lr: float = 0.01, l1: float = 0.0, group: float = 0.0,
        p: int = 2, seed: int = 0, optimizer: str = "sgd", progress: Callable | None = None) -> tuple[dict, dict]:
    """The end-to-end fit. `run(indices, maps)` runs the source samples `indices` through the model with
    the maps {module: (scale, shift)} attached (grad flowing into them) and returns their pooled, mapped
    activations {module: [len(indices), units]}; `target` {module: [m, units]} is fixed. Plain SGD with
    cosine annealing (the paper's toxicity setting; `optimizer="adam"`: Adam, whose steps do not scale
    with the loss's magnitude), then the proximal step. One forward and one
    backward pass per step. Returns (maps as float32 tensors, figures)."""
    if n_source < 1 or any(t.shape[0] < 1 for t in target.values()):
        raise BakeError("lineas: needs at least one source and one target sample")
    for m, t in target.items():
        if t.shape[1] != widths[m]:
            raise BakeError(f"lineas: target samples of {m} have {t.shape[1]} units; the module's input has "
                            f"{widths[m]}")
    g = torch.Generator().manual_seed(seed)
    maps = {m: (torch.ones(n, dtype=torch.float32, requires_grad=True),
                torch.zeros(n, dtype=torch.float32, requires_grad=True)) for m, n in widths.items()}
    params = [t for pair in maps.values() for t in pair]
    if optimizer not in ("sgd", "adam"):
        raise BakeError(f"lineas: optimizer {optimizer!r}; use sgd (the paper's) or adam")
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    bs = min(batch_size, n_source)
    history = []
    for step in range(steps):
        for group_ in opt.param_groups:
            group_["lr"] = cosine_lr(step, steps, lr, final_lr)
        idx = torch.randperm(n_source, generator=g)[:bs].tolist()
        tgt = {m: t[torch.randperm(t.shape[0], generator=g)[:bs]] for m, t in target.items()}
        src = run(idx, maps)
        loss = sliced_loss(src, tgt, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for scale, shift in maps.values():
            prox(scale, shift, opt.param_groups[0]["lr"], l1, group)
        history.append(loss.item())
        if progress:
            progress(step, history[-1])
    out = {m: (s.detach().clone(), b.detach().clone()) for m, (s, b) in maps.items()}
    figures = {"loss_first": round(history[0], 6), "loss_last": round(history[-1], 6),
               "loss_last10_mean": round(sum(history[-10:]) / len(history[-10:]), 6),
               "support": sum(support(s, b) for s, b in out.values()),
               "units": sum(s.numel() for s, _ in out.values())}
    return out, figures


def fit_model(runner, patterns: list[str], source: list[str], target: list[str], steps: int, batch_size: int,
              pooling: str = "mean", max_length: int = 64, progress: bool = True, **opts) -> tuple[dict, dict]:
    """`fit` on a model (a `collect.Runner`): the maps hook the input of each module matching `patterns`
    (the hook realization's op, `fold.hook_affine`); the target texts' pooled inputs are computed once
    with no map; the model's weights are frozen for the fit and restored after it."""
    import fnmatch
    import time

    from tqdm.auto import tqdm

    from ..compile.fold import hook_affine
    from ..model.device import to_model
    from .collect import pool

    table = dict(runner.model.named_modules())
    mods = list(dict.fromkeys(m for p in patterns for m in table if fnmatch.fnmatchcase(m, p)))
    if not mods:
        raise BakeError(f"learn lineas: --modules {', '.join(patterns)} matches no module of the model")
    enc = {side: runner.tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
           for side, texts in (("source", source), ("target", target))}
    current: dict = {}

    def pre(name):
        def hook(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            if name in current["maps"]:
                x = hook_affine(x, *current["maps"][name])
            current["pooled"][name] = pool(x, current["mask"].to(x.device), pooling).float().cpu()
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
        return hook

    def forward(side, rows, maps):
        batch = to_model(runner.model, {k: v[rows] for k, v in enc[side].items()})
        current.update(maps=maps, pooled={}, mask=batch["attention_mask"])
        runner.forward(batch)
        return current["pooled"]

    grads = [p.requires_grad for p in runner.model.parameters()]
    handles = [table[m].register_forward_pre_hook(pre(m), with_kwargs=True) for m in mods]
    bar = tqdm(total=steps, desc="lineas", unit="step", disable=not progress)
    try:
        runner.model.requires_grad_(False)
        with torch.no_grad():
            parts: dict = {}
            for i in range(0, len(target), batch_size):
                for m, v in forward("target", list(range(i, min(i + batch_size, len(target)))), {}).items():
                    parts.setdefault(m, []).append(v)
            tgt = {m: torch.cat(v) for m, v in parts.items()}
        t0 = time.time()
        with torch.enable_grad():
            maps, figures = fit(lambda rows, maps: forward("source", rows, maps), len(source), tgt,
                                {m: t.shape[1] for m, t in tgt.items()}, steps, batch_size,
                                progress=lambda k, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4g}")), **opts)
        figures["seconds_fit"] = time.time() - t0
    finally:
        bar.close()
        for h in handles:
            h.remove()
        for p, g in zip(runner.model.parameters(), grads):
            p.requires_grad_(g)
    return maps, figures
