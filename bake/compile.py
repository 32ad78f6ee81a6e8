"""Compile a recipe into a plan: which tensors change, by which fold ops, in which order.

Pure with respect to the output: it reads config.json, safetensors headers, the artifacts and (for
post-norm approximations) the few norm weights it needs, and raises `BakeError` / `NotBakeable`
before anything is written. The same pass records the hook realization of each intervention
(module name + hook op), which is the specification the verifier checks the plan against.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

import torch

from . import fold
from .families import Adapter
from .families import resolve as resolve_family
from .artifacts import load_alphas, load_tensor
from .errors import BakeError, NotBakeable, first_line
from .recipe import Ablate, Aura, Recipe, Steer
from .source import Checkpoint


@dataclass(frozen=True)
class Op:
    """One fold on one tensor: `fn` in (scale, add, project_out), vector `vec` (float64) along `axis`; or
    `mul` by a factor `vec` with the tensor's number of axes (broadcast)."""

    step: int
    fn: str
    vec: torch.Tensor
    axis: int = 0

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        if self.fn == "scale":
            return fold.scale_units(t, self.vec, self.axis)
        if self.fn == "add":
            return fold.add_vector(t, self.vec, self.axis)
        if self.fn == "project_out":
            return fold.project_out(t, self.vec, self.axis)
        if self.fn == "mul":
            return fold.multiply(t, self.vec)
        raise ValueError(self.fn)

    def describe(self) -> str:
        return {"scale": f"scale axis {self.axis}", "add": f"add |v|={self.vec.norm():.4g}",
                "project_out": f"project out r on axis {self.axis}", "mul": "scale expert units"}[self.fn]


@dataclass
class TensorEdit:
    """The new value of one output tensor: source tensor (None = zeros of `shape`) then `ops`."""

    name: str
    source: str | None
    shape: tuple[int, ...]
    ops: list[Op] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Hook:
    """The hook realization: apply `fn` with `vec` to the output of `module`."""

    step: int
    module: str
    fn: str  # scale | add | project_out | scale_experts (vec [experts, units])
    vec: torch.Tensor


@dataclass
class Step:
    index: int
    kind: str
    exact: bool
    summary: str
    hooks: list[Hook] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)


@dataclass
class Plan:
    recipe: Recipe
    checkpoint: Checkpoint
    family: Adapter
    dtype: str
    edits: dict[str, TensorEdit]
    config_updates: dict
    steps: list[Step]
    artifacts: dict[str, str]  # artifact path -> role

    @property
    def exact(self) -> bool:
        return all(s.exact for s in self.steps)

    @property
    def hooks(self) -> list[Hook]:
        return [h for s in self.steps for h in s.hooks]


class _Builder:
    def __init__(self, recipe: Recipe, ckpt: Checkpoint):
        self.recipe, self.ckpt = recipe, ckpt
        self.config = ckpt.config
        self.family = resolve_family(self.config, ckpt.shapes, recipe.trust_remote_code)
        self.n_layers = self.family.n_layers
        self.d = self.family.d
        self.names = ckpt.shapes
        self.edits: dict[str, TensorEdit] = {}
        self.config_updates: dict = {}
        self.steps: list[Step] = []
        self.artifacts: dict[str, str] = {}
        self._untied = False

    # -- names -------------------------------------------------------------------------------
    def key(self, name: str) -> str | None:
        """The checkpoint key holding all of model parameter `name` (None when absent or split)."""
        if name in self.edits:
            return name
        shape = self.family.params.get(name)
        slices = self.family.keymap.slices(name, shape) if shape is not None else []
        if len(slices) == 1 and all(a == b and st == 0 and sp == 1 for b, (a, st, sp) in enumerate(slices[0].axes)):
            return slices[0].key
        return name if name in self.names else None

    def tensor_names(self):
        return list(self.names) + [n for n in self.edits if n not in self.names]

    def edit(self, name: str) -> TensorEdit:
        if name not in self.edits:
            self.edits[name] = TensorEdit(name, name, tuple(self.names[name]))
        return self.edits[name]

    def modules(self) -> dict[str, str]:
        return self.family.modules

    # -- tied embeddings ---------------------------------------------------------------------
    def touch(self, name: str) -> TensorEdit:
        """Edit a tensor; untie first when it is a tied embedding or head (logits must not change)."""
        emb, head = self.family.embed_key, self.family.head_key
        if self.family.tied and head and name in (emb, head) and not self._untied:
            self._untied = True
            self.config_updates["tie_word_embeddings"] = False
            self.edits[head] = TensorEdit(head, emb, tuple(self.names[emb]),
                                          note="untied: lm_head.weight = original embedding")
        return self.edit(name)

    def add_op(self, name: str, op: Op, step: Step):
        self.touch(name).ops.append(op)
        if name not in step.tensors:
            step.tensors.append(name)

    # -- interventions -----------------------------------------------------------------------
    def layers(self, layers, where: str) -> list[int]:
        out = []
        for j, i in enumerate(layers):
            if not 0 <= i < self.n_layers:
                raise BakeError(f"{where}.layers[{j}]: layer {i} is out of range; the model has "
                                f"{self.n_layers} blocks (0..{self.n_layers - 1})")
            out.append(i)
        if len(set(out)) != len(out):
            raise BakeError(f"{where}.layers: a layer is listed twice: {layers}")
        return out

    def aura(self, idx: int, iv: Aura, where: str) -> Step:
        alphas = load_alphas(iv.alphas, self.recipe.base_dir, f"{where}.alphas")
        self.artifacts[str(self.recipe.path(iv.alphas))] = "aura alphas"
        modules = self.modules()
        foldable = {m: t for m, t in modules.items() if t in ("Linear", "Conv1D", "Embedding") or m in self.family.experts}
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
                                f"{self.family.name} model{hint}")
            matched += [m for m in hits if m not in matched]
        for m in matched:
            if m in self.family.experts:
                self._aura_experts(idx, m, alphas, step, where)
                continue
            wkey = self.key(m + ".weight")
            if wkey is None:
                raise BakeError(f"{where}: module {m} has no tensor {m}.weight in the checkpoint "
                                "(transformers renames or fuses it on load); AURA cannot fold into it")
            if m not in alphas:
                close = difflib.get_close_matches(m, list(alphas), n=1)
                raise BakeError(f"{where}.alphas: no alphas for module {m}" +
                                (f" (closest key: {close[0]})" if close else f"; the file has {len(alphas)} modules"))
            kind = modules[m]
            axis = 0 if kind == "Linear" else 1
            shape = self.names[wkey]
            a = alphas[m]
            if a.numel() != shape[axis]:
                raise BakeError(f"{where}.alphas[{m}]: {a.numel()} alphas for {shape[axis]} output units "
                                f"(weight {wkey} has shape {list(shape)})")
            self.add_op(wkey, Op(idx, "scale", a, axis), step)
            bkey = self.key(m + ".bias")
            if bkey is not None:
                self.add_op(bkey, Op(idx, "scale", a, 0), step)
            step.hooks.append(Hook(idx, m, "scale", a))
        unused = len(set(alphas) - set(matched))
        step.summary = (f"scale output units of {len(matched)} module(s) matching {', '.join(iv.modules)}"
                        + (f" ({unused} alpha entries for other modules ignored)" if unused else ""))
        return step

    def _aura_experts(self, idx: int, m: str, alphas: dict, step: Step, where: str):
        """AURA on fused experts: unit j of expert e (act(gate) * up, the input of its output projection) is
        scaled by alphas[m] viewed as [experts, units]; the fold scales that column of each expert's output
        projection, in whichever keys the checkpoint stores it (one fused tensor or one per expert)."""
        name, hidden = self.family.experts[m]
        if f"{m}.act_fn" not in self.family.modules:
            raise NotBakeable(f"{where}: {m} ({self.family.modules[m]}) computes its activation inline, with no "
                              "act_fn module, so there is no hook point for a unit inside an expert to verify the "
                              "fold against; aura on its attention, shared experts or other Linear modules bakes")
        shape = self.family.params[name]
        unit = ({1, 2} - {hidden}).pop()
        if m not in alphas:
            raise BakeError(f"{where}.alphas: no alphas for module {m} (fused experts: {shape[0]} x {shape[unit]})")
        a = alphas[m]
        if a.numel() != shape[0] * shape[unit]:
            raise BakeError(f"{where}.alphas[{m}]: {a.numel()} alphas; fused experts need experts x units = "
                            f"{shape[0]} x {shape[unit]} = {shape[0] * shape[unit]} (row-major [experts, units])")
        a = a.reshape(shape[0], shape[unit])
        slices = self.family.keymap.slices(name, shape)
        if not slices:
            raise BakeError(f"{where}: parameter {name} of {m} is not in the checkpoint")
        for sl in slices:
            self.add_op(sl.key, Op(idx, "mul", fold.grid(a, (0, unit), sl, self.names[sl.key])), step)
        step.hooks.append(Hook(idx, m, "scale_experts", a))

    def steer(self, idx: int, iv: Steer, where: str) -> Step:
        v = load_tensor(iv.vector, self.recipe.base_dir, f"{where}.vector")
        self.artifacts[str(self.recipe.path(iv.vector.partition("#")[0]))] = "steering vector"
        layers = self.layers(iv.layers, where)
        if v.shape not in ((self.d,), (self.n_layers, self.d)):
            raise BakeError(f"{where}.vector: shape {list(v.shape)}; expected [{self.d}] (hidden size) "
                            f"or [{self.n_layers}, {self.d}] (one row per block)")
        status, how = self.family.steer_status()
        if status != "exact":
            extra = " (`approximate: true` does not help: there is no slot to approximate with)" if iv.approximate else ""
            raise NotBakeable(f"{where}: steer cannot be baked exactly into a {self.family.name} checkpoint: "
                              f"{how}; run it as a hook{extra}. aura bakes exactly on this family.")
        step = Step(idx, "steer", True, f"add {iv.scale:g} * v to the output of block(s) {layers}")
        names = self.tensor_names()
        if self.family.steer_creates and not any(k in names for k in self.family.steer_creates):
            merge_config(self.config_updates, self.family.steer_config)
            for name, shape in self.family.steer_creates.items():
                self.edits[name] = TensorEdit(name, None, shape, note="new zero bias (" + how.split(" (")[0] + ")")
            step.summary += f"; {how}"
        for i in layers:
            slot = self.family.slots[i]
            vec = iv.scale * (v if v.ndim == 1 else v[i]) / slot.coef
            for name, axis in slot.tensors:
                self.add_op(name, Op(idx, "add", vec, axis), step)
            step.hooks.append(Hook(idx, slot.module, "add", vec))
        return step

    def ablate(self, idx: int, iv: Ablate, where: str) -> Step:
        r = load_tensor(iv.direction, self.recipe.base_dir, f"{where}.direction")
        self.artifacts[str(self.recipe.path(iv.direction.partition("#")[0]))] = "ablation direction"
        if r.shape != (self.d,):
            raise BakeError(f"{where}.direction: shape {list(r.shape)}; expected [{self.d}] (hidden size)")
        norm = r.norm()
        if norm < 1e-12:
            raise BakeError(f"{where}.direction: the vector is zero; a direction needs a nonzero norm")
        r = r / norm
        fam = self.family
        blocks = "all" if iv.layers == "all" else self.layers(iv.layers, where)
        writers = fam.writers(blocks)
        inexact = [w for w in writers if not w.exact]
        status, why = fam.ablate_status()
        if status == "refused":
            raise NotBakeable(f"{where}: ablate cannot be baked into a {fam.name} checkpoint: {why}; run it as a hook.")
        if inexact and not iv.approximate:
            raise NotBakeable(
                f"{where}: ablate cannot be baked exactly into a {fam.name} checkpoint: a norm sits between each "
                "attention/MLP projection and the residual add, so no weight edit equals removing r from what is "
                "written. Set `approximate: true` to orthogonalize each projection against r*g (g = the norm's "
                "scale; the written output is then exactly orthogonal to r, and the report gives the measured "
                "deviation from the hook), or run it as a hook.")
        step = Step(idx, "ablate", not inexact, "")
        names = set(self.tensor_names())
        slots = {s.module: s.tensors for s in fam.slots if s is not None}
        for w in writers:
            u, tensors = r, w.tensors
            if not w.exact:
                u, tensors = self._norm_scaled(w, r, where), w.source
            tensors = tuple(tensors) + tuple(t for t in slots.get(w.module, ()) if t not in tensors and t[0] in names)
            for name, axis in tensors:
                e = self.edits.get(name)
                if e is not None and e.source is None and not e.ops:
                    continue  # a zero bias stays zero
                self.add_op(name, Op(idx, "project_out", u, axis), step)
            step.hooks.append(Hook(idx, w.module, "project_out", r))
        where_txt = "all residual writers (embeddings and every block)" if blocks == "all" else f"blocks {blocks}"
        step.summary = f"remove direction r from {where_txt}" + (
            "" if step.exact else " [approximate: orthogonalized against r*g before post-norms]")
        return step

    def _norm_scaled(self, w, r: torch.Tensor, where: str) -> torch.Tensor:
        """Unit vector along g*r, g = offset + weight of the post-norm after writer `w` (from the checkpoint)."""
        from safetensors import safe_open

        key, offset = w.norm
        with safe_open(str(self.ckpt.path / self.ckpt.files[key]), "pt") as f:
            g = f.get_tensor(key).to(torch.float64) + offset
        u = g * r
        return u / u.norm()

    def build(self) -> Plan:
        for idx, iv in enumerate(self.recipe.interventions):
            where = f"interventions[{idx}]"
            handler = {"aura": self.aura, "steer": self.steer, "ablate": self.ablate}[iv.kind]
            step = handler(idx, iv, where)
            if not step.exact and not iv.approximate:  # defensive: refusals happen in the handlers
                raise NotBakeable(f"{where}: not exact and `approximate` is not set")
            self.steps.append(step)
        self.config_updates["dtype"] = self.recipe.dtype
        return Plan(self.recipe, self.ckpt, self.family, self.recipe.dtype, self.edits,
                    self.config_updates, self.steps, self.artifacts)


def merge_config(into: dict, upd: dict) -> None:
    """Deep-merge config updates (a flag may live in a sub-config such as text_config)."""
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge_config(into[k], v)
        else:
            into[k] = v


def compile_plan(recipe: Recipe, ckpt: Checkpoint) -> Plan:
    """Recipe + checkpoint index -> Plan. Raises before anything is written."""
    return _Builder(recipe, ckpt).build()
