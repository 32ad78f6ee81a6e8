"""What compiling a recipe produces: per-tensor edits (fold ops) and per-module hooks, in recipe order.

Plain data, shared by the compiler (`builder.py`, `bake/kinds/`), the rewriter, the hooks and the
verifier. An op names an entry of the op table (`ops.OPS`), which holds its fold, its hook twin and
its description; `tensors` are the op's operands (float64), `axis` the folded tensor's axis it acts on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (annotations only: importing the plan's types must not load torch)
    import torch


@dataclass(frozen=True)
class Op:
    """One fold on one tensor: `ops.OPS[fn]` with operands `vec` (+ `args`) along `axis`."""

    step: int
    fn: str
    vec: torch.Tensor
    axis: int = 0
    args: tuple = ()

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        from .ops import OPS

        return OPS[self.fn].fold(t, self.vec, self.axis, *self.args)

    def describe(self) -> str:
        from .ops import OPS

        return OPS[self.fn].describe(self)

    def axes(self, ndim: int) -> set[int]:
        """The tensor axes this op couples (folding in slices must keep them whole)."""
        from .ops import OPS

        return OPS[self.fn].axes(self, ndim)


@dataclass
class TensorEdit:
    """The new value of one output tensor: source tensor (None = zeros of `shape`) then `ops`."""

    name: str
    source: str | None
    shape: tuple[int, ...]  # the source's (or the zeros'); ops that add units make `out_shape` larger
    ops: list[Op] = field(default_factory=list)
    note: str = ""

    @property
    def out_shape(self) -> tuple[int, ...]:
        from .ops import OPS

        shape = tuple(self.shape)
        for op in self.ops:
            shape = OPS[op.fn].resize(op, shape)
        return shape


@dataclass(frozen=True)
class Hook:
    """The hook realization: `ops.OPS[fn]`'s hook twin with operands `vec` (+ `args`) on `module`."""

    step: int
    module: str
    fn: str
    vec: torch.Tensor
    args: tuple = ()


@dataclass
class Step:
    index: int
    kind: str
    exact: bool
    summary: str
    hooks: list[Hook] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # kind-specific figures for the report (e.g. rank, leftover)


@dataclass
class Plan:
    recipe: object  # recipe.Recipe
    checkpoint: object  # source.Checkpoint
    family: object  # families.Adapter
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

    def hook_count(self) -> str:
        """'3 interventions as 8 module hooks': what a hooked run attaches."""
        n, h = len(self.steps), len(self.hooks)
        return f"{n} intervention{'' if n == 1 else 's'} as {h} module hook{'' if h == 1 else 's'}"


def merge_config(into: dict, upd: dict) -> None:
    """Deep-merge config updates (a flag may live in a sub-config such as text_config)."""
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge_config(into[k], v)
        else:
            into[k] = v
