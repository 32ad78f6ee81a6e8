"""Streaming checkpoint rewrite: shard by shard, tensor by tensor.

Edited tensors are computed in float64 (float32 for bfloat16 and float16 outputs) and cast once to the output dtype;
the rounding error of that cast is recorded per tensor. Untouched tensors are copied bit-exact
when the dtype does not change. Sharding is preserved; new tensors (zero biases, an untied
lm_head) go into the shard of the tensor they belong with. Peak memory: one output shard plus one source tensor.
"""

from __future__ import annotations

import errno
import json
import math
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..compile.planning import merge_config
from ..compile.planning import Plan, TensorEdit
from ..errors import BakeError
from ..model.source import INDEX_NAME
from ..files import interrupt

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SIDE_FILES = (".json", ".jinja", ".txt", ".model", ".tiktoken")  # tokenizer, generation config, ...


def _anchor(plan: Plan, edit: TensorEdit) -> str:
    """The source tensor whose shard a new tensor joins."""
    if edit.source is not None:
        return edit.source
    weight = edit.name.rsplit(".", 1)[0] + ".weight"
    return weight if weight in plan.checkpoint.files else next(iter(plan.checkpoint.files))


CHUNK = 1 << 22  # elements folded at a time


def compute(edit: TensorEdit, read, out_dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """Apply an edit's ops in float64 (float32 for a bfloat16 or float16 output, whose rounding is
    10^4 times coarser than float32's); return the tensor cast once to `out_dtype` and the max abs
    rounding error of that cast. Large tensors are folded in slices along an axis that no op
    uses (every fold acts independently along the others), so memory stays near one tensor."""
    work = torch.float64 if out_dtype == torch.float32 else torch.float32
    src = read(edit.source) if edit.source is not None else torch.zeros(edit.shape, dtype=out_dtype)
    out = torch.empty(edit.out_shape, dtype=out_dtype)
    used = {a for op in edit.ops for a in op.axes(len(edit.shape))}
    free = [a for a in range(len(edit.shape)) if a not in used]
    if not free or src.numel() <= CHUNK:
        slices = [(slice(None),) * len(edit.shape)]
    else:
        axis = free[0]
        step = max(1, CHUNK * edit.shape[axis] // src.numel())
        slices = [(slice(None),) * axis + (slice(i, i + step),) for i in range(0, edit.shape[axis], step)]
    err = 0.0
    for sl in slices:
        t = src[sl].to(work)
        for op in edit.ops:
            t = op.apply(t)
        out[sl] = t.to(out_dtype)
        if t.numel():
            e = (out[sl].to(work) - t).abs().max().item()  # NaN or inf when the cast overflowed
            if not math.isfinite(e):
                bad = t[~torch.isfinite(out[sl])]
                what = (f"values up to {bad.abs().max().item():.3g} overflow {out_dtype} (largest "
                        f"{torch.finfo(out_dtype).max:.3g})") if torch.isfinite(bad).all() else "non-finite values"
                raise BakeError(f"{edit.name}: the folded tensor has {what}; nothing was written. Use a smaller "
                                "scale or alpha, or a wider dtype (dtype: float32)")
            err = max(err, e)
    return out, err


def save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with its I/O errors (its own exception type, the OS error in the
    message) raised as the OSError they are, so that a full disk reads as one."""
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        m = re.search(r"\(os error (\d+)\)", str(e))
        code = int(m.group(1)) if m else errno.EIO
        raise OSError(code, str(e).split(": ", 1)[-1].split(" (os error")[0], str(path)) from None


def rewrite(plan: Plan, out_dir: Path, progress: bool = True) -> list[dict]:
    """Write the baked checkpoint into `out_dir` (which must exist and be empty)."""
    ckpt = plan.checkpoint
    out_dtype = DTYPES[plan.dtype]
    by_shard: dict[str, list[str]] = {f: [] for f in ckpt.shard_files}
    for name, f in ckpt.files.items():
        by_shard[f].append(name)
    for name, edit in plan.edits.items():
        if name not in ckpt.files:
            by_shard[ckpt.files[_anchor(plan, edit)]].append(name)

    stats: list[dict] = []
    weight_map: dict[str, str] = {}
    total_size = 0
    bar = tqdm(total=sum(len(v) for v in by_shard.values()), desc="baking tensors", unit="tensor",
               disable=not progress)
    def read(name: str) -> torch.Tensor:  # every input tensor passes here once: a corrupt one is refused by name
        t = ckpt.read(name)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BakeError(f"{ckpt.path / ckpt.files[name]}: input weight {name} holds non-finite values (NaN or "
                            "inf); the checkpoint is corrupt (re-download or re-save it); nothing was written")
        return t

    for fname, names in by_shard.items():
        shard: dict[str, torch.Tensor] = {}
        for name in names:
            if name in plan.edits:
                edit = plan.edits[name]
                shard[name], err = compute(edit, read, out_dtype)
                stats.append({"tensor": name, "source": edit.source, "note": edit.note,
                              "ops": [f"#{op.step} {plan.steps[op.step].kind}: {op.describe()}" for op in edit.ops],
                              "rounding_max_abs": err})
            else:
                t = read(name)
                shard[name] = t if t.dtype == out_dtype or not t.is_floating_point() else t.to(out_dtype)
            weight_map[name] = fname
            total_size += shard[name].numel() * shard[name].element_size()
            bar.update(1)
        save_shard(shard, out_dir / fname)
        del shard
        interrupt.check()
    bar.close()

    if len(by_shard) > 1 or (ckpt.path / INDEX_NAME).is_file():
        (out_dir / INDEX_NAME).write_text(json.dumps(
            {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config = dict(ckpt.config)
    merge_config(config, plan.config_updates)
    config.pop("torch_dtype", None)
    from transformers import PreTrainedConfig

    config = PreTrainedConfig._encode_special_floats(config)  # infinities as transformers writes them
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for p in sorted(ckpt.path.iterdir()):
        if p.is_file() and p.suffix in SIDE_FILES and p.name not in ("config.json", INDEX_NAME, "bake_report.json"):
            shutil.copyfile(p, out_dir / p.name)
    return stats
