"""`steer`: add `scale * v` to a hidden state at every position (activation addition).

Sites: `block_out` (default; the block's output, resid_post: the bias of its last sublayer),
`attn_out` / `mlp_out` (what the attention / MLP sublayer writes to the residual stream: its output
bias). A site bakes exactly where the family has a bias there, or a stock config flag creates one
(Llama's `mlp_bias`, Qwen3's `attention_bias`: the new biases are written as zeros, the steered one
as `scale * v`); otherwise it is refused, naming the sites that would work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..compile.planning import Hook, Op, Step
from ..errors import BakeError, NotBakeable
from .base import Artifact, Float, Int, Kind, StrictModel, as_list, register

SITES = ("block_out", "attn_out", "mlp_out")


class Steer(StrictModel):
    """Add scale * v to the hidden state returned by each listed decoder block (or its attention / MLP
    sublayer's write, with `site`), at every position."""

    kind: Literal["steer"]
    layers: list[Int] = Field(min_length=1)
    vector: Artifact
    scale: Float = Field(default=1.0, allow_inf_nan=False)
    site: Literal["block_out", "attn_out", "mlp_out"] = "block_out"
    approximate: bool = False

    _layers_list = field_validator("layers", mode="before")(as_list)


def block_out_status(fam) -> tuple[str, str]:
    if fam.broken:
        return "refused", fam.broken
    if all(s is not None for s in fam.slots):
        return "exact", fam.steer_how
    return "refused", fam.steer_why or "no bias slot before the residual add"


def site_slots(fam, site: str):
    """(slots per block, config updates, created zero biases {name: shape}, how) for a site, or a str: why not."""
    if site == "block_out":
        status, how = block_out_status(fam)
        if status != "exact":
            return how
        return fam.slots, fam.steer_config, fam.steer_creates, how
    if fam.broken:
        return fam.broken
    present = [s.get(site) for s in fam.sites]
    if all(s is not None for s in present):
        return present, {}, {}, f"adds scale*v to the existing output bias of each block's {site[:-4]} sublayer"
    from ..families import probe as probemod
    from ..families.adapter import Slot

    via = probemod.site_via(fam.config, site)
    if via is None:
        return (f"the {site[:-4]} sublayer has no output bias before the residual add, and no stock config flag "
                "creates one exactly")
    flags, templates, tmpl, axis, module, coef, how = via
    slots = [Slot(f"{fam.block(i)}.{module}", ((f"{fam.block(i)}.{tmpl}", axis),), coef) for i in range(fam.n_layers)]
    return slots, flags, fam.creates(templates), how


# the sites that add at the same point of the residual stream: the MLP writes last in a block
SAME = {"block_out": ("mlp_out",), "mlp_out": ("block_out",), "attn_out": ()}


def _alternatives(fam, site: str) -> str:
    """What else bakes on this family, saying plainly whether it computes the same thing."""
    bakes = [s for s in SITES if s != site and not isinstance(site_slots(fam, s), str)]
    same = [s for s in bakes if s in SAME[site]]
    if same:
        return f"site: {same[0]} adds at the same point of the residual stream and bakes exactly here."
    other = [s for s in bakes if s not in SAME[site]]
    tail = (f" site: {other[0]} bakes, but adds the vector at another point of the block (a different intervention, "
            f"with a vector learned there: `bake learn steer --site {other[0]}`)." if other else "")
    return f"No other site computes the same thing on this family.{tail}"


def _check_shape(v, d: int, n: int, where: str) -> None:
    if v.shape not in ((d,), (n, d)):
        raise BakeError(f"{where}.vector: shape {list(v.shape)}; expected [{d}] (hidden size) or [{n}, {d}] (one row "
                        "per block)")


def _check_vector(iv, v, layers: list[int], where: str, path) -> None:
    """Refuse a vector that adds nothing at a listed layer, and one learned for another site, by name."""
    from ..model.source import read_metadata

    rows = [(i, v if v.ndim == 1 else v[i]) for i in layers]
    zero = [i for i, row in rows if not bool(row.abs().max() > 0)]
    meta = {}
    if path.suffix == ".safetensors" and path.is_file():
        try:
            meta = read_metadata(path)
        except Exception:  # noqa: BLE001  (not a readable header: load_tensor has said so already)
            meta = {}
    if zero:
        learned = f" (it was learned at blocks {meta['layers']})" if meta.get("layers") else ""
        raise BakeError(f"{where}.vector: zero at layer(s) {zero}{learned}: steering there adds nothing; list the "
                        "layers the vector has rows for, or learn it at these (`bake learn steer --layers ...`)")
    site = meta.get("site", "block_out") if meta.get("format") == "bake-steer" else None
    if site is not None and site != iv.site:
        raise BakeError(f"{where}.vector: learned on the residual stream at site {site}, but this intervention adds it "
                        f"at site {iv.site}, another point of the block; set `site: {site}` or learn it there "
                        f"(`bake learn steer --site {iv.site}`)")


@register
class SteerKind(Kind):
    name = "steer"
    schema = Steer
    tag = "steering"
    artifacts = {"vector": "steering vector"}
    learners = {"vector": ("learn_steer", "")}

    def status(self, fam):
        """At the default site, block_out (`bake arch`); the other sites are probed when a recipe asks."""
        return block_out_status(fam)

    def learn_defaults(self, iv):
        return {"layers": list(iv.layers), "site": iv.site}

    def precheck(self, iv, recipe, config, where):
        """The vector's shape against config.json's sizes, before any probe or learning."""
        super().precheck(iv, recipe, config, where)
        if not isinstance(iv.vector, str):
            return
        from ..artifacts.tensors import load_tensor
        from ..model.config import hidden_size, num_layers

        _check_shape(load_tensor(iv.vector, recipe.base_dir, f"{where}.vector"), hidden_size(config),
                     num_layers(config), where)

    def example(self, fam, dest, g):
        import torch
        from safetensors.torch import save_file

        save_file({"v": torch.randn(fam.d, generator=g)}, str(dest / "v.safetensors"))
        return {"kind": "steer", "layers": [min(1, fam.n_layers - 1)], "vector": str(dest / "v.safetensors"),
                "scale": 3.0}

    def compile(self, b, idx, iv, where):
        v = b.tensor(iv.vector, f"{where}.vector", "steering vector")
        layers = b.layers(iv.layers, where)
        fam = b.family
        _check_shape(v, fam.d, fam.n_layers, where)
        _check_vector(iv, v, layers, where, b.recipe.path(iv.vector.partition("#")[0]))
        found = site_slots(fam, iv.site)
        if isinstance(found, str):
            extra = " (`approximate: true` does not help: there is no slot to approximate with)" if iv.approximate else ""
            at = "" if iv.site == "block_out" else f" at site {iv.site}"
            raise NotBakeable(f"{where}: steer{at} cannot be baked exactly into a {fam.name} checkpoint: {found}; run "
                              f"it as a hook{extra}. {_alternatives(fam, iv.site)}")
        slots, flags, creates, how = found
        where_txt = "the output of block(s)" if iv.site == "block_out" else f"the {iv.site[:-4]} write of block(s)"
        step = Step(idx, "steer", True, f"add {iv.scale:g} * v to {where_txt} {layers}")
        names = b.tensor_names()
        if creates and not any(k in names for k in creates):
            b.create_zeros(creates, flags, how)
            step.summary += f"; {how}"
        for i in layers:
            slot = slots[i]
            b.writes_also(slot.module, slot.tensors)
            vec = iv.scale * (v if v.ndim == 1 else v[i]) / slot.coef
            for name, axis in slot.tensors:
                b.add_op(name, Op(idx, "add", vec, axis), step)
            step.hooks.append(Hook(idx, slot.module, "add", vec))
        return step
