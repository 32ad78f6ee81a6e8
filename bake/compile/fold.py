"""Fold operations: small pure functions on tensors.

Each fold has a hook twin that does the same thing to activations at run time. The hook is the
specification; the fold is its compilation into a weight or a bias. Shapes are given in the
docstrings; `axis` is always the axis of the weight that indexes the module's output units
(`[out, in]` Linear: 0; GPT-2 Conv1D `[in, out]` and embeddings `[vocab, d]`: 1; a bias: 0).
"""

from __future__ import annotations

import torch


def _along(vec: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a 1-D `vec` so it broadcasts along `axis` of an `ndim`-D tensor."""
    shape = [1] * ndim
    shape[axis] = vec.numel()
    return vec.reshape(shape)


# --- folds (weights) -------------------------------------------------------------------------


def scale_units(w: torch.Tensor, alpha: torch.Tensor, axis: int) -> torch.Tensor:
    """AURA: scale output unit j by alpha[j].  w: [..., N (at axis), ...], alpha: [N]."""
    return w * _along(alpha.to(w.dtype), w.ndim, axis)


def multiply(w: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """w * factor, factor broadcastable to w with as many axes (see `grid`)."""
    return w * factor.to(w.dtype)


def grid(alpha: torch.Tensor, axes: tuple[int, ...], piece, key_shape) -> torch.Tensor:
    """The factor for one checkpoint key of a parameter scaled by `alpha` over parameter `axes`.

    alpha: [n_0, n_1, ...] indexed by parameter axes `axes`. `piece` is the key's `Slice` (families.keys):
    per key axis (param axis, start, step), and the param axes fixed by the key (one key per expert).
    Returns a tensor with len(key_shape) axes, alpha's entries along the key axes they map to, 1 elsewhere.
    """
    fixed = dict(piece.index)
    sel, dims = alpha, []
    for pa in axes:  # index alpha along it (a fixed index drops the axis); remember which key axis it becomes
        if pa in fixed:
            sel = sel.narrow(len(dims), fixed[pa], 1).squeeze(len(dims))
            continue
        b = piece.key_axis(pa)
        _, start, step = piece.axes[b]
        sel = sel.index_select(len(dims), start + step * torch.arange(key_shape[b]))
        dims.append(b)
    order = sorted(range(len(dims)), key=lambda k: dims[k])
    shape = [1] * len(key_shape)
    for b in dims:
        shape[b] = key_shape[b]
    return sel.permute(order).reshape(shape)


def shift_units(b: torch.Tensor, alpha: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """AURA mean-shift on a bias: b -> b + (1 - alpha) * mu (after `scale_units`).  b, alpha, mu: [N]."""
    return b + (1 - alpha.to(b.dtype)) * mu.to(b.dtype)


def add_vector(b: torch.Tensor, v: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Steering: b -> b + v along `axis`.  b: [d] (or [E, d] per-expert biases, axis 1), v: [d]."""
    return b + _along(v.to(b.dtype), b.ndim, axis)


def project_out(w: torch.Tensor, r: torch.Tensor, axis: int, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Directional ablation: remove `weight` times the component along `r` from the d-axis of `w`.

    w: [..., d (at axis), ...]; r: [d] with |r| = 1, or [d, k] with orthonormal columns (a subspace);
    weight: a scalar, 1 removes the component, 0 < weight < 1 part of it. Returns (I - weight Q Q^T)
    applied along `axis`: a Linear `[d, in]` weight (axis 0) becomes (I - Q Q^T) W; an embedding
    `[vocab, d]` (axis 1) becomes E - (E Q) Q^T; a bias `[d]` (axis 0) becomes b - Q (Q^T b).
    """
    r = r.to(w.dtype)
    weight = float(weight)
    if r.ndim == 1:
        coef = torch.tensordot(w, r, dims=([axis], [0]))  # w's shape without `axis`: (w . r) per row
        return w - (weight * coef).unsqueeze(axis) * _along(r, w.ndim, axis)  # no transposed copy of w
    coef = torch.tensordot(w, r, dims=([axis], [0]))  # [..., k]
    removed = torch.tensordot(coef, r, dims=([coef.ndim - 1], [1])).movedim(-1, axis)
    return w - weight * removed


# --- hooks (activations) ---------------------------------------------------------------------


def hook_scale(h: torch.Tensor, alpha: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
    """h: [..., N] -> alpha * h (+ (1 - alpha) * mu)."""
    out = h * alpha.to(h.dtype)
    if mu is not None:
        out = out + (1 - alpha.to(h.dtype)) * mu.to(h.dtype)
    return out


def hook_affine(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """LinEAS's per-unit map: h: [..., N] -> scale * h + shift (scale, shift: [N]). On the input of a Linear
    it folds into the weight's input columns (`scale_units` along the input axis) and the bias (+ W @ shift)."""
    return h * scale.to(h.dtype) + shift.to(h.dtype)


def hook_add(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h: [..., d] -> h + v at every position."""
    return h + v.to(h.dtype)


def hook_project_out(h: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """h: [..., d] -> h - weight (h.r) r (r: [d]), or h - weight (h Q) Q^T (Q: [d, k])."""
    r = r.to(h.dtype)
    if r.ndim == 1:
        return h - float(weight) * (h @ r).unsqueeze(-1) * r
    return h - float(weight) * (h @ r) @ r.T


def hook_sae_gate(h: torch.Tensor, s: torch.Tensor, coef: torch.Tensor | float = 1.0) -> torch.Tensor:
    """h: [..., d] -> h + coef * ReLU(h S) S^T (S: [d, k], the SAE kinds' feature directions as unit
    columns): amplify with coef = a, remove the features' gated part with coef = -1. Hook-only: no
    weight of a stock model computes a ReLU of the residual stream."""
    s = s.to(h.dtype)
    return h + float(coef) * torch.relu(h @ s) @ s.T


def hook_scale_ids(h: torch.Tensor, gain: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """An embedding's output h: [..., d] for token (or position) `ids` [...] -> h * gain[ids] (a per-row gain of
    the table, the input-side twin of scaling its rows)."""
    return h * gain.to(h.device, h.dtype)[ids].unsqueeze(-1)


# --- orthonormal bases -------------------------------------------------------------------------


def orthonormal(vectors: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, list[float]]:
    """An orthonormal basis Q [d, rank] of the span of `vectors` [k, d] (SVD; singular values below
    rtol * the largest are dropped), and the singular values (so the caller can report the rank)."""
    u, s, _ = torch.linalg.svd(vectors.to(torch.float64).T, full_matrices=False)
    keep = s > rtol * s.max()
    return u[:, keep].contiguous(), [float(x) for x in s]
