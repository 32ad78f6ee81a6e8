"""A model streamed from its safetensors files: a meta-device skeleton whose modules read their
weights when they run, so that memory holds about one module plus activations.

accelerate's big-model hooks (`cpu_offload` with a weights map) put a module's parameters in place
before its forward and back on the meta device after it. The weights map here reads each parameter
from the checkpoint through the family's key map (fused, per-expert and renamed keys alike, as the
module-local checks do), converted to the compute dtype; nothing is read while the model is built.
Chosen over transformers' own disk offload (`from_pretrained(device_map="auto", max_memory={"cpu":
0})`), measured first: it reads every tensor once while loading and keeps every shard mapped until
it is done, so the peak RSS of a load reached the size of the checkpoint (1.7 GiB of file pages
for a 1.6 GiB bfloat16 model), and it re-saves converted weights (fused experts) to disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import BakeError
from .keys import KeyMap
from .skeleton import assemble, skeleton
from .source import Checkpoint, open_checkpoint


def return_freed_memory() -> None:
    """Ask glibc to give large freed blocks back to the system at once. By default its mmap
    threshold rises after each large free (up to 32 MiB), so tensors of a few MiB come from the heap,
    whose freed space stays in the process: streaming a 1.6 GiB model left 0.9 GiB of RSS behind.
    No effect where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: blocks from 1 MiB are mapped, and unmapped when freed
        libc.mallopt(-1, 1 << 24)  # M_TRIM_THRESHOLD: trim the heap top beyond 16 MiB free
    except (OSError, AttributeError):
        pass


class DiskWeights(Mapping):
    """Parameter name -> tensor as stored (accelerate casts it to the parameter's dtype), read from
    the checkpoint when asked, one file mapping open at a time."""

    def __init__(self, ckpt: Checkpoint, keymap: KeyMap, shapes: dict[str, tuple[int, ...]],
                 aliases: dict[str, list[str]]):
        self.ckpt, self.keymap, self.shapes, self.aliases = ckpt, keymap, shapes, aliases

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self.shapes[name]
        for n in [name, *self.aliases.get(name, [])]:  # a tied weight is stored under one of its names
            if self.keymap.slices(n, shape):
                return assemble(self.keymap, n, shape, self.ckpt.read, None)
        raise BakeError(f"{self.ckpt.path}: no checkpoint key holds the model's parameter {name}")

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def load_streamed(path: Path, rules: dict, *, trust_remote_code: bool, dtype: torch.dtype, moe: bool = False):
    """The causal LM of folder `path` in `dtype` with every weight left on disk (eval mode; `.to(dtype)`
    casts it later). `rules`: the family's key-map rules (`family.key_rules`)."""
    import logging

    from accelerate import cpu_offload

    return_freed_memory()
    ckpt = open_checkpoint(Path(path))
    model = skeleton(ckpt.path, trust_remote_code, moe, dtype)
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    aliases = {n: [m for m in group if m != n] for group in names.values() for n in group}
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():  # tied after loading
        aliases.setdefault(target, []).append(source)
        aliases.setdefault(source, []).append(target)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    weights = DiskWeights(ckpt, KeyMap(rules, ckpt.shapes), shapes, aliases)
    for n, b in list(model.named_buffers()):  # buffers the constructor leaves empty come from the checkpoint
        if b.is_meta:
            if not weights.keymap.slices(n, tuple(b.shape)):
                raise BakeError(f"{path}: buffer {n} is neither computed by the model nor stored in the checkpoint")
            owner, _, attr = n.rpartition(".")
            model.get_submodule(owner)._buffers[attr] = assemble(weights.keymap, n, tuple(b.shape), ckpt.read, b.dtype)
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    cpu_offload(model, execution_device=torch.device("cpu"), state_dict=weights)
    return model.eval()
