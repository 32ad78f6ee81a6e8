"""The hook realization: each intervention as plain PyTorch forward hooks (the specification)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from . import fold
from .compile import Hook
from .errors import BakeError

_FNS = {"scale": fold.hook_scale, "add": fold.hook_add, "project_out": fold.hook_project_out}


def _make(hook: Hook):
    fn, vec = _FNS[hook.fn], hook.vec  # float64; the fold helpers cast it to the activation's dtype

    def forward_hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0], vec.to(output[0].device)),) + output[1:]
        return fn(output, vec.to(output.device))

    return forward_hook


def _attach_experts(experts: torch.nn.Module, hook: Hook) -> list:
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


@contextmanager
def hooked(model: torch.nn.Module, hooks: list[Hook]):
    """Attach `hooks` (in recipe order, so hooks on one module compose in that order)."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for h in hooks:
            if h.module not in modules:
                raise BakeError(f"intervention #{h.step}: module {h.module} not found in the loaded model")
            if h.fn == "scale_experts":
                handles += _attach_experts(modules[h.module], h)
            else:
                handles.append(modules[h.module].register_forward_hook(_make(h)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
