"""The op table: every fold op with its hook twin and its description, in one place.

A kind compiles an intervention into `planning.Op`s on checkpoint tensors and `planning.Hook`s on modules;
both name an entry here. `fold(t, vec, axis, *args)` edits a tensor; `hook(h, vec, *args)` does the
same to a module's output at run time (`attach` overrides how the hook is registered: on the
module's input, or on units inside fused experts). The hook is the specification, the fold its
compilation; tests/test_fold.py holds a property test per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import BakeError
from . import fold


def _args(hook, device) -> tuple:
    """The hook's extra arguments, its tensors on the device of the output they change."""
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in hook.args)


def _on_output(fn):
    def attach(module: torch.nn.Module, hook) -> list:
        def forward_hook(mod, args, output):
            if isinstance(output, tuple):
                h = output[0]
                return (fn(h, hook.vec.to(h.device), *_args(hook, h.device)),) + output[1:]
            return fn(output, hook.vec.to(output.device), *_args(hook, output.device))

        return [module.register_forward_hook(forward_hook)]
    return attach


def _on_input(module: torch.nn.Module, hook) -> list:
    """Scale input unit j by vec[j]: the input features of a Linear / Conv1D (a pre-hook), or the rows
    of an embedding table, i.e. its output for token (position) id j (read from the call's ids)."""
    if isinstance(module, torch.nn.Embedding):  # (and its subclasses: Gemma's scaled embedding)
        def emb_hook(mod, args, kwargs, output):
            ids = args[0] if args else next(iter(kwargs.values()))
            return fold.hook_scale_ids(output, hook.vec, ids)
        return [module.register_forward_hook(emb_hook, with_kwargs=True)]

    def pre(mod, args, kwargs):
        return (fold.hook_scale(args[0], hook.vec.to(args[0].device)),) + tuple(args[1:]), kwargs
    return [module.register_forward_pre_hook(pre, with_kwargs=True)]


def _affine_on_input(module: torch.nn.Module, hook) -> list:
    """LinEAS: the module's first input (a Linear's features, or what a block's MLP receives) through
    scale * x + shift (vec: scale, args: (shift,)); its folds are "scale_in" on the weights that read
    the input and "add" (W @ shift) on their biases."""
    def pre(mod, args, kwargs):
        if args:
            return (fold.hook_affine(args[0], hook.vec.to(args[0].device), hook.args[0].to(args[0].device)),
                    *args[1:]), kwargs
        if "hidden_states" not in kwargs:
            raise BakeError(f"intervention #{hook.step}: {hook.module} was called without a positional input or "
                            "hidden_states; bake cannot tell which input the map applies to")
        x = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": fold.hook_affine(x, hook.vec.to(x.device), hook.args[0].to(x.device))}
    return [module.register_forward_pre_hook(pre, with_kwargs=True)]


def _on_expert_units(experts: torch.nn.Module, hook) -> list:
    """AURA inside fused experts: scale unit j of expert e by vec[e, j] where the experts module computes it,
    at the output of its `act_fn` (act(gate) * up then carries the factor). The eager experts loop calls
    act_fn once per routed expert in ascending expert order; a pre-hook reads that order from the routing
    (`top_k_index`), and a check after the forward refuses any other calling pattern instead of guessing.
    Experts that run all at once (Llama 4: called without routing, act_fn on [experts, tokens, units])
    take vec[e] along their first axis."""
    act = getattr(experts, "act_fn", None)
    if not isinstance(act, torch.nn.Module):
        raise BakeError(f"intervention #{hook.step}: {hook.module} has no act_fn module to hook")
    n_exp = hook.vec.shape[0]
    queue: list[int] = []
    batched = [False]

    def pre(module, args, kwargs):
        idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
        batched[0] = not isinstance(idx, torch.Tensor)
        queue[:] = [] if batched[0] else [int(e) for e in torch.unique(idx) if 0 <= int(e) < n_exp]

    def on_act(module, args, output):
        if batched[0]:
            if output.ndim != 3 or output.shape[0] != n_exp:
                raise BakeError(f"intervention #{hook.step}: {hook.module} was called without top_k_index and its "
                                f"act_fn output {list(output.shape)} has no leading axis of {n_exp} experts; bake "
                                "cannot tell which expert a unit belongs to")
            return fold.hook_scale(output, hook.vec.to(output.device).unsqueeze(1))
        if not queue:
            raise BakeError(f"intervention #{hook.step}: {hook.module}.act_fn ran more often than experts were "
                            "routed; bake cannot tell which expert a unit belongs to")
        return fold.hook_scale(output, hook.vec[queue.pop(0)].to(output.device))

    def post(module, args, output):
        if queue:
            raise BakeError(f"intervention #{hook.step}: {hook.module}.act_fn ran for fewer experts than were "
                            "routed; bake cannot tell which expert a unit belongs to")

    return [experts.register_forward_pre_hook(pre, with_kwargs=True), act.register_forward_hook(on_act),
            experts.register_forward_hook(post)]


def _own_axis(op, ndim: int) -> set[int]:
    return {op.axis}


def _same(op, shape: tuple) -> tuple:
    return shape


def _grown(op, shape: tuple) -> tuple:
    return tuple(n + op.vec.shape[op.axis] if a == op.axis else n for a, n in enumerate(shape))


def _weight(op) -> str:
    w = float(op.args[0]) if op.args else 1.0
    return "" if w == 1.0 else f" x{w:.3g}"


@dataclass(frozen=True)
class OpSpec:
    fold: Callable | None  # (tensor, vec, axis, *args) -> tensor; None: a hook-only op
    attach: Callable | None  # (module, hook) -> hook handles; None: a fold-only op (its twin is another op's hook)
    describe: Callable  # (op) -> str
    axes: Callable = _own_axis  # (op, ndim) -> tensor axes the fold couples
    resize: Callable = _same  # (op, shape) -> the folded tensor's shape


OPS: dict[str, OpSpec] = {
    # AURA: output unit j times alpha[j] (weight rows or columns, bias entries)
    "scale": OpSpec(lambda t, a, axis: fold.scale_units(t, a, axis), _on_output(fold.hook_scale),
                    lambda op: f"scale axis {op.axis}"),
    # AURA mean-shift on a bias (after "scale"): b + (1 - alpha) * mu; its twin is "scale" with mu
    "shift": OpSpec(lambda t, a, axis, mu: fold.shift_units(t, a, mu), None,
                    lambda op: "shift toward mu", lambda op, ndim: set()),
    # input unit j times gain[j] (columns of a Linear, rows of an embedding table)
    "scale_in": OpSpec(lambda t, g, axis: fold.scale_units(t, g, axis), _on_input,
                       lambda op: f"input gain on axis {op.axis}"),
    # LinEAS, hook side: input unit j -> scale[j] * x_j + shift[j] (args: (shift,)); its folds are "scale_in"
    # on the weights reading that input and "add" of W @ shift on their biases
    "affine_in": OpSpec(None, _affine_on_input, lambda op: "affine map on the input"),
    # steering: b + v along axis
    "add": OpSpec(lambda t, v, axis: fold.add_vector(t, v, axis), _on_output(fold.hook_add),
                  lambda op: f"add |v|={op.vec.norm():.4g}", lambda op, ndim: set()),
    # directional ablation of a direction [d] or a subspace [d, k], optionally partial (args: (weight,))
    "project_out": OpSpec(lambda t, q, axis, *w: fold.project_out(t, q, axis, *w), _on_output(fold.hook_project_out),
                          lambda op: ("project out r" if op.vec.ndim == 1 else f"project out a rank-{op.vec.shape[1]} "
                                      "subspace") + _weight(op) + f" on axis {op.axis}"),
    # fused experts: the factor of each key (built by fold.grid); its twin is "scale_experts"
    "mul": OpSpec(lambda t, f, axis: fold.multiply(t, f), None, lambda op: "scale expert units",
                  lambda op, ndim: {a for a, n in enumerate(op.vec.shape) if n != 1}),
    # fused experts, hook side: unit j of expert e times vec[e, j]
    "scale_experts": OpSpec(None, _on_expert_units, lambda op: "scale expert units"),
    # new units: vec's rows (axis 0) or columns (axis 1) appended; fold-only, its twin is the SAE kinds'
    # "sae_gate" (approximate: neurons, bake/kinds/sae_neurons.py). The whole tensor is folded at once.
    "append": OpSpec(lambda t, v, axis: torch.cat([t, v.to(t.dtype)], axis), None,
                     lambda op: f"append {op.vec.shape[op.axis]} {'' if op.vec.any() else 'zero '}unit(s) on axis {op.axis}",
                     lambda op, ndim: set(range(ndim)), _grown),
    # SAE features, hook side only: h + coef * ReLU(h S) S^T (args: (coef,)); baking refuses it or linearizes
    "sae_gate": OpSpec(None, _on_output(fold.hook_sae_gate),
                       lambda op: f"gated SAE term on {op.vec.shape[1]} feature(s) x{float(op.args[0]):.3g}"),
}


def attach(module: torch.nn.Module, hook) -> list:
    """Register `hook` (a planning.Hook) on `module`; returns the handles."""
    spec = OPS.get(hook.fn)
    if spec is None or spec.attach is None:
        raise BakeError(f"intervention #{hook.step}: op {hook.fn!r} has no hook twin in the op table")
    return spec.attach(module, hook)
