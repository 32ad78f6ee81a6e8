"""Steering vectors made elsewhere, converted to bake's form: {"vector": [num_layers, hidden]}.

- repeng / llama.cpp control vectors (GGUF with `direction.N` tensors). Convention, the one
  llama.cpp applies: `direction.N` is added to the output of decoder block N (0-based); llama.cpp
  has no slot for N = 0, so a file never holds `direction.0`. bake's steer at layer N is the same
  edit, so `direction.N` <-> `layers: [N]`.
- `steering-vectors` outputs (a .pt with `layer_activations: {layer: [hidden]}`, block indices).
- SAELens SAEs (`cfg.json` + `sae_weights.safetensors`): feature i's decoder row `W_dec[i]`; the
  hook name `blocks.L.hook_resid_post` maps to steer at layer L.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import BakeError, first_line


def read_control_vector(path: Path) -> dict[int, torch.Tensor]:
    """{block index: vector} from a llama.cpp / repeng control-vector GGUF."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:
        raise BakeError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    out = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if m:
            try:
                out[int(m.group(1))] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
            except (ValueError, TypeError) as e:
                raise BakeError(f"{path}: tensor {t.name} is not a float vector ({e})") from None
    if not out:
        raise BakeError(f"{path}: no direction.N tensors; is it a control vector?")
    if 0 in out:  # llama.cpp refuses such a file: its control vectors start at block 1
        raise BakeError(f"{path}: holds direction.0, which llama.cpp rejects (control vectors are added to the "
                        "output of blocks 1..n-1); this is not a valid control vector")
    return out


def write_control_vector(path: Path, vectors: dict[int, torch.Tensor], model_hint: str = "llama"):
    """Write {block: vector} as a control-vector GGUF (the layout repeng exports)."""
    from gguf import GGUFWriter

    if 0 in vectors:
        raise BakeError("llama.cpp control vectors have no slot for block 0 (direction.0)")
    writer = GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(vectors))
    for layer, v in sorted(vectors.items()):
        writer.add_tensor(f"direction.{layer}", v.detach().float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_steering_vectors(path: Path) -> dict[int, torch.Tensor]:
    """{block: vector} from a `steering-vectors` SteeringVector saved with torch.save (as a dict)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, truncated, or a pickle that is not plain tensors (never executed)
        raise BakeError(f"{path}: cannot read it as a steering-vectors file ({type(e).__name__}: "
                        f"{first_line(e)})") from None
    acts = obj.get("layer_activations") if isinstance(obj, dict) else None
    if not isinstance(acts, dict) or not all(isinstance(k, int) and torch.is_tensor(v) and v.is_floating_point()
                                             for k, v in acts.items()):
        raise BakeError(f"{path}: expected a dict with `layer_activations: {{layer: float tensor}}`")
    return {int(k): v.reshape(-1).float() for k, v in acts.items()}


def read_sae_row(folder: Path, feature: int) -> tuple[int, torch.Tensor]:
    """(layer, W_dec[feature]) from a SAELens folder; the hook must be blocks.L.hook_resid_post."""
    from .sae import read

    sae = read(folder)
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", sae.hook_name)
    if not m:
        raise BakeError(f"{folder}: hook {sae.hook_name!r} is not blocks.L.hook_resid_post; only residual-stream SAEs "
                        "map to a steer at a block output")
    if not 0 <= feature < sae.d_sae:
        raise BakeError(f"{folder}: feature {feature} out of range (the SAE has {sae.d_sae})")
    return int(m.group(1)), sae.W_dec[feature].float()


def to_steering_tensor(vectors: dict[int, torch.Tensor], n_layers: int, hidden: int | None = None) -> torch.Tensor:
    """{block: [d]} -> [n_layers, d] with zero rows elsewhere; every vector must be `hidden` wide and finite."""
    bad = [k for k in vectors if not 0 <= k < n_layers]
    if bad:
        raise BakeError(f"vectors for blocks {bad} but the model has {n_layers} blocks")
    d = hidden or next(iter(vectors.values())).numel()
    wrong = {k: v.numel() for k, v in vectors.items() if v.numel() != d}
    if wrong:
        raise BakeError(f"vectors of width {sorted(set(wrong.values()))} for blocks {sorted(wrong)}, but the model's "
                        f"hidden size is {d}: the vector was made for another model")
    nonfinite = [k for k, v in vectors.items() if not torch.isfinite(v).all()]
    if nonfinite:
        raise BakeError(f"non-finite values (NaN or inf) in the vectors for blocks {nonfinite}")
    full = torch.zeros(n_layers, d)
    for k, v in vectors.items():
        full[k] = v
    return full
