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

from . import arch, fold
from .artifacts import load_alphas, load_tensor
from .errors import BakeError, NotBakeable, first_line
from .recipe import Ablate, Aura, Recipe, Steer
from .source import Checkpoint


@dataclass(frozen=True)
class Op:
    """One fold on one tensor: `fn` in (scale, add, project_out), vector `vec` (float64)."""

    step: int
    fn: str
    vec: torch.Tensor
    axis: int = 0

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        if self.fn == "scale":
            return fold.scale_units(t, self.vec, self.axis)
        if self.fn == "add":
            return fold.add_vector(t, self.vec)
        if self.fn == "project_out":
            return fold.project_out(t, self.vec, self.axis)
        raise ValueError(self.fn)

    def describe(self) -> str:
        return {"scale": f"scale axis {self.axis}", "add": f"add |v|={self.vec.norm():.4g}",
                "project_out": f"project out r on axis {self.axis}"}[self.fn]


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
    fn: str  # scale | add | project_out
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
    family: arch.Family
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


def _meta_modules(ckpt: Checkpoint, trust_remote_code: bool) -> dict[str, str]:
    """{module name: class name} of the model built on the meta device (no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.for_model(**{k: v for k, v in ckpt.config.items() if k not in ("transformers_version",)})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, ZeroDivisionError, OverflowError) as e:
        raise BakeError(f"{ckpt.path / 'config.json'}: transformers cannot build a model from this config "
                        f"({type(e).__name__}: {first_line(e)})") from None
    return {n: type(m).__name__ for n, m in model.named_modules() if n}


class _Builder:
    def __init__(self, recipe: Recipe, ckpt: Checkpoint):
        self.recipe, self.ckpt = recipe, ckpt
        self.config = ckpt.config
        self.family = arch.resolve(self.config)
        self.n_layers = arch.num_layers(self.config)
        self.d = arch.hidden_size(self.config)
        self.names = ckpt.shapes
        self.edits: dict[str, TensorEdit] = {}
        self.config_updates: dict = {}
        self.steps: list[Step] = []
        self.artifacts: dict[str, str] = {}
        self._modules = None
        self._untied = False

    # -- names -------------------------------------------------------------------------------
    def key(self, name: str) -> str | None:
        """The checkpoint key of a model tensor name (old GPT-2 checkpoints drop `transformer.`)."""
        if name in self.names or name in self.edits:
            return name
        head, _, rest = name.partition(".")
        if rest and rest in self.names and head in ("transformer", "model"):
            return rest
        return None

    def tensor_names(self):
        return list(self.names) + [n for n in self.edits if n not in self.names]

    def edit(self, name: str) -> TensorEdit:
        if name not in self.edits:
            self.edits[name] = TensorEdit(name, name, tuple(self.names[name]))
        return self.edits[name]

    def modules(self) -> dict[str, str]:
        if self._modules is None:
            self._modules = _meta_modules(self.ckpt, self.recipe.trust_remote_code)
        return self._modules

    # -- tied embeddings ---------------------------------------------------------------------
    def touch(self, name: str) -> TensorEdit:
        """Edit a tensor; untie first when it is a tied embedding or head (logits must not change)."""
        emb = self.key(self.family.embed.module + ".weight")
        head = self.family.lm_head
        if arch.tied(self.config) and name in (emb, head) and not self._untied:
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
        foldable = {m: t for m, t in modules.items() if t in ("Linear", "Conv1D", "Embedding")}
        step = Step(idx, "aura", True, "")
        matched: list[str] = []
        for j, pattern in enumerate(iv.modules):
            hits = [m for m in foldable if fnmatch.fnmatchcase(m, pattern)]
            if not hits:
                other = [m for m in modules if fnmatch.fnmatchcase(m, pattern)]
                if other:
                    raise BakeError(f"{where}.modules[{j}]: {pattern!r} matches {other[0]} ({modules[other[0]]}), "
                                    "which is not a Linear/Conv1D/Embedding module; AURA scales their output units")
                close = difflib.get_close_matches(pattern, list(foldable), n=3, cutoff=0.5)
                hint = f"; close: {', '.join(close)}" if close else ""
                raise BakeError(f"{where}.modules[{j}]: {pattern!r} matches no module of this "
                                f"{self.family.name} model{hint}")
            matched += [m for m in hits if m not in matched]
        for m in matched:
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

    def steer(self, idx: int, iv: Steer, where: str) -> Step:
        v = load_tensor(iv.vector, self.recipe.base_dir, f"{where}.vector")
        self.artifacts[str(self.recipe.path(iv.vector.partition("#")[0]))] = "steering vector"
        layers = self.layers(iv.layers, where)
        if v.shape not in ((self.d,), (self.n_layers, self.d)):
            raise BakeError(f"{where}.vector: shape {list(v.shape)}; expected [{self.d}] (hidden size) "
                            f"or [{self.n_layers}, {self.d}] (one row per block)")
        ok, how = arch.steer_slot(self.family, self.config, self.tensor_names())
        if not ok:
            extra = " (`approximate: true` does not help: there is no slot to approximate with)" if iv.approximate else ""
            raise NotBakeable(f"{where}: steer cannot be baked exactly into a {self.family.name} checkpoint: "
                              f"{how}{extra}. aura bakes exactly on this family.")
        slot = self.family.bias_slot
        step = Step(idx, "steer", True, f"add {iv.scale:g} * v to the output of block(s) {layers}")
        if self.family.mlp_bias_name(0) not in self.tensor_names() and slot is not None:
            self.config_updates.update(slot.config)
            for tmpl in slot.creates:
                for i in range(self.n_layers):
                    name = tmpl.format(i=i)
                    if self.key(name) is None:
                        out = self.names[name[: -len(".bias")] + ".weight"][0]
                        self.edits[name] = TensorEdit(name, None, (out,), note="new zero bias (" + slot.note.split(" (")[0] + ")")
            step.summary += f"; {slot.note}"
        for i in layers:
            vec = iv.scale * (v if v.ndim == 1 else v[i])
            bias = self.key(self.family.mlp_bias_name(i))
            self.add_op(bias, Op(idx, "add", vec), step)
            step.hooks.append(Hook(idx, self.family.mlp.module.format(i=i), "add", vec))
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
        if fam.post_norm and not iv.approximate:
            raise NotBakeable(
                f"{where}: ablate cannot be baked exactly into a {fam.name} checkpoint: a norm sits between each "
                "attention/MLP projection and the residual add, so no weight edit equals removing r from what is "
                "written. Set `approximate: true` to orthogonalize each projection against r*g (g = the norm's "
                "scale; the written output is then exactly orthogonal to r, and the report gives the measured "
                "deviation from the hook), or run it as a hook.")
        blocks = "all" if iv.layers == "all" else self.layers(iv.layers, where)
        exact = not fam.post_norm
        step = Step(idx, "ablate", exact, "")
        names = self.tensor_names()
        for w, i in arch.writers(fam, self.n_layers, blocks):
            module = w.module.format(i=i) if i is not None else w.module
            u = r
            if w.post_norm is not None and i is not None:
                u = self._norm_scaled(w.post_norm.format(i=i), r, where)
            found = []
            for t in w.tensors:
                for name in arch.match_tensors(t, names, i):
                    if self.edits.get(name) is not None and self.edits[name].source is None and not self.edits[name].ops:
                        continue  # a zero bias stays zero
                    self.add_op(name, Op(idx, "project_out", u, t.axis), step)
                    found.append(name)
            if not any(not n.endswith(".bias") for n in found):
                raise BakeError(f"{where}: no weight found in the checkpoint for residual writer {module} "
                                f"(looked for {', '.join(t.pattern.replace('{i}', str(i)) for t in w.tensors)})")
            step.hooks.append(Hook(idx, arch.hook_module(w, i), "project_out", r))
        where_txt = "all residual writers (embeddings and every block)" if blocks == "all" else f"blocks {blocks}"
        step.summary = f"remove direction r from {where_txt}" + ("" if exact else " [approximate: orthogonalized against r*g before post-norms]")
        return step

    def _norm_scaled(self, norm_module: str, r: torch.Tensor, where: str) -> torch.Tensor:
        """Unit vector along g*r, g = offset + weight of a post-norm (read from the checkpoint)."""
        from safetensors import safe_open

        key = self.key(norm_module + ".weight")
        if key is None:
            raise BakeError(f"{where}: post-norm {norm_module}.weight not in the checkpoint")
        with safe_open(str(self.ckpt.path / self.ckpt.files[key]), "pt") as f:
            g = f.get_tensor(key).to(torch.float64) + self.family.norm_offset
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


def compile_plan(recipe: Recipe, ckpt: Checkpoint) -> Plan:
    """Recipe + checkpoint index -> Plan. Raises before anything is written."""
    return _Builder(recipe, ckpt).build()
