"""How a model's parameters are stored in its checkpoint, derived from transformers' own save path.

transformers 5 renames and fuses tensors on load (MoE experts become one 3-D tensor, multimodal
wrappers move `language_model`) and reverses that on save. Rather than table those conversions,
bake fills a tiny model's parameters with distinct numbers, saves it with `save_pretrained`, and
reads back where every number went: that yields, for each parameter, the checkpoint keys holding
it and which axis of each key is which axis of the parameter. `KeyMap` applies the rules to a
real model's parameter names (from a meta-device instance) and to the real checkpoint's keys.
"""

from __future__ import annotations

import re
from ..files.tempdirs import temp_dir
from dataclasses import dataclass
from pathlib import Path

import torch



def template(name: str) -> tuple[str, list[tuple[str, int]]]:
    """'model.layers.3.mlp.experts.2.w' -> ('model.layers.#.mlp.experts.#.w', [('layers', 3), ('experts', 2)])."""
    ints, parts = [], name.split(".")
    for j, tok in enumerate(parts):
        if tok.isdigit():
            ints.append((parts[j - 1] if j else "", int(tok)))
            parts[j] = "#"
    return ".".join(parts), ints


@dataclass(frozen=True)
class Piece:
    """One checkpoint key holding (part of) a parameter.

    `key` is a template whose `{p<j>}` slots are the parameter name's integers and whose `{a<j>}`
    slots index the parameter's axis j (an expert axis split into one key per expert). `axes[b]` is
    the parameter axis that key axis b runs along, with `(start, step)` where the key is a strided
    slice of that axis (gate and up halves of a fused projection); `start` is a fraction of the
    axis when `step` is 1.
    """

    key: str
    axes: tuple[tuple[int, float, int], ...]  # per key axis: (param axis, start, step)
    split: tuple[int, ...]  # param axes indexed by {a<j>} slots


def _fill(model) -> dict[str, tuple[int, tuple[int, ...]]]:
    base, where = 0, {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.arange(base, base + p.numel(), dtype=torch.float64).reshape(p.shape))
            where[n] = (base, tuple(p.shape))
            base += p.numel()
    return where


def derive(model) -> dict[str, list[tuple[str, Piece]]]:
    """{param template: [(key template, Piece)]} for a tiny float64 model (its weights are overwritten)."""
    from safetensors import safe_open

    where = _fill(model)
    starts = sorted((b, n) for n, (b, _) in where.items())
    rules: dict[str, list[tuple[str, Piece]]] = {}
    with temp_dir("keys") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in sorted(Path(tmp).glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    t = st.get_tensor(key)
                    if not t.is_floating_point() or t.numel() == 0:
                        continue
                    piece = _piece(key, t.to(torch.float64), where, starts)
                    if piece is not None:
                        pname, pc = piece
                        ptemp, _ = template(pname)
                        if all(pc.key != q.key for _, q in rules.get(ptemp, [])):
                            rules.setdefault(ptemp, []).append((pname, pc))
    return rules


def _piece(key, t, where, starts):
    import bisect

    first = int(t.flatten()[0])
    j = bisect.bisect_right([b for b, _ in starts], first) - 1
    if j < 0:
        return None
    base, pname = starts[j]
    shape = where[pname][1]
    idx = (t - base).round().to(torch.int64)
    if idx.min() < 0 or idx.max() >= max(1, torch.Size(shape).numel()):
        return None
    coords = torch.stack(torch.unravel_index(idx.flatten(), shape), -1).reshape(*t.shape, len(shape))
    axes = []
    origin = coords.reshape(-1, len(shape))[0]
    for b in range(t.ndim):
        if t.shape[b] == 1:
            continue
        step = coords.narrow(b, 1, 1).reshape(-1, len(shape))[0] - origin
        moved = [a for a in range(len(shape)) if step[a] != 0]
        if len(moved) != 1:
            return None  # a key that mixes axes: not a rename, split or slice
        a = moved[0]
        s = int(step[a])
        start = float(origin[a]) / shape[a] if s == 1 else float(origin[a])
        axes.append((a, start, s))
    if len(axes) != t.ndim:
        axes = [(a, 0.0, 1) for a in range(t.ndim)] if tuple(t.shape) == shape else None
        if axes is None:
            return None
    mapped = {a for a, _, _ in axes}
    split = tuple(a for a in range(len(shape)) if a not in mapped and shape[a] > 1)
    # the key's integers: the parameter's (matched by the token before them), then split indices
    _, pints = template(pname)
    ktemp, kints = template(key)
    fixed = {a: int(origin[a]) for a in split}
    slots, used = [], set()
    for tok, val in kints:
        slot = next((f"{{p{j}}}" for j, (ptok, pval) in enumerate(pints)
                     if j not in used and ptok == tok and pval == val), None)
        if slot is None:
            slot = next((f"{{a{a}}}" for a, v in fixed.items() if v == val and f"{{a{a}}}" not in slots), None)
        if slot is None:
            slot = next((f"{{p{j}}}" for j, (_, pval) in enumerate(pints) if j not in used and pval == val), None)
        if slot is None:
            return None
        if slot.startswith("{p"):
            used.add(int(slot[2:-1]))
        slots.append(slot)
    out = ktemp
    for s in slots:
        out = out.replace("#", s, 1)
    return pname, Piece(out, tuple(axes), split)


@dataclass(frozen=True)
class Slice:
    """A checkpoint key and how its axes map onto one real parameter."""

    key: str
    axes: tuple[tuple[int, int, int], ...]  # per key axis: (param axis, start, step) in real sizes
    index: tuple[tuple[int, int], ...]  # (param axis, index) fixed for this key

    def key_axis(self, param_axis: int) -> int | None:
        return next((b for b, (a, _, _) in enumerate(self.axes) if a == param_axis), None)


class KeyMap:
    """Real parameter name -> the checkpoint keys that hold it (rules from `derive`)."""

    def __init__(self, rules: dict[str, list[tuple[str, Piece]]], keys):
        self.rules, self.keys = rules, set(keys)

    def slices(self, param: str, shape: tuple[int, ...]) -> list[Slice]:
        """The keys holding `param` (a real model's parameter of `shape`); [] when none is found."""
        ptemp, pints = template(param)
        out = []
        for _, pc in self.rules.get(ptemp, []):
            name = pc.key
            for j, (_, v) in enumerate(pints):
                name = name.replace(f"{{p{j}}}", str(v))
            ranges = [range(shape[a]) for a in pc.split]
            for combo in _product(ranges):
                key = name
                for a, v in zip(pc.split, combo):
                    key = key.replace(f"{{a{a}}}", str(v))
                axes = []
                for a, start, step in pc.axes:
                    axes.append((a, int(round(start * shape[a])) if step == 1 else int(start), step))
                out.append(Slice(key, tuple(axes), tuple(zip(pc.split, combo))))
        if out and all(s.key in self.keys for s in out):
            return out
        if param in self.keys:  # stored as the model holds it (e.g. already fused)
            return [Slice(param, tuple((a, 0, 1) for a in range(len(shape))), ())]
        head, _, rest = param.partition(".")  # old GPT-2 checkpoints drop the `transformer.` prefix
        if rest in self.keys and head in ("transformer", "model"):
            return [Slice(rest, tuple((a, 0, 1) for a in range(len(shape))), ())]
        return []


def _product(ranges):
    if not ranges:
        yield ()
        return
    for v in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (v,) + rest
