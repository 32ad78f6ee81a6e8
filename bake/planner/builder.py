"""Compile a recipe into a plan: which tensors change, by which fold ops, in which order.

Pure with respect to the output: it reads config.json, safetensors headers, the artifacts and the
few tensors some variants need (post-norm scales, norm-preserving ablation's norms), and raises
`BakeError` / `NotBakeable` before anything is written. Each intervention is compiled by its kind
(`bake.kinds`), which records the hook realization (module + op) beside the folds: the
specification the verifier checks the plan against. This module holds what kinds share: the
builder of tensor edits, tied-embedding untying, layer checks and artifact reading.
"""

from __future__ import annotations

import json

import torch

from .. import kinds
from ..errors import BakeError, NotBakeable
from ..families import Adapter
from ..families import resolve as resolve_family
from ..model.source import Checkpoint
from ..artifacts.tensors import load_tensor
from ..recipe.schema import Recipe
from ..compile import fold
from ..compile.planning import Op, Plan, Step, TensorEdit, merge_config


class _Builder:
    """The plan under construction; kinds add ops through it."""

    def __init__(self, recipe: Recipe, ckpt: Checkpoint, hooks_only: bool = False):
        self.recipe, self.ckpt, self.hooks_only = recipe, ckpt, hooks_only
        self.config = ckpt.config
        self.family: Adapter = resolve_family(self.config, ckpt.shapes, recipe.trust_remote_code)
        self.names = ckpt.shapes
        self.edits: dict[str, TensorEdit] = {}
        self.config_updates: dict = {}
        self.steps: list[Step] = []
        self.artifacts: dict[str, str] = {}
        self._untied = False
        self._grown: set[str] = set()  # tensors an "append" op grows
        self._also: dict[str, list[tuple[str, int]]] = {}  # writer module -> slot tensors created or used by steer

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

    def module_of(self, key: str) -> str | None:
        """The module whose `.weight` is all of checkpoint key `key`."""
        for m in self.family.modules:
            if self.key(m + ".weight") == key:
                return m
        return None

    def tensor_names(self):
        return list(self.names) + [n for n in self.edits if n not in self.names]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.edits[name].out_shape) if name in self.edits else tuple(self.names[name])

    def current(self, name: str) -> torch.Tensor:
        """Tensor `name` as the plan so far would write it, in float64 (reads one tensor)."""
        e = self.edits.get(name)
        source = e.source if e is not None else name
        t = self.ckpt.read(source).to(torch.float64) if source is not None else torch.zeros(e.shape, dtype=torch.float64)
        for op in (e.ops if e is not None else ()):
            t = op.apply(t)
        return t

    def edit(self, name: str) -> TensorEdit:
        if name not in self.edits:
            self.edits[name] = TensorEdit(name, name, tuple(self.names[name]))
        return self.edits[name]

    def append_units(self, name: str, op: Op, step: Step):
        """Grow tensor `name` by `op` (an "append" op: new units along op.axis)."""
        self.add_op(name, op, step)
        self._grown.add(name)

    def _check_grown(self) -> None:
        """Every op on a grown tensor must fit the shape it meets (a later step sized for the old units
        would fail while writing): run the ops on meta tensors and refuse a misfit before anything is written."""
        from ..compile.ops import OPS

        for name in sorted(self._grown):
            e = self.edits[name]
            t = torch.empty(e.shape, dtype=torch.float64, device="meta")
            for op in e.ops:
                try:
                    t = OPS[op.fn].fold(t, op.vec.to("meta"), op.axis, *op.args)
                except RuntimeError:
                    raise NotBakeable(f"interventions[{op.step}] edits {name} after approximate: neurons added units "
                                      f"to it ({list(t.shape)}), and its edit is sized for the units it had; list "
                                      "the SAE intervention after it") from None

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

    # -- what kinds share ----------------------------------------------------------------------
    def layers(self, layers, where: str) -> list[int]:
        n = self.family.n_layers
        out = []
        for j, i in enumerate(layers):
            if not 0 <= i < n:
                raise BakeError(f"{where}.layers[{j}]: layer {i} is out of range; the model has "
                                f"{n} blocks (0..{n - 1})")
            out.append(i)
        if len(set(out)) != len(out):
            raise BakeError(f"{where}.layers: a layer is listed twice: {layers}")
        return out

    def note_artifact(self, ref: str, role: str) -> None:
        self.artifacts[str(self.recipe.path(ref.partition("#")[0]))] = role

    def tensor(self, ref: str, where: str, role: str) -> torch.Tensor:
        """One float64 tensor from an artifact reference `path[#key[index]]`, recorded as read."""
        t = load_tensor(ref, self.recipe.base_dir, where)
        self.note_artifact(ref, role)
        return t

    def merge_config(self, upd: dict) -> None:
        merge_config(self.config_updates, upd)

    def create_bias(self, module: str, where: str, what: str) -> str:
        """The bias of `module`, created as zeros through the family's stock bias flag; refused without one."""
        name = module + ".bias"
        if name not in self.family.steer_creates:
            flags = ", ".join(f"{k}: {json.dumps(v)}" for k, v in self.family.steer_config.items()
                              if k != "architectures") or "none"
            raise NotBakeable(f"{where}: {module} has no bias to hold {what}, and the stock config flag bake uses to "
                              f"add biases to {self.family.name} ({flags}) does not create one; drop it or run it "
                              "as a hook")
        if name not in self.edits:
            self.create_zeros(self.family.steer_creates, self.family.steer_config, self.family.steer_how)
        return name

    def create_zeros(self, creates: dict, flags: dict, how: str) -> None:
        """Set the config `flags` and write the biases they create ({name: shape}) as zeros."""
        self.merge_config(flags)
        for n, shape in creates.items():
            self.edits.setdefault(n, TensorEdit(n, None, shape, note="new zero bias (" + how.split(" (")[0] + ")"))

    def writes_also(self, module: str, tensors) -> None:
        """Slot tensors a kind wrote to that a later residual edit of `module` must treat as its output."""
        lst = self._also.setdefault(module, [])
        lst += [t for t in tensors if t not in lst]

    def writes_of(self, w) -> tuple[tuple[str, int], ...]:
        """A writer's output-side tensors, with the steering slots of its module that exist (checkpoint
        biases, or biases an earlier step created)."""
        names = set(self.tensor_names())
        extra = [t for s in self.family.slots if s is not None and s.module == w.module for t in s.tensors]
        extra += [t for site in self.family.sites for s in site.values() if s.module == w.module for t in s.tensors]
        extra += self._also.get(w.module, [])
        out = list(w.tensors)
        for t in extra:
            if t not in out and t[0] in names:
                out.append(t)
        return tuple(out)

    def norm_scaled(self, w, r: torch.Tensor, where: str) -> torch.Tensor:
        """The direction(s) scaled by g, g = offset + weight of the post-norm after writer `w` (read from the
        checkpoint): a unit vector along g*r, or an orthonormal basis of g*Q."""
        key, offset = w.norm
        g = self.ckpt.read(key).to(torch.float64) + offset
        if r.ndim == 2:
            return fold.orthonormal((g.unsqueeze(1) * r).T)[0]
        u = g * r
        return u / u.norm()

    def build(self) -> Plan:
        for idx, iv in enumerate(self.recipe.interventions):
            where = f"interventions[{idx}]"
            kind = kinds.get(iv.kind)
            step = kind.hook_step(self, idx, iv, where) if self.hooks_only else kind.compile(self, idx, iv, where)
            if not self.hooks_only and not step.exact and not iv.approximate:  # defensive: kinds refuse
                raise NotBakeable(f"{where}: not exact and `approximate` is not set")
            self.steps.append(step)
        self._check_grown()
        self.config_updates["dtype"] = self.recipe.dtype
        return Plan(self.recipe, self.ckpt, self.family, self.recipe.dtype, self.edits,
                    self.config_updates, self.steps, self.artifacts)



def compile_plan(recipe: Recipe, ckpt: Checkpoint, hooks_only: bool = False) -> Plan:
    """Recipe + checkpoint index -> Plan. Raises before anything is written. `hooks_only`: the hook
    realization of every intervention (each kind's `hook_step`), for running hooked, not for baking."""
    return _Builder(recipe, ckpt, hooks_only).build()
