"""`ablate`: remove a direction (or a subspace) from every residual-stream write (Arditi et al. 2024).

Fold: `W <- (I - w Q Q^T) W` on the hidden axis of every writer (embeddings, attention and MLP output
projections, every expert, biases included), `Q` the orthonormalized directions, `w` the strength.
Variants (each a linear map per writer that hooks reproduce exactly):

- `weights:` strength per block, a list or heretic's kernel `{peak, position, min, distance}`
  (p-e-w/heretic, `abliterate`): `w_i = peak + (|i - position| / distance) * (min - peak)` within
  `distance` of `position`, else 0. 0 < w < 1 removes part of the component. The embeddings are left
  alone when `weights` is given (as heretic does). `{attention: KERNEL, mlp: KERNEL}` instead gives the
  attention writers and the MLP writers (experts included) a kernel each, as heretic tunes them.
- `directions:` several directions at once: the span, orthonormalized (SVD), its rank reported.
  A reference `file#candidates[p, 12.5]` interpolates between two layers' candidates.
- a direction per block: a `direction` of shape [blocks, d] (e.g. `key: candidates[-1]`, every block's
  own candidate at one position, as heretic's "per layer" directions) removes row i from the writers
  of block i; the embeddings, which no row belongs to, are left alone.
- `norm_preserving: rows`: heretic's row-norm-preserving edit: each output row of W is normalized,
  projected, renormalized and rescaled to its old norm, i.e. `W' = C P (A W)` with the fixed diagonal
  maps `A = 1/|rows|`, `C = |rows| / |rows of P A W|` (one output-side map per writer, biases too);
  it leaves part of the direction, reported per writer.
- `norm_preserving: columns`: grimjim's "norm-preserving biprojected abliteration"
  (huggingface.co/blog/grimjim/norm-preserving-biprojected-abliteration): `W' = P W D`, D a per-input-unit
  gain restoring each column's norm; the hook is that gain on the module's input plus the projection.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from ..compile.planning import Hook, Op, Step
from ..errors import BakeError, NotBakeable
from .base import Artifact, Float, Int, Kind, StrictModel, register


class Kernel(StrictModel):
    """heretic's per-layer strength: `peak` at block `position`, falling linearly to `min` at `distance`
    blocks away, 0 beyond."""

    peak: Float = Field(ge=0, le=2, allow_inf_nan=False)
    position: Float = Field(allow_inf_nan=False)
    min: Float = Field(default=0.0, ge=0, le=2, allow_inf_nan=False)
    distance: Float = Field(gt=0, allow_inf_nan=False)


class KernelWeights(StrictModel):
    """One kernel for every writer of a block, or one for its attention writers and one for its MLP writers."""

    kernel: Kernel | None = None
    attention: Kernel | None = None
    mlp: Kernel | None = None

    @model_validator(mode="after")
    def _which(self):
        split = self.attention is not None or self.mlp is not None
        if (self.kernel is not None) == split or (split and (self.attention is None or self.mlp is None)):
            raise ValueError("give `kernel:` (every writer of a block) or both `attention:` and `mlp:` (a kernel for "
                             "each kind of writer)")
        return self


class Ablate(StrictModel):
    """Remove the component along unit r (or a subspace) from every residual-stream write."""

    kind: Literal["ablate"]
    direction: Artifact | None = None
    directions: Annotated[list[Artifact], Field(min_length=1)] | None = None
    layers: Union[Literal["all"], Annotated[list[Int], Field(min_length=1)]] = "all"
    weights: Union[Annotated[list[Annotated[Float, Field(ge=0, le=2, allow_inf_nan=False)]], Field(min_length=1)],
                   KernelWeights] | None = None
    norm_preserving: Literal["rows", "columns"] | None = None
    approximate: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        if (self.direction is None) == (self.directions is None):
            raise ValueError("give `direction:` (one artifact) or `directions:` (a list), exactly one of them")
        if self.weights is not None and self.layers != "all":
            raise ValueError("`weights` sets the strength of every block (0 leaves a block alone); drop `layers`")
        return self


def kernel_weights(k: Kernel, n: int) -> list[float]:
    """heretic's kernel over n blocks."""
    out = []
    for i in range(n):
        dist = abs(i - k.position)
        out.append(0.0 if dist > k.distance else k.peak + (dist / k.distance) * (k.min - k.peak))
    return out


@register
class AblateKind(Kind):
    name = "ablate"
    schema = Ablate
    tag = "abliteration"
    artifacts = {"direction": "ablation direction", "directions": "ablation direction"}
    learners = {"direction": ("learn_refusal", "#direction"), "directions": ("learn_refusal", "#direction")}

    def status(self, fam):
        if fam.broken:
            return "refused", fam.broken
        bad = [w for w in fam.writers() if not w.exact]
        if not bad:
            return "exact", "orthogonalizes every residual writer" + (" (every expert, shared experts too)" if fam.moe else "")
        if all(w.norm and w.norm[1] is not None and w.source for w in bad):
            return "approximate", ("a norm sits between each sublayer and the residual add: with `approximate: true` "
                                   "the projections are orthogonalized against r*g (g = the norm's scale), "
                                   "and the measured deviation is reported")
        w = bad[0]
        return "refused", f"{w.module} is not a linear writer bake can fold into (" + (
            "a norm after it with no per-channel scale to fold" if w.norm else
            "its output is not a linear map of tensors with a hidden axis") + ")"

    def example(self, fam, dest, g):
        import torch
        from safetensors.torch import save_file

        save_file({"r": torch.randn(fam.d, generator=g)}, str(dest / "r.safetensors"))
        return {"kind": "ablate", "direction": str(dest / "r.safetensors"), "layers": "all"}

    # -- the direction(s) ------------------------------------------------------------------------
    def basis(self, b, iv, where) -> tuple:
        """A unit vector [d] (`direction`), {block: unit vector} (a [blocks, d] `direction`), or an orthonormal
        basis [d, rank] of `directions`."""
        import torch

        from ..compile import fold

        d = b.family.d
        refs = [("direction", iv.direction)] if iv.direction is not None else \
            [(f"directions[{j}]", ref) for j, ref in enumerate(iv.directions)]
        n = b.family.n_layers
        vecs = []
        for field, ref in refs:
            r = b.tensor(ref, f"{where}.{field}", "ablation direction")
            if r.shape == (n, d) and iv.direction is not None:
                return self._per_block(r, f"{where}.{field}")
            if r.shape != (d,):
                raise BakeError(f"{where}.{field}: shape {list(r.shape)}; expected [{d}] (hidden size)" + (
                    f" or [{n}, {d}] (a direction per block)" if iv.direction is not None else
                    "; a direction per block goes in `direction:`, alone"))
            norm = r.norm()
            if norm < 1e-12:
                raise BakeError(f"{where}.{field}: the vector is zero; a direction needs a nonzero norm")
            vecs.append(r / norm)
        if iv.direction is not None:
            return vecs[0], {}
        q, sv = fold.orthonormal(torch.stack(vecs))
        return q, {"directions": len(vecs), "rank": q.shape[1], "singular_values": [round(s, 6) for s in sv]}

    @staticmethod
    def _per_block(r, where) -> tuple:
        """{block: unit row} of a [blocks, d] direction (block i's writers remove row i)."""
        norms = r.norm(dim=1)
        zero = [i for i, v in enumerate(norms.tolist()) if v < 1e-12]
        if zero:
            raise BakeError(f"{where}: the direction of block {zero[0]} is zero; every block's row needs a nonzero norm")
        return {i: r[i] / norms[i] for i in range(r.shape[0])}, {"per_block": True}

    def strengths(self, b, iv, where) -> dict:
        """{block index or "embed": strength} of the writers to edit; with attention and MLP kernels,
        {block: {"attn_out": strength, "mlp_out": strength}} (blocks where both are 0 left out)."""
        n = b.family.n_layers
        if iv.weights is None:
            blocks = range(n) if iv.layers == "all" else b.layers(iv.layers, where)
            out = {i: 1.0 for i in blocks}
            return {"embed": 1.0, **out} if iv.layers == "all" else out
        if isinstance(iv.weights, KernelWeights) and iv.weights.kernel is None:
            att, mlp = kernel_weights(iv.weights.attention, n), kernel_weights(iv.weights.mlp, n)
            out = {i: {"attn_out": a, "mlp_out": m} for i, (a, m) in enumerate(zip(att, mlp)) if a > 0 or m > 0}
            if not out:
                raise BakeError(f"{where}.weights: every block's strength is 0, so the step would change nothing")
            return out
        ws = kernel_weights(iv.weights.kernel, n) if isinstance(iv.weights, KernelWeights) else list(iv.weights)
        if len(ws) != n:
            raise BakeError(f"{where}.weights: {len(ws)} weights; the model has {n} blocks (one weight per block)")
        out = {i: float(w) for i, w in enumerate(ws) if w > 0}
        if not out:
            raise BakeError(f"{where}.weights: every block's strength is 0, so the step would change nothing")
        return out

    # -- compile -----------------------------------------------------------------------------------
    def compile(self, b, idx, iv, where):
        q, details = self.basis(b, iv, where)
        fam = b.family
        strengths = self.strengths(b, iv, where)
        per_block = isinstance(q, dict)
        if per_block:
            strengths.pop("embed", None)  # no block's direction belongs to the embeddings
        writers = [(w, strengths["embed"], q) for w in fam.embeds] if "embed" in strengths else []
        writers += [(w, ws, q[i] if per_block else q) for i, s in strengths.items() if i != "embed"
                    for w in fam.blocks[i] if (ws := _of_role(s, w, fam.block(i), where)) > 0]
        inexact = [w for w, _, _ in writers if not w.exact]
        status, why = self.status(fam)
        if status == "refused":
            raise NotBakeable(f"{where}: ablate cannot be baked into a {fam.name} checkpoint: {why}; run it as a hook.")
        if inexact and iv.norm_preserving:
            raise NotBakeable(f"{where}: norm_preserving: {iv.norm_preserving} needs writers that ablate bakes exactly; "
                              f"a norm sits after {inexact[0].module}. Drop norm_preserving (`approximate: true` "
                              "then orthogonalizes against r*g), or run it as a hook.")
        if inexact and not iv.approximate:
            raise NotBakeable(
                f"{where}: ablate cannot be baked exactly into a {fam.name} checkpoint: a norm sits between each "
                "attention/MLP projection and the residual add, so no weight edit equals removing r from what is "
                "written. Set `approximate: true` to orthogonalize each projection against r*g (g = the norm's "
                "scale; the written output is then exactly orthogonal to r, and the report gives the measured "
                "deviation from the hook), or run it as a hook.")
        step = Step(idx, "ablate", not inexact, "", details=details)
        leftover = {}
        for w, s, r in writers:
            tensors = b.writes_of(w)
            if not w.exact:
                u = b.norm_scaled(w, r, where)
                tensors = tuple(w.source) + tuple(t for t in tensors if t not in w.tensors)
            else:
                u = r
            if iv.norm_preserving == "rows":
                leftover[w.module] = self._rows(b, idx, w, tensors, r, s, step)
            elif iv.norm_preserving == "columns":
                leftover[w.module] = self._columns(b, idx, w, tensors, r, s, step, where)
            else:
                self._project(b, idx, tensors, u, s, step)
                step.hooks.append(Hook(idx, w.module, "project_out", r, _w(s)))
        n_edit = len({i for i in strengths if i != "embed"})
        where_txt = ("all residual writers (embeddings and every block)" if "embed" in strengths
                     else "the writers of every block (embeddings left alone)" if iv.weights is None and iv.layers == "all"
                     else f"blocks {sorted(i for i in strengths if i != 'embed')}" if iv.weights is None
                     else f"the writers of {n_edit} block(s) with per-block strengths (embeddings left alone)")
        what = ("each block's own direction" if per_block else "direction r" if q.ndim == 1
                else f"a rank-{q.shape[1]} subspace ({details['directions']} directions)")
        step.summary = f"remove {what} from {where_txt}"
        if iv.weights is not None:
            step.details["weights"] = {str(i): round(s, 6) if not isinstance(s, dict) else
                                       {("attention" if k == "attn_out" else "mlp"): round(v, 6) for k, v in s.items()}
                                       for i, s in strengths.items()}
            used = [s for _, s, _ in writers]
            step.summary += f" (strength {min(used, default=0):.3g}..{max(used, default=0):.3g}" + (
                ", attention and MLP writers by a kernel each)" if any(isinstance(s, dict) for s in strengths.values())
                else ")")
        if iv.norm_preserving:
            vals = list(leftover.values())
            step.details["norm_preserving"] = iv.norm_preserving
            step.details["leftover"] = {m: round(v, 6) for m, v in leftover.items()}
            step.summary += (f"; norm-preserving ({iv.norm_preserving}): leaves {max(vals):.2%} of the direction's "
                             f"component at most (mean {sum(vals) / len(vals):.2%})")
        if not step.exact:
            step.summary += " [approximate: orthogonalized against r*g before post-norms]"
        return step

    @staticmethod
    def _project(b, idx, tensors, u, s, step):
        for name, axis in tensors:
            e = b.edits.get(name)
            if e is not None and e.source is None and not e.ops:
                continue  # a zero bias stays zero
            b.add_op(name, Op(idx, "project_out", u, axis, _w(s)), step)

    def _rows(self, b, idx, w, tensors, q, s, step) -> float:
        """heretic's row-norm-preserving edit as ops `scale(A)`, `project_out`, `scale(C)` on every tensor of
        the writer (the same three hooks on its output); returns the share of the component it leaves."""
        import torch

        from ..compile import fold

        mats = [(n, a) for n, a in tensors if len(b.shape(n)) >= 2]
        cur = {n: b.current(n) for n, _ in mats}
        d1 = torch.sqrt(sum(_sq_norms(cur[n], a) for n, a in mats))
        inv = torch.where(d1 > 0, 1 / d1, torch.ones_like(d1))
        projected = {n: fold.project_out(fold.scale_units(cur[n], inv, a), q, a, s) for n, a in mats}
        d2 = torch.sqrt(sum(_sq_norms(projected[n], a) for n, a in mats))
        c = torch.where(d2 > 0, d1 / d2, torch.ones_like(d2))
        before = sum(_component(cur[n], q, a) for n, a in mats)
        after = sum(_component(fold.scale_units(projected[n], c, a), q, a) for n, a in mats)
        for name, axis in tensors:
            e = b.edits.get(name)
            if e is not None and e.source is None and not e.ops:
                continue
            for op in (Op(idx, "scale", inv, axis), Op(idx, "project_out", q, axis, _w(s)), Op(idx, "scale", c, axis)):
                b.add_op(name, op, step)
        step.hooks += [Hook(idx, w.module, "scale", inv), Hook(idx, w.module, "project_out", q, _w(s)),
                       Hook(idx, w.module, "scale", c)]
        return math.sqrt(after / before) if before > 0 else 0.0

    def _columns(self, b, idx, w, tensors, q, s, step, where) -> float:
        """grimjim's column-norm-preserving edit: an input gain D on the writer's one weight (restoring each
        column's norm after the projection), then the projection; hooks: D on the module's input, P on the
        writer's output. Returns the share of the component it leaves."""
        import torch

        from ..compile import fold

        mats = [(n, a) for n, a in tensors if len(b.shape(n)) >= 2]
        owner = b.module_of(mats[0][0]) if len(mats) == 1 else None
        kind = b.family.modules.get(owner) if owner else None
        if len(mats) != 1 or len(b.shape(mats[0][0])) != 2 or kind not in ("Linear", "Conv1D", "Embedding"):
            shapes = ", ".join(f"{n} {list(b.shape(n))}" for n, _ in mats)
            raise NotBakeable(f"{where}: norm_preserving: columns needs one 2-D weight per writer (a Linear, Conv1D or "
                              f"embedding) to put an input gain on; {w.module} writes through {shapes}. Fused or "
                              "per-expert weights keep their input units inside the experts: use norm_preserving: rows")
        name, axis = mats[0]
        t = b.current(name)
        col = 1 - axis
        before = _sq_norms(t, col)
        after = _sq_norms(fold.project_out(t, q, axis, s), col)
        gain = torch.where(after > 0, torch.sqrt(before / after), torch.ones_like(after))
        comp0 = _component(t, q, axis)
        b.add_op(name, Op(idx, "scale_in", gain, col), step)
        for n, a in tensors:
            e = b.edits.get(n)
            if e is not None and e.source is None and not e.ops:
                continue
            b.add_op(n, Op(idx, "project_out", q, a, _w(s)), step)
        step.hooks += [Hook(idx, owner, "scale_in", gain), Hook(idx, w.module, "project_out", q, _w(s))]
        comp1 = _component(fold.project_out(fold.scale_units(t, gain, col), q, axis, s), q, axis)
        return math.sqrt(comp1 / comp0) if comp0 > 0 else 0.0


def _of_role(s, w, block: str, where: str) -> float:
    """A writer's strength: the block's, or with attention and MLP kernels, its kind's."""
    if not isinstance(s, dict):
        return s
    from ..families.probe import site_of

    role = site_of(w.module.removeprefix(block + "."))
    if role is None:
        raise NotBakeable(f"{where}.weights: {w.module} is neither an attention nor an MLP writer by its name, so "
                          "it has no kernel of its own; give one `kernel:` for every writer")
    return s[role]


def _w(s: float) -> tuple:
    import torch

    return () if s == 1.0 else (torch.tensor(float(s), dtype=torch.float64),)


def _sq_norms(t, axis: int):
    """Sum of squares over every axis but `axis`: [t.shape[axis]]."""
    dims = [a for a in range(t.ndim) if a != axis]
    return (t * t).sum(dim=dims) if dims else t * t


def _component(t, q, axis: int) -> float:
    """|Q^T t|^2 along `axis` (Frobenius): how much of the direction(s) `t` writes."""
    import torch

    qq = q if q.ndim == 2 else q.unsqueeze(1)
    return float((torch.tensordot(t, qq.to(t.dtype), dims=([axis], [0])) ** 2).sum())
