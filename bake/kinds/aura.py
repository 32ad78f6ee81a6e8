"""`aura`: multiply output unit j of each matched module by alpha[j] (ml-aura semantics, Suau et al. 2024).

Fold: scale row j of a Linear's weight (column j of a GPT-2 Conv1D, of an embedding) and bias[j].
With `mu:` (per-module means, e.g. of the unit on non-toxic text) the hook is the mean-shift form
`h -> alpha * h + (1 - alpha) * mu`, whose constant part needs a bias: the module's own, or one a
stock config flag creates (Llama's `mlp_bias`); else it is refused.
Fused experts: alphas [experts x units] scale the input units of each expert's output projection.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Literal

from pydantic import Field, field_validator

from ..compile.planning import Hook, Op, Step
from ..errors import BakeError, NotBakeable
from .base import Artifact, Float, Kind, StrictModel, as_list, register


class Aura(StrictModel):
    """Multiply output unit j of each matched module by alpha[j] (ml-aura semantics)."""

    kind: Literal["aura"]
    modules: list[str] = Field(min_length=1)
    alphas: Artifact
    mu: Artifact | None = None  # {module: [N]} means: the hook becomes alpha*h + (1-alpha)*mu
    # ml-aura's strength: alpha -> 1 - strength * (1 - alpha) (0: no change, 1: the alphas as given);
    # applied to the alphas as loaded or learned, so a sweep of it re-uses one learned file
    strength: Float = Field(default=1.0, ge=0)
    approximate: bool = False

    _modules_list = field_validator("modules", mode="before")(as_list)


@register
class AuraKind(Kind):
    name = "aura"
    schema = Aura
    tag = "aura"
    artifacts = {"alphas": "aura alphas", "mu": "aura means"}
    learners = {"alphas": ("learn_aura", ""), "mu": ("learn_aura", "")}  # one learned file holds both

    def status(self, fam):
        how = "scales output units of Linear / Conv1D / Embedding modules (weight rows or columns, and bias)"
        if not fam.experts:
            return "exact", how
        if all(f"{m}.act_fn" in fam.modules for m in fam.experts):
            return "exact", how + (", and units inside fused experts (alphas [experts x units], folded into each "
                                   "expert's output projection)")
        return "exact", how + ("; units inside its fused experts are refused: they compute their activation inline, "
                               "with no act_fn module to hook")

    def learn_defaults(self, iv):
        return {"modules": list(iv.modules)}

    def example(self, fam, dest, g):
        import torch
        from safetensors.torch import save_file

        b0 = fam.block(0) + "."

        def one_key(n):  # a module whose weight is one checkpoint tensor (not stored fused with others)
            s = fam.keymap.slices(n + ".weight", fam.params[n + ".weight"])
            return len(s) == 1 and all(a == b and st == 0 and sp == 1 for b, (a, st, sp) in enumerate(s[0].axes))
        rel = next(n[len(b0):] for n, c in fam.modules.items()
                   if n.startswith(b0) and c in ("Linear", "Conv1D") and one_key(n))
        glob = f"{fam.blocks_path}.*.{rel}"
        alphas = {m: torch.rand(fam.params[m + ".weight"][1 if c == "Conv1D" else 0], generator=g) * 1.5
                  for m, c in fam.modules.items() if fnmatch.fnmatchcase(m, glob) and c in ("Linear", "Conv1D")}
        save_file(alphas, str(dest / "alphas.safetensors"))
        return {"kind": "aura", "modules": [glob], "alphas": str(dest / "alphas.safetensors")}

    def compile(self, b, idx, iv, where):
        from ..artifacts.tensors import load_alphas

        alphas = load_alphas(iv.alphas, b.recipe.base_dir, f"{where}.alphas")
        b.note_artifact(iv.alphas, "aura alphas")
        if iv.strength != 1:
            from ..learn.stats import with_strength

            alphas = {m: with_strength(a, iv.strength) for m, a in alphas.items()}
        mus = None
        if iv.mu is not None:
            mus = load_alphas(iv.mu, b.recipe.base_dir, f"{where}.mu", prefix="mu/")
            b.note_artifact(iv.mu, "aura means")
        modules = b.family.modules
        foldable = {m: t for m, t in modules.items() if t in ("Linear", "Conv1D", "Embedding") or m in b.family.experts}
        step = Step(idx, "aura", True, "")
        matched: list[str] = []
        for j, pattern in enumerate(iv.modules):
            hits = [m for m in foldable if fnmatch.fnmatchcase(m, pattern)]
            if not hits:
                other = [m for m in modules if fnmatch.fnmatchcase(m, pattern)]
                if other:
                    raise BakeError(f"{where}.modules[{j}]: {pattern!r} matches {other[0]} ({modules[other[0]]}), "
                                    "which is not a Linear/Conv1D/Embedding module or fused experts; AURA scales "
                                    "their output units")
                close = difflib.get_close_matches(pattern, list(foldable), n=3, cutoff=0.5)
                hint = f"; close: {', '.join(close)}" if close else ""
                raise BakeError(f"{where}.modules[{j}]: {pattern!r} matches no module of this "
                                f"{b.family.name} model{hint}")
            matched += [m for m in hits if m not in matched]
        for m in matched:
            if m in b.family.experts:
                if mus is not None:
                    raise NotBakeable(f"{where}.mu: {m} holds fused experts, whose units have no bias to carry the "
                                      "constant (1 - alpha) * mu; drop `mu` for them (plain scaling bakes exactly)")
                self._experts(b, idx, m, alphas, step, where)
                continue
            wkey = b.key(m + ".weight")
            if wkey is None:
                raise BakeError(f"{where}: module {m} has no tensor {m}.weight in the checkpoint "
                                "(transformers renames or fuses it on load); AURA cannot fold into it")
            a = _entry(alphas, m, f"{where}.alphas", "alphas")
            axis = 0 if modules[m] == "Linear" else 1
            shape = b.names[wkey]
            if a.numel() != shape[axis]:
                raise BakeError(f"{where}.alphas[{m}]: {a.numel()} alphas for {shape[axis]} output units "
                                f"(weight {wkey} has shape {list(shape)})")
            b.add_op(wkey, Op(idx, "scale", a, axis), step)
            bkey = b.key(m + ".bias")
            mu = None
            if mus is not None:
                mu = _entry(mus, m, f"{where}.mu", "means")
                if mu.numel() != a.numel():
                    raise BakeError(f"{where}.mu[{m}]: {mu.numel()} means for {a.numel()} units")
                if bkey is None:
                    bkey = b.create_bias(m, where, "the mean-shift's constant (1 - alpha) * mu")
            if bkey is not None:
                b.add_op(bkey, Op(idx, "scale", a, 0), step)
                if mu is not None:
                    b.add_op(bkey, Op(idx, "shift", a, 0, (mu,)), step)
            step.hooks.append(Hook(idx, m, "scale", a, (mu,) if mu is not None else ()))
        unused = len(set(alphas) - set(matched))
        step.summary = (f"scale output units of {len(matched)} module(s) matching {', '.join(iv.modules)}"
                        + (" toward their means mu (alpha*h + (1-alpha)*mu)" if mus is not None else "")
                        + (f" at strength {iv.strength:g} (alpha -> 1 - s (1 - alpha))" if iv.strength != 1 else "")
                        + (f" ({unused} alpha entries for other modules ignored)" if unused else ""))
        return step

    def _experts(self, b, idx, m, alphas, step, where):
        """Unit j of expert e (act(gate) * up, the input of its output projection) is scaled by alphas[m]
        viewed as [experts, units]; the fold scales that column of each expert's output projection, in
        whichever keys the checkpoint stores it (one fused tensor or one per expert)."""
        name, hidden = b.family.experts[m]
        if f"{m}.act_fn" not in b.family.modules:
            raise NotBakeable(f"{where}: {m} ({b.family.modules[m]}) computes its activation inline, with no "
                              "act_fn module, so there is no hook point for a unit inside an expert to verify the "
                              "fold against; aura on its attention, shared experts or other Linear modules bakes")
        shape = b.family.params[name]
        unit = ({1, 2} - {hidden}).pop()
        if m not in alphas:
            raise BakeError(f"{where}.alphas: no alphas for module {m} (fused experts: {shape[0]} x {shape[unit]})")
        a = alphas[m]
        if a.numel() != shape[0] * shape[unit]:
            raise BakeError(f"{where}.alphas[{m}]: {a.numel()} alphas; fused experts need experts x units = "
                            f"{shape[0]} x {shape[unit]} = {shape[0] * shape[unit]} (row-major [experts, units])")
        from ..compile import fold

        a = a.reshape(shape[0], shape[unit])
        slices = b.family.keymap.slices(name, shape)
        if not slices:
            raise BakeError(f"{where}: parameter {name} of {m} is not in the checkpoint")
        for sl in slices:
            b.add_op(sl.key, Op(idx, "mul", fold.grid(a, (0, unit), sl, b.names[sl.key])), step)
        step.hooks.append(Hook(idx, m, "scale_experts", a))


def _entry(table: dict, m: str, where: str, what: str):
    if m not in table:
        close = difflib.get_close_matches(m, list(table), n=1)
        raise BakeError(f"{where}: no {what} for module {m}" +
                        (f" (closest key: {close[0]})" if close else f"; the file has {len(table)} modules"))
    return table[m]
