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


@contextmanager
def hooked(model: torch.nn.Module, hooks: list[Hook]):
    """Attach `hooks` (in recipe order, so hooks on one module compose in that order)."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for h in hooks:
            if h.module not in modules:
                raise BakeError(f"intervention #{h.step}: module {h.module} not found in the loaded model")
            handles.append(modules[h.module].register_forward_hook(_make(h)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
