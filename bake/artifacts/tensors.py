"""Reading intervention artifacts (vectors, directions, alphas) safely and checking them.

Formats: `.safetensors`, `.pt` (loaded with `torch.load(weights_only=True)`), `.npy`; `path#key`
picks one tensor from a file that holds several. AURA alphas also come as an ml-aura folder of
`<module_name>.statedict` files, each a dict with key `alpha` of shape (1, 1, N).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import BakeError, close_file

SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")


def split_key(spec: str) -> tuple[str, str | None]:
    path, _, key = spec.partition("#")
    return path, (key or None)


def _read(path: Path, where: str):
    """A tensor or a {name: tensor} dict from one file."""
    if not path.exists():
        raise BakeError(f"{where}: no such file {path}{close_file(path)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return load_file(str(path))
        if suffix in (".pt", ".pth", ".statedict"):
            return torch.load(str(path), map_location="cpu", weights_only=True)
        if suffix == ".npy":
            return torch.from_numpy(np.load(str(path), allow_pickle=False))
    except Exception as e:  # unreadable, truncated, or a pickle that is not plain tensors
        raise BakeError(f"{where}: cannot read {path.name}: {type(e).__name__}: {e}") from None
    raise BakeError(f"{where}: unsupported file type {path.suffix!r} ({path.name}); use one of {', '.join(SUFFIXES)}")


def _check_finite(t: torch.Tensor, where: str) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise BakeError(f"{where}: expected a tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise BakeError(f"{where}: expected a floating-point tensor, got {t.dtype}")
    t = t.detach().to(torch.float64)
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise BakeError(f"{where}: {bad} non-finite value(s) (NaN or inf) in the tensor")
    return t


def _index(t: torch.Tensor, index: str, where: str) -> torch.Tensor:
    """`t[i, j, ...]` from the text "i, j, ..."; the last index may be fractional (x = 12.5 interpolates
    linearly between t[..., 12] and t[..., 13]: a direction between two layers' candidates)."""
    parts = [p.strip() for p in index.split(",")]
    for n, p in enumerate(parts):
        if t.ndim == 0:
            raise BakeError(f"{where}: [{index}] has more indices than the tensor has axes")
        try:
            x = float(p)
        except ValueError:
            raise BakeError(f"{where}: [{index}]: {p!r} is not a number") from None
        size = t.shape[0]
        if x == int(x):
            i = int(x)
            if not -size <= i < size:
                raise BakeError(f"{where}: index {i} is out of range for an axis of {size}")
            t = t[i]
            continue
        if n != len(parts) - 1 or not 0 <= x <= size - 1:
            raise BakeError(f"{where}: a fractional index ({p}) must be the last one and within 0..{size - 1}")
        lo, frac = int(x // 1), x - x // 1
        t = (1 - frac) * t[lo] + frac * t[lo + 1]
    return t


def load_tensor(spec: str, base: Path, where: str) -> torch.Tensor:
    """One float64 tensor from `path[#key]`, or a slice of it, `path#key[i, x]` (see `_index`)."""
    path, key = split_key(spec)
    index = None
    if key and key.endswith("]") and "[" in key:
        key, _, index = key[:-1].partition("[")
        key = key or None
    path = (base / path) if not Path(path).is_absolute() else Path(path)
    obj = _read(path, where)
    if isinstance(obj, dict):
        if key is None:
            if len(obj) != 1:
                raise BakeError(f"{where}: {path.name} holds {len(obj)} tensors ({', '.join(list(obj)[:6])}); "
                                f"pick one with {path.name}#KEY")
            key = next(iter(obj))
        if key not in obj:
            raise BakeError(f"{where}: no tensor {key!r} in {path.name}; it holds {', '.join(list(obj)[:8])}")
        obj = obj[key]
    elif key is not None:
        raise BakeError(f"{where}: {path.name} holds a single tensor; drop #{key}")
    t = _check_finite(obj, where)
    return _index(t, index, where) if index is not None else t


def load_alphas(spec: str, base: Path, where: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """{module_name: alphas [N]} from a safetensors/pt dict or an ml-aura .statedict folder. With `prefix`
    (e.g. "mu/"), a file whose keys carry it (an alphas file that also holds means) gives those entries."""
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    if path.is_dir():
        files = sorted(path.glob("*.statedict"))
        if not files:
            raise BakeError(f"{where}: folder {path} has no ml-aura *.statedict files")
        out = {}
        for f in files:
            d = _read(f, where)
            if not isinstance(d, dict) or "alpha" not in d:
                raise BakeError(f"{where}: {f.name} is not an ml-aura state dict (no key 'alpha')")
            out[f.name[: -len(".statedict")]] = _check_finite(d["alpha"], f"{where} ({f.name})").reshape(-1)
        return out
    obj = _read(path, where)
    if not isinstance(obj, dict):
        raise BakeError(f"{where}: alphas must map module names to vectors ({{module_name: [N]}}); "
                        f"{path.name} holds a single tensor")
    if prefix and any(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    elif prefix and any(k.startswith("auroc/") for k in obj):
        raise BakeError(f"{where}: {path.name} is a learned alphas file without means ({prefix}...); learn it with "
                        "`means: true` (`bake learn aura --means`), which stores them beside the alphas")
    return {k: _check_finite(v, f"{where} [{k}]").reshape(-1)
            for k, v in obj.items() if not k.startswith(("auroc/", "mu/"))}
