"""A model of a checkpoint's config with its parameters on the meta device, filled one submodule at a
time from the checkpoint's keys through the family's key map: how verification, streaming, learning
and `bake explain` read a model larger than memory, one module in memory at a time."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BakeError
from .keys import KeyMap
from .source import Checkpoint


def skeleton(path: Path, trust_remote_code: bool, moe: bool, dtype: torch.dtype | None = None):
    """The model of the folder's config.json with its parameters on the meta device (accelerate's
    big-model skeleton): structure, shapes and the buffers its constructor computes, no weights;
    built in `dtype` when given, as `from_pretrained(dtype=...)` builds it."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    extra = {"dtype": dtype} if dtype is not None else {}
    with init_empty_weights():  # parameters on the meta device; buffers (embedding scales) real, as computed
        try:
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code, **extra,
                                                    **({"experts_implementation": "eager"} if moe else {}))
        except (TypeError, ValueError):
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code, **extra)


def assemble(keymap: KeyMap, name: str, shape: tuple[int, ...], read, dtype: torch.dtype | None = torch.float64
             ) -> torch.Tensor:
    """Model parameter `name` of `shape` (in `dtype`; None: as stored) from the checkpoint keys the key
    map names."""
    slices = keymap.slices(name, shape)
    if not slices:
        raise BakeError(f"{name}: no checkpoint key holds this parameter")
    first = read(slices[0].key)
    s0 = slices[0]
    dtype = dtype or first.dtype
    if (len(slices) == 1 and not s0.index and tuple(first.shape) == shape
            and all(b == a and st == 0 and sp == 1 for b, (a, st, sp) in enumerate(s0.axes))):
        return first.to(dtype)  # stored as the model holds it: no second copy
    out = torch.empty(shape, dtype=dtype)
    for s in slices:
        t = (first if s is s0 else read(s.key)).to(dtype)
        idx: list = [slice(None)] * len(shape)
        fixed = dict(s.index)
        for a, i in fixed.items():
            idx[a] = i
        for b, (a, start, step) in enumerate(s.axes):
            idx[a] = slice(start, start + t.shape[b] * step, step)
        free = [a for a in range(len(shape)) if a not in fixed]  # the view's axes, in parameter order
        out[tuple(idx)] = t.permute([s.key_axis(a) for a in free])
    return out


def load(skel, name: str, ckpt: Checkpoint, keymap: KeyMap, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """Submodule `name` of a meta skeleton, with its parameters read from `ckpt` (in `dtype`, eval)."""
    from accelerate.utils import set_module_tensor_to_device

    module = skel.get_submodule(name)
    meta = [b for b, t in module.named_buffers() if t.is_meta]
    if meta:
        raise BakeError(f"{name} has buffers ({', '.join(meta)}) that neither its constructor nor a checkpoint fills")
    for pname, p in list(module.named_parameters()):
        set_module_tensor_to_device(module, pname, "cpu", value=assemble(keymap, f"{name}.{pname}", tuple(p.shape),
                                                                         ckpt.read, dtype))
    return module.to(dtype).eval()


def release(module: torch.nn.Module) -> None:
    """Parameters back to the meta device (buffers, which the constructor computed, stay)."""
    from accelerate.utils import set_module_tensor_to_device

    for pname, p in list(module.named_parameters()):
        if not p.is_meta:
            set_module_tensor_to_device(module, pname, "meta")
