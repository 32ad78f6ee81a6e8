"""An adapter: the probe's rules applied to one checkpoint, in its own names and keys.

`resolve(checkpoint)` probes a tiny instance of the checkpoint's config (`probe.py`), builds the
real model on the meta device (no weights) for its module and parameter names, and maps every
parameter the rules name onto checkpoint keys (`keys.py`). Compile, the hooks, learning and
`bake arch` read only this object.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

import torch

from ..errors import BakeError, first_line
from ..model import keys as keymod
from . import overrides
from . import probe as probemod


@dataclass(frozen=True)
class Writer:
    """A residual writer in real names: hook `module`; fold `tensors` ((checkpoint key, hidden axis))."""

    module: str
    tensors: tuple[tuple[str, int], ...]
    exact: bool
    block: int | None = None
    coef: float = 1.0
    norm: tuple[str, float] | None = None  # post-norm: (weight key, offset) of the norm after `source`
    source: tuple[tuple[str, int], ...] = ()  # output-side tensors of the module the post-norm normalizes


@dataclass(frozen=True)
class Slot:
    """Where steering at block i adds `scale * v / coef`: hook `module`, add to `tensors` along their axis."""

    module: str
    tensors: tuple[tuple[str, int], ...]
    coef: float = 1.0


@dataclass
class Adapter:
    name: str
    model_type: str
    n_layers: int
    d: int
    embeds: list[Writer]
    blocks: list[list[Writer]]
    blocks_path: str
    slots: list[Slot | None]
    steer_config: dict = field(default_factory=dict)  # config updates that create the slots
    steer_creates: dict = field(default_factory=dict)  # key -> shape of zero tensors to write
    steer_how: str = ""
    steer_why: str = ""
    embed_key: str | None = None
    head_key: str | None = None
    tied: bool = False
    moe: bool = False
    modules: dict = field(default_factory=dict)  # module name -> class name
    params: dict = field(default_factory=dict)  # parameter name -> shape
    keymap: keymod.KeyMap | None = None
    notes: list[str] = field(default_factory=list)
    broken: str = ""  # why some block has no residual decomposition (then only aura bakes)
    experts: dict = field(default_factory=dict)  # fused experts module -> (output param [E, ., .], its hidden axis)
    sites: list = field(default_factory=list)  # per block: {"attn_out" | "mlp_out": Slot} where a bias slot exists
    config: dict = field(default_factory=dict)  # the checkpoint's config.json

    def creates(self, templates) -> dict:
        """{tensor name: shape} of the zero biases a config flag creates (parameter templates with `#`
        for the block index), for the blocks whose checkpoint lacks them."""
        out = {}
        for t in templates:
            for i in range(self.n_layers):
                name = t.replace("#", str(i), 1)
                if name.startswith(self.blocks_path) and name in self.params:
                    continue
                w = self.params.get(name[: -len(".bias")] + ".weight")
                if w is not None and name not in self.keymap.keys:
                    out[name] = (w[0],)
        return out

    def block(self, i: int) -> str:
        return f"{self.blocks_path}.{i}"

    @property
    def key_rules(self) -> dict:
        """The key map's rules (parameter template -> checkpoint keys), {} when names match as stored."""
        return self.keymap.rules if self.keymap is not None else {}

    def writers(self, blocks="all") -> list[Writer]:
        """Residual writers of `blocks` ("all" adds the embeddings)."""
        if blocks == "all":
            return list(self.embeds) + [w for ws in self.blocks for w in ws]
        return [w for i in blocks for w in self.blocks[i]]

    @property
    def post_norm(self) -> bool:
        return any(w.norm for w in self.writers())

def _kind(m: torch.nn.Module) -> str:
    """"Linear" / "Embedding" for those classes and their subclasses (FalconLinear), else the class name."""
    for base in (torch.nn.Linear, torch.nn.Embedding):
        if isinstance(m, base):
            return base.__name__
    return type(m).__name__


def meta_model(config: dict, trust_remote_code: bool = False):
    """The model of `config` on the meta device: names and shapes, no weights (built once per config
    in a process: checking a checkpoint and resolving its family read the same one, and never
    change it)."""
    return _meta_model(json.dumps(config, sort_keys=True, default=str), trust_remote_code)


@functools.lru_cache(maxsize=4)
def _meta_model(config_json: str, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads(config_json)
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("transformers_version",)})
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code,
                                                    experts_implementation="eager")
        except (TypeError, ValueError):
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)


@functools.lru_cache(maxsize=1)
def _probe_code() -> str:
    """The sha256 of the code a probe's result depends on (a changed probe never reads an old entry)."""
    import hashlib
    from pathlib import Path

    from ..model import keys, tiny

    h = hashlib.sha256()
    for mod in (probemod, keys, tiny, overrides):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _derive(config_json: str) -> probemod.Probe:
    """The probe of a config, kept in bake's cache (families/<type>-<hash>.json, sealed) keyed by the
    config, the transformers version, bake's and the probe's code: the tiny model is built and probed
    once per config."""
    import hashlib

    import transformers

    from .. import __version__
    from ..files.staging import cache_hit, caching
    from ..model.source import cache_dir

    key = json.dumps([config_json, transformers.__version__, __version__, _probe_code()])
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(json.loads(config_json).get("model_type")))[:64]
    entry = cache_dir() / "families" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cache_hit(entry):
        try:
            return probemod.from_json(entry.read_text())
        except (ValueError, KeyError, TypeError):  # an entry of an older layout: probe again
            pass
    probe = probemod.derive(json.loads(config_json))
    entry.parent.mkdir(parents=True, exist_ok=True)
    with caching(entry) as tmp:
        tmp.write_text(probemod.to_json(probe))
    return probe


def check_known(config: dict) -> None:
    """Refuse a model type that the installed transformers does not ship, or that bake refuses by hand."""
    from transformers import CONFIG_MAPPING
    from transformers import __version__ as tv

    mt = config.get("model_type")
    if mt not in CONFIG_MAPPING:
        raise BakeError(f"unknown model type: model_type={mt!r} (architectures={config.get('architectures')}); "
                        f"transformers {tv} does not ship it, so bake cannot tell how it computes "
                        "(`bake arch --table` lists the types bake supports)")
    reason = overrides.refused(config)
    if reason:
        raise BakeError(reason)


def derive(config: dict) -> probemod.Probe:
    """The probe of a config (cached per config)."""
    check_known(config)
    clean = {k: v for k, v in config.items() if k not in ("transformers_version", "_name_or_path", "dtype", "torch_dtype")}
    try:
        return _derive(json.dumps(clean, sort_keys=True, default=str))
    except BakeError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a model class on a tiny config
        raise BakeError(f"model_type={config.get('model_type')!r}: bake could not probe a tiny model of this "
                        f"config ({type(e).__name__}: {first_line(e)}); it cannot tell where this architecture "
                        "writes the residual stream") from None


def check_checkpoint(config: dict, checkpoint_keys: dict, trust_remote_code: bool = False):
    """Refuse a checkpoint bake cannot read before anything is probed: a quantized one, an unknown
    type, a config transformers cannot build, a config whose sizes disagree with the stored shapes.
    Returns the model of the config on the meta device."""
    from ..model import config as arch

    arch.check_config(config)
    quant = config.get("quantization_config") or arch.text(config).get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise BakeError(f"the checkpoint is quantized (quantization_config: quant_method={method!r}, e.g. gpt-oss's "
                        "MXFP4 experts); bake folds float weights. Dequantize it first (load it with transformers, "
                        "e.g. Mxfp4Config(dequantize=True), and save_pretrained in bfloat16) and bake that folder")
    check_known(config)  # (open_checkpoint already refused a layer count the weights cannot hold)
    try:
        model = meta_model(config, trust_remote_code)
    except BakeError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' own validation (e.g. heads that do not divide the width)
        said = " ".join(str(e).split())[:400]
        raise BakeError(f"config.json: transformers cannot build a model from this config ({type(e).__name__}: "
                        f"{said})") from None
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for n, shape in params.items():  # the same name in the checkpoint: the config's sizes must give its shape
        stored = checkpoint_keys.get(n)  # (a permuted layout may be converted at load, as fused experts are)
        if stored is not None and sorted(stored) != sorted(shape):
            raise BakeError(arch.mismatch_message(config, n, shape, tuple(stored)))
    return model


def resolve(config: dict, checkpoint_keys: dict, trust_remote_code: bool = False) -> Adapter:
    """The adapter of a checkpoint: `config` (config.json) and `checkpoint_keys` ({key: shape})."""
    model = check_checkpoint(config, checkpoint_keys, trust_remote_code)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    pr = derive(config)
    km = keymod.KeyMap(pr.key_rules, checkpoint_keys)
    modules = {n: _kind(m) for n, m in model.named_modules() if n}
    mods = dict(model.named_modules())
    blocks_list = mods.get(pr.blocks_path)
    if not isinstance(blocks_list, torch.nn.ModuleList):
        raise BakeError(f"model_type={config.get('model_type')!r}: the probe found blocks at {pr.blocks_path}, "
                        "which the full model does not have")
    text = model.config.get_text_config()
    d = int(text.hidden_size)

    def tensors(module: str, templates, rel_to: str = "") -> tuple[tuple[str, int], ...]:
        out = []
        for t, a in templates:
            names = [n for n in params if n.startswith(module + ".") or n == module]
            rel = {n: n[len(rel_to) + 1:] if rel_to else n for n in names}
            hits = [n for n in names if rel[n] == t or keymod.template(rel[n])[0] == t]
            if not hits:
                raise BakeError(f"{module}: no parameter matching {t} in the model")
            for n in hits:
                slices = km.slices(n, params[n])
                if not slices:
                    looked = ", ".join(pc.key for _, pc in pr.key_rules.get(keymod.template(n)[0], [])) or n
                    raise BakeError(f"the checkpoint's tensors do not match model_type={config.get('model_type')!r}: "
                                    f"parameter {n} is not in it (looked for {looked})")
                for s in slices:
                    b = s.key_axis(a)
                    if b is None:
                        raise BakeError(f"{s.key}: its hidden axis is split across keys; bake cannot fold it")
                    out.append((s.key, b))
        return tuple(out)

    embeds = [Writer(m, tensors(m, ts), ex) for m, ts, ex in pr.embeds]
    blocks, slots, broken, experts, sites = [], [], "", {}, []
    for i, blk in enumerate(blocks_list):
        prefix = f"{pr.blocks_path}.{i}"
        rule = pr.blocks.get(probemod.signature(blk))
        if rule is None:
            raise BakeError(f"block {i} ({type(blk).__name__}) has a structure the probe's tiny model did not have; "
                            "bake cannot tell where it writes the residual stream")
        if not rule.writers:  # aura still bakes (it needs no residual writer); ablate and steer are refused
            broken = broken or f"block {i} ({type(blk).__name__}): {rule.why}"
            blocks.append([])
            slots.append(None)
            sites.append({})
            continue
        ws = []
        for w in rule.writers:
            mod = f"{prefix}.{w.module}"
            norm = src = None
            if w.norm_of is not None:
                nk = tensors(mod, [(w.module + ".weight", 0)], prefix) if f"{mod}.weight" in params else ()
                norm = (nk[0][0], w.norm_offset) if nk else None
                src = tensors(f"{prefix}.{w.norm_of}", w.source_out, prefix)
            ws.append(Writer(mod, tensors(mod, w.out, prefix) if w.out else (), w.exact, i, w.coef, norm, src or ()))
            for t, a in w.out:  # a fused 3-D expert output projection: aura can address its units
                if len(params.get(f"{prefix}.{t}", ())) == 3:
                    experts[f"{prefix}.{t}".rsplit(".", 1)[0]] = (f"{prefix}.{t}", a)
        blocks.append(ws)
        sites.append({site: Slot(f"{prefix}.{w.module}", tensors(f"{prefix}.{w.module}", [w.slot], prefix), w.coef)
                      for site in probemod.SITES for w in [probemod.site_slot(rule, site)] if w is not None})
        sw = rule.steer_writer
        if sw is not None:
            slots.append(Slot(f"{prefix}.{sw.module}", tensors(f"{prefix}.{sw.module}", [sw.slot], prefix), sw.coef))
        elif pr.slot is not None:
            final = next((w for w in rule.writers if w.final), None)
            name = f"{prefix}.{pr.slot[0]}"
            slots.append(Slot(f"{prefix}.{final.module}", ((name, pr.slot[1]),), final.coef) if final else None)
        else:
            slots.append(None)
    emb_mod = next((n for n, m in mods.items() if m is model.get_input_embeddings()), None)
    head_mod = next((n for n, m in mods.items() if m is model.get_output_embeddings()), None)
    emb_key = None
    if emb_mod:
        s = km.slices(emb_mod + ".weight", params[emb_mod + ".weight"])
        emb_key = s[0].key if s else None
    tied = bool(getattr(text, "tie_word_embeddings", getattr(model.config, "tie_word_embeddings", False)))
    moe = any("expert" in n for n in params if n.startswith(pr.blocks_path + "."))  # not 3-D: conv weights are too
    ad = Adapter(name=config.get("model_type"), model_type=config.get("model_type"), n_layers=len(blocks_list), d=d,
                 embeds=embeds, blocks=blocks, blocks_path=pr.blocks_path, slots=slots,
                 steer_config=dict(pr.slot_flags),
                 steer_how=pr.slot_how or ("adds scale*v to the existing output bias of the block's last sublayer"
                                           + (" (every expert's bias: routing weights sum to one)" if moe else "")),
                 steer_why=pr.slot_why, embed_key=emb_key, head_key=(head_mod + ".weight") if head_mod else None,
                 tied=tied, moe=moe, modules=modules, params=params, keymap=km, notes=list(pr.notes), broken=broken,
                 experts=experts, sites=sites, config=config)
    ad.steer_creates = ad.creates(pr.slot_creates)
    return ad
