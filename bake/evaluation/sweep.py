"""The recipe key a sweep varies: `KEY=v1,v2,...`, where KEY is a path into the recipe
(`interventions[1].scale`, `interventions[2].weights[4]`, `interventions[0].alphas.learn.value`) or
the last name of exactly one numeric key in it (`scale`). A numeric field an intervention leaves at
its kind's default (`strength` of an aura step that does not set it) counts too. Each point is the
recipe with that one value replaced (or set), re-baked from scratch."""

from __future__ import annotations

import copy
import re

from ..errors import BakeError

_TOKEN = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def parse(spec: str) -> tuple[str, list[float]]:
    """'scale=0,0.5,1' -> ('scale', [0.0, 0.5, 1.0])."""
    key, sep, values = spec.partition("=")
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not sep or not key.strip() or not vals:
        raise BakeError(f"--sweep {spec!r}: expected KEY=V1,V2,... with numbers (e.g. scale=0,0.5,1)")
    return key.strip(), vals


def numeric_keys(data, prefix: str = "") -> dict[str, float]:
    """Every number in a recipe (booleans excluded), by path."""
    out = {}
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        path = f"{prefix}[{k}]" if isinstance(k, int) else (f"{prefix}.{k}" if prefix else str(k))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[path] = v
        else:
            out.update(numeric_keys(v, path))
    return out


def defaulted_keys(data: dict) -> dict[str, float]:
    """The numeric fields each intervention leaves at its kind's default, by path."""
    from ..kinds import base as kinds

    out = {}
    for i, iv in enumerate(data.get("interventions") or []):
        if not isinstance(iv, dict) or iv.get("kind") not in kinds.KINDS:
            continue
        for name, f in kinds.get(iv["kind"]).schema.model_fields.items():
            d = f.default
            if name not in iv and isinstance(d, (int, float)) and not isinstance(d, bool):
                out[f"interventions[{i}].{name}"] = d
    return out


def resolve(data: dict, key: str) -> str:
    """The path `key` names in `data`: itself, or the one numeric key whose last name is `key`."""
    keys = {**numeric_keys(data), **defaulted_keys(data)}
    if key in keys:
        return key
    matches = [p for p in keys if re.split(r"[.\[]", p)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BakeError(f"--sweep {key}: the recipe has {len(matches)} keys named {key} ({', '.join(matches)}); "
                        "give the full path")
    listed = ", ".join(keys) or "none"
    raise BakeError(f"--sweep {key}: no numeric key {key!r} in the recipe; its numeric keys: {listed}")


def set_path(data: dict, path: str, value: float) -> dict:
    """A deep copy of `data` with the number at `path` replaced (or set) by `value` (ints stay ints
    when whole)."""
    steps = [name or int(idx) for name, idx in _TOKEN.findall(path)]
    out = copy.deepcopy(data)
    node = out
    for s in steps[:-1]:
        node = node[s]
    old = node.get(steps[-1], 0.0) if isinstance(node, dict) else node[steps[-1]]
    node[steps[-1]] = int(value) if isinstance(old, int) and float(value).is_integer() else float(value)
    return out
