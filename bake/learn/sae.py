"""Train a TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") on activations.

`train(x, d_sae, k)` takes activations [N, d] (one row per token) and returns an SAE (format.SAE)
that reads raw activations, with its figures: the fraction of variance unexplained (FVU) on a
held-out 10% of the tokens, and the share of dead features (never active on any token).

The recipe, in the paper's terms: inputs scaled by one constant to mean norm sqrt(d) (folded into
the saved weights afterwards, so the file needs no normalization); b_dec starts at the mean
activation; W_enc starts as W_dec^T with unit decoder rows, which are renormalized after every
step; the loss is the reconstruction MSE plus the auxiliary loss AuxK (1/32 of it): the residual
reconstructed from the top `aux_k` features that have not fired for `dead_after` tokens, which
revives dead features. Adam, a constant learning rate, seeded.
"""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from ..artifacts.sae import SAE


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: |x - x_hat|^2 / |x - mean(x)|^2 over all rows."""
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12))


def train(x: torch.Tensor, d_sae: int, k: int, steps: int = 3000, batch_size: int = 512, lr: float = 1e-3,
          aux_k: int | None = None, dead_after: int | None = None, seed: int = 0, hook_name: str = "",
          progress: bool = True) -> tuple[SAE, dict]:
    """(SAE, figures) trained on x [N, d] (float32 rows)."""
    if not 1 <= k <= d_sae:
        raise ValueError(f"k must be in 1..d_sae ({d_sae}), got {k}")
    started = time.time()
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    n, d = x.shape
    perm = torch.randperm(n, generator=g)
    held = perm[: max(1, n // 10)]
    fit = perm[max(1, n // 10):] if n > 10 else perm
    scale = math.sqrt(d) / float(x[fit].norm(dim=-1).mean().clamp_min(1e-12))
    xs = x * scale
    aux_k = aux_k or min(d_sae, max(1, d // 2))
    dead_after = dead_after or min(10_000_000, max(batch_size, len(fit) // 2))

    w_dec = torch.randn(d_sae, d, generator=g)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    params = {"W_enc": w_dec.T.clone(), "W_dec": w_dec, "b_enc": torch.zeros(d_sae), "b_dec": xs[fit].mean(0)}
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=lr)
    since = torch.zeros(d_sae)  # tokens since each feature last fired
    losses = []
    for step in tqdm(range(steps), desc="training SAE", unit="step", disable=not progress):
        batch = xs[fit[torch.randint(len(fit), (batch_size,), generator=g)]]
        pre = (batch - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
        f = _topk(pre, k)
        recon = f @ params["W_dec"] + params["b_dec"]
        err = batch - recon
        loss = (err ** 2).sum(-1).mean()
        with torch.no_grad():
            since += batch_size
            since[(f > 0).any(0)] = 0
        dead = since > dead_after
        if dead.any():  # AuxK: explain the residual with the top dead features
            kk = min(aux_k, int(dead.sum()))
            aux = _topk(pre.masked_fill(~dead, float("-inf")), kk).nan_to_num(0.0) @ params["W_dec"]
            loss = loss + (1 / 32) * ((err.detach() - aux) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        losses.append(float(loss.detach()))
    with torch.no_grad():
        p = {k2: v.detach() for k2, v in params.items()}
        # fold the input scale: the saved SAE reads raw activations
        sae = SAE(p["W_enc"] * scale, p["W_dec"] / scale, p["b_enc"].clone(), p["b_dec"] / scale, "topk", hook_name, k)
        fired = torch.zeros(d_sae, dtype=torch.bool)
        for i in range(0, n, 4096):
            fired |= (sae.encode(x[i:i + 4096]) > 0).any(0)
        x_held = x[held]
        figures = {"tokens": n, "held_out_tokens": len(held), "d_in": d, "d_sae": d_sae, "k": k, "steps": steps,
                   "batch_size": batch_size, "lr": lr, "seed": seed, "input_scale": scale,
                   "fvu_held_out": fvu(x_held, sae.decode(sae.encode(x_held))),
                   "dead_share": float((~fired).float().mean()),
                   "final_loss": float(sum(losses[-50:]) / len(losses[-50:])) if losses else None,
                   "seconds": round(time.time() - started, 1)}
    return sae, figures
