"""Per-unit statistics over pooled responses, vectorized over units (pure functions).

`x` is [samples, units] (float64), `y` is [samples] with labels 0/1. Every score is computed for
all units at once; ties are handled as scikit-learn does, except that values equal within float
noise are ties: responses come from float32 forward passes whose rounding depends on the batch's
shape and padding (about 1e-6 of a unit's range), and an exact tie between two texts (the same
first token, say) must not become a coin toss that moves the ranks. Sorted values less than
`TIE_RTOL` times the unit's largest |value| apart belong to one tie group. (`bake learn aura`
also computes in float64 by default, where the batch's shape changes responses by about 1e-14.)
"""

from __future__ import annotations

import torch

TIE_RTOL = 1e-6  # float32 resolution: values closer than this carry no ranking information


def _tie_groups(s: torch.Tensor, rtol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For a column-sorted [N, U] tensor: the first and last row index of each entry's tie group
    (neighbours closer than `rtol` times the column's largest |value| are tied)."""
    n = s.shape[0]
    pos = torch.arange(n, device=s.device).unsqueeze(1).expand_as(s)
    rtol = TIE_RTOL if rtol is None else rtol
    apart = (s[1:] - s[:-1]).abs() > rtol * s.abs().amax(0, keepdim=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[1:] = apart
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = apart
    start = torch.where(new, pos, torch.zeros_like(pos)).cummax(0).values
    end = torch.where(last, pos, torch.full_like(pos, n - 1)).flip(0).cummin(0).values.flip(0)
    return start, end


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.to(torch.bool).reshape(-1)
    if x.ndim == 1:
        x = x.unsqueeze(1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
    if y.all() or not y.any():
        raise ValueError("both classes are needed (labels are all 0 or all 1)")
    return x.to(torch.float64), y


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along dim 0, ties given their average rank (scipy's rankdata 'average')."""
    s, order = x.sort(0)
    start, end = _tie_groups(s)
    avg = (start + end).to(torch.float64) / 2 + 1
    return torch.empty_like(avg).scatter_(0, order, avg)


def auroc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of each unit as a detector of y=1 (Mann-Whitney U). -> [units]"""
    x, y = _check(x, y)
    ranks = average_ranks(x)
    p, n = y.sum().item(), (~y).sum().item()
    return (ranks[y].sum(0) - p * (p + 1) / 2) / (p * n)


def aucpr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Average precision of each unit (scikit-learn's average_precision_score). -> [units]"""
    x, y = _check(x, y)
    s, order = x.sort(0, descending=True)
    yy = y.to(torch.float64)[order]  # labels in score order, per unit
    tp = yy.cumsum(0)
    start, end = _tie_groups(-s)  # descending: ties are equal values again
    is_last = end == torch.arange(s.shape[0]).unsqueeze(1)
    tp_end = tp
    tp_before = torch.where(start > 0, tp.gather(0, (start - 1).clamp_min(0)), torch.zeros_like(tp))
    precision = tp_end / (end + 1).to(torch.float64)
    contrib = (tp_end - tp_before) / y.sum() * precision
    return torch.where(is_last, contrib, torch.zeros_like(contrib)).sum(0)


def cohens_d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(mean_1 - mean_0) / pooled standard deviation. -> [units]"""
    x, y = _check(x, y)
    a, b = x[y], x[~y]
    na, nb = a.shape[0], b.shape[0]
    pooled = (((na - 1) * a.var(0) + (nb - 1) * b.var(0)) / max(na + nb - 2, 1)).sqrt()
    return (a.mean(0) - b.mean(0)) / pooled.clamp_min(1e-12)


def point_biserial(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between each unit and the 0/1 label. -> [units]"""
    x, y = _check(x, y)
    yc = y.to(torch.float64) - y.double().mean()
    xc = x - x.mean(0)
    return (xc * yc.unsqueeze(1)).sum(0) / (xc.norm(dim=0) * yc.norm()).clamp_min(1e-12)


SCORES = {"auroc": auroc, "aucpr": aucpr, "cohens_d": cohens_d, "point_biserial": point_biserial}


def zscore(groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalize scores across all groups (layers) jointly: (s - mean) / std."""
    cat = torch.cat([g.reshape(-1) for g in groups.values()])
    mu, sd = cat.mean(), cat.std().clamp_min(1e-12)
    return {k: (g - mu) / sd for k, g in groups.items()}


# --- alpha rules ------------------------------------------------------------------------------


def alpha_aura(au: torch.Tensor) -> torch.Tensor:
    """AURA (hyperparameter-free): alpha = 1 - 2 (AUROC - 0.5) where AUROC > 0.5, else 1."""
    return torch.where(au > 0.5, 1 - 2 * (au - 0.5), torch.ones_like(au))


def top_mask(scores: dict[str, torch.Tensor], k: int | None = None, fraction: float | None = None,
             per_layer: bool = False) -> dict[str, torch.Tensor]:
    """Boolean masks of the top-k (or top fraction) units by score, globally or per module."""
    def pick(s: torch.Tensor, n_units: int) -> torch.Tensor:
        kk = k if k is not None else int(round(fraction * n_units))
        kk = max(0, min(kk, s.numel()))
        mask = torch.zeros(s.numel(), dtype=torch.bool)
        if kk:
            mask[s.reshape(-1).topk(kk).indices] = True
        return mask

    if per_layer:
        return {m: pick(s, s.numel()).reshape(s.shape) for m, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    mask = pick(flat, flat.numel())
    out, i = {}, 0
    for m, s in scores.items():
        out[m] = mask[i: i + s.numel()].reshape(s.shape)
        i += s.numel()
    return out


def alphas_from_masks(masks: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    """`damp` (value in (0,1)) or `det0` (value 0): alpha = value on masked units, 1 elsewhere."""
    return {m: torch.where(mk, torch.full(mk.shape, float(value), dtype=torch.float64),
                           torch.ones(mk.shape, dtype=torch.float64)) for m, mk in masks.items()}


def with_strength(alpha: torch.Tensor, s: float) -> torch.Tensor:
    """Interpolate towards the identity: 1 - s (1 - alpha)."""
    return 1 - s * (1 - alpha)
