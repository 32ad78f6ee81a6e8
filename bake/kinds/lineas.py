"""`lineas`: a per-unit affine map `scale * x + shift` on the input of each matched module (LinEAS,
Rodriguez et al., NeurIPS 2025; learned end to end by `bake learn lineas`).

The map acts on what a module receives: a block's MLP (`model.layers.*.mlp`: the normalized hidden
state its gate and up projections read, i.e. the output of Llama/Qwen's `post_attention_layernorm`,
where the paper places it) or one Linear (`*.mlp.down_proj`: the MLP's units). It folds into every
Linear that reads that input: the scale into the weight's input columns, the shift into the bias
(`bias += W @ shift`). The bias is the module's own, or one a stock config flag creates (Llama's
`mlp_bias`); without either a non-zero shift is refused (a scale-only map still bakes, as AURA does).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Literal

from pydantic import Field, field_validator

from ..compile.planning import Hook, Op, Step
from ..errors import BakeError, NotBakeable
from .base import Artifact, Float, Kind, StrictModel, as_list, register

LINEAR = ("Linear", "Conv1D")


class Lineas(StrictModel):
    """x -> scale * x + shift on the input of each matched module (LinEAS maps, per unit)."""

    kind: Literal["lineas"]
    modules: list[str] = Field(min_length=1)
    maps: Artifact  # safetensors: scale/<module> and shift/<module>, [units] each (`bake learn lineas`)
    # the paper's strength: scale -> 1 + s (scale - 1), shift -> s * shift (0: no change, 1: the maps as learned)
    strength: Float = Field(default=1.0, ge=0)
    approximate: bool = False

    _modules_list = field_validator("modules", mode="before")(as_list)


def readers(fam, module: str) -> list[str] | str:
    """The Linear modules that read `module`'s input: itself (a Linear), or a container's direct Linear
    children other than its residual writer (an MLP's gate and up projections). A str: why none can."""
    kind = fam.modules[module]
    if kind in LINEAR:
        return [module]
    if any(e == module or e.startswith(module + ".") for e in fam.experts):
        return (f"{module} holds fused experts, whose units compute the input inline; a map on it does not fold "
                "into one weight per unit (aura on the experts' units bakes)")
    # the residual writers' output-side tensors (with what a post-norm normalizes): not readers of the input
    writes = {key for w in fam.writers() for key, _ in w.tensors + w.source}
    kids = [m for m, c in fam.modules.items() if m.startswith(module + ".") and "." not in m[len(module) + 1:]
            and c in LINEAR and m + ".weight" not in writes
            and fam.params[m + ".weight"][_in_axis(c)] == fam.d]  # reads the hidden state
    if not kids:
        return f"{module} ({kind}) has no Linear module reading its input"
    return kids


def _bias_slot(fam, module: str) -> str | None:
    """'own' (the checkpoint has the bias), 'flag' (a stock config flag creates it) or None."""
    if module + ".bias" in fam.params:
        return "own"
    return "flag" if module + ".bias" in fam.steer_creates else None


def _mlp_inputs(fam) -> list[str]:
    """Each block's MLP module (a child of the block named as an MLP, not a norm or a Linear): the default
    site, the paper's."""
    from ..families.probe import site_of

    out = []
    for i in range(fam.n_layers):
        block = fam.block(i) + "."
        out += [m for m, c in fam.modules.items() if m.startswith(block) and "." not in m[len(block):]
                and site_of(m[len(block):]) == "mlp_out" and "norm" not in c.lower() and c not in LINEAR]
    return out


def _in_axis(kind: str) -> int:
    return 1 if kind == "Linear" else 0  # Linear [out, in]; Conv1D [in, out]


@register
class LineasKind(Kind):
    name = "lineas"
    schema = Lineas
    tag = "lineas"
    artifacts = {"maps": "lineas maps"}
    learners = {"maps": ("learn_lineas", "")}

    def status(self, fam):
        mlps = _mlp_inputs(fam)
        if not mlps:
            return "refused", fam.broken or "no block has an MLP module whose input a map could act on"
        found = [readers(fam, m) for m in mlps]
        why = next((r for r in found if isinstance(r, str)), None)
        if why:
            return "refused", why
        slots = {_bias_slot(fam, r) for rs in found for r in rs}
        how = "scale into the input columns of the MLP's input projections, shift into their biases"
        if None in slots:
            return "refused", ("the MLP's input projections have no bias and no stock config flag creates one, so "
                               "the shift has no slot (a map with zero shift bakes: it is AURA's column scaling)")
        if "flag" in slots:
            return "exact", f"{how} (created by {_flags(fam)})"
        return "exact", how

    def learn_defaults(self, iv):
        return {"modules": list(iv.modules)}

    def example(self, fam, dest, g):
        import torch
        from safetensors.torch import save_file

        mlps = _mlp_inputs(fam)[:2]
        if not mlps:
            return None
        maps = {}
        for m in mlps:  # a block's MLP reads the hidden state (width d); a refused one is refused at compile
            maps[f"scale/{m}"] = 1 + 0.5 * torch.randn(fam.d, generator=g)
            maps[f"shift/{m}"] = 0.3 * torch.randn(fam.d, generator=g)
        save_file(maps, str(dest / "lineas.safetensors"), metadata={"format": "bake-lineas"})
        return {"kind": "lineas", "modules": mlps, "maps": str(dest / "lineas.safetensors")}

    # -- compile ------------------------------------------------------------------------------
    def _maps(self, b, iv, where):
        """[(module, readers or why-not, scale, shift)] at the recipe's strength, checked against the model."""
        path = b.recipe.path(iv.maps)
        maps = load_maps(path, f"{where}.maps")
        b.note_artifact(iv.maps, "lineas maps")
        modules = b.family.modules
        matched: list[str] = []
        for j, pattern in enumerate(iv.modules):
            hits = [m for m in modules if fnmatch.fnmatchcase(m, pattern)]
            if not hits:
                close = difflib.get_close_matches(pattern, list(modules), n=3, cutoff=0.5)
                raise BakeError(f"{where}.modules[{j}]: {pattern!r} matches no module of this {b.family.name} model"
                                + (f"; close: {', '.join(close)}" if close else ""))
            matched += [m for m in hits if m not in matched]
        out = []
        for m in matched:
            if m not in maps:
                close = difflib.get_close_matches(m, list(maps), n=1)
                raise BakeError(f"{where}.maps: no map for module {m}" + (f" (closest: {close[0]})" if close else
                                f"; the file has maps for {len(maps)} modules"))
            scale, shift = maps[m]
            found = readers(b.family, m)
            # the input's width: a reader's input features, else (a container no map folds into) the hidden size
            r0 = found[0] if not isinstance(found, str) else m
            n = (b.family.params[r0 + ".weight"][_in_axis(modules[r0])] if modules[r0] in LINEAR
                 else b.family.d)
            if scale.numel() != n:
                raise BakeError(f"{where}.maps[{m}]: {scale.numel()} units; the input of {m} has {n}")
            s = iv.strength
            out.append((m, found, 1 + s * (scale - 1), s * shift))
        return out

    def hook_step(self, b, idx, iv, where):
        step = Step(idx, "lineas", True, "")
        for m, _, scale, shift in self._maps(b, iv, where):
            step.hooks.append(Hook(idx, m, "affine_in", scale, (shift,)))
        step.summary = _summary(iv, len(step.hooks))
        return step

    def compile(self, b, idx, iv, where):
        step = Step(idx, "lineas", True, "")
        created = []
        for m, found, scale, shift in self._maps(b, iv, where):
            if isinstance(found, str):
                raise NotBakeable(f"{where}: lineas on {m} cannot be baked: {found}; run it as a hook")
            zero_shift = not bool(shift.abs().max() > 0)
            for r in found:
                wkey, bkey = b.key(r + ".weight"), b.key(r + ".bias")
                if wkey is None:
                    raise BakeError(f"{where}: module {r} has no tensor {r}.weight in the checkpoint (transformers "
                                    "renames or fuses it on load); the map cannot fold into it")
                axis = _in_axis(b.family.modules[r])
                if not zero_shift:
                    if bkey is None:
                        if r + ".bias" not in b.family.steer_creates:
                            raise NotBakeable(
                                f"{where}: lineas on {m} cannot be baked exactly into a {b.family.name} checkpoint: "
                                f"{r} has no bias to hold the map's shift (W @ shift), and no stock config flag "
                                "creates one; a map with zero shift bakes (a column scaling), or run it as a hook")
                        bkey = b.create_bias(r, where, "the map's shift")
                        created.append(r)
                    w = b.current(wkey)
                    moved = w @ shift if axis == 1 else shift @ w  # W @ shift: what the shift adds to r's output
                    b.add_op(bkey, Op(idx, "add", moved, 0), step)
                b.add_op(wkey, Op(idx, "scale_in", scale, axis), step)
            step.hooks.append(Hook(idx, m, "affine_in", scale, (shift,)))
        step.summary = _summary(iv, len(step.hooks)) + (
            f"; biases created for {len(created)} module(s) by {_flags(b.family)}" if created else "")
        return step


def _flags(fam) -> str:
    return ", ".join(f"{k}: {v}" for k, v in fam.steer_config.items() if k != "architectures") or "a config flag"


def _summary(iv, n: int) -> str:
    return (f"affine map scale * x + shift on the input of {n} module(s) matching {', '.join(iv.modules)}"
            + (f" at strength {iv.strength:g}" if iv.strength != 1 else ""))


def load_maps(path, where: str) -> dict:
    """{module: (scale [N], shift [N])} (float64) from a `bake learn lineas` file (scale/<m>, shift/<m>)."""
    from pathlib import Path

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..errors import close_file

    path = Path(path)
    if not path.is_file():
        raise BakeError(f"{where}: no such file {path}{close_file(path)}")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BakeError(f"{where}: {path.name} is not a readable safetensors file ({e})") from None
    scales = {k[len("scale/"):]: v for k, v in raw.items() if k.startswith("scale/")}
    shifts = {k[len("shift/"):]: v for k, v in raw.items() if k.startswith("shift/")}
    if not scales or set(scales) != set(shifts):
        raise BakeError(f"{where}: {path.name} holds no LinEAS maps (a scale/<module> and a shift/<module> tensor "
                        "for each module; `bake learn lineas` writes them)")
    out = {}
    for m in scales:
        a, c = scales[m].reshape(-1).to(torch.float64), shifts[m].reshape(-1).to(torch.float64)
        if a.numel() != c.numel():
            raise BakeError(f"{where}: {path.name}: module {m} has {a.numel()} scales and {c.numel()} shifts")
        if not (torch.isfinite(a).all() and torch.isfinite(c).all()):
            raise BakeError(f"{where}: {path.name}: the map of {m} holds NaN or inf")
        out[m] = (a, c)
    return out
