"""The hook realization: each intervention as plain PyTorch forward hooks (the specification).

Which hook each op registers lives in the op table (`ops.OPS`); this module attaches a plan's hooks.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import BakeError
from .ops import attach


@contextmanager
def hooked(model: torch.nn.Module, hooks: list):
    """Attach `hooks` (planning.Hook, in recipe order, so hooks on one module compose in that order)."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for h in hooks:
            if h.module not in modules:
                raise BakeError(f"intervention #{h.step}: module {h.module} not found in the loaded model")
            handles += attach(modules[h.module], h)
        yield model
    finally:
        for handle in handles:
            handle.remove()
