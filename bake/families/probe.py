"""Derive a model type's adapter from a tiny random instance of it, by numerical probes.

What bake must know about a decoder to compile an intervention is read off a tiny model of the
same config class (`tiny.py`), not from a table:

- **blocks**: the module list that a text forward runs once per layer;
- **residual writers**: the block's children whose outputs, times constants, sum with the block's
  input to its output (a least-squares fit that must leave no residual);
- **output-side tensors** of a writer: parameters with an axis such that a rank-one change along a
  unit vector r on that axis changes the writer's output only along r (the `W[d, in]` of a Linear,
  a bias, both axes orders of fused 3-D experts, expert biases);
- **exactness**: projecting r out of those tensors projects it out of the writer's output (fails
  when a norm or gate sits after them);
- **post-norms**: a writer that is a norm, fed by a module whose output it rescales per channel;
- **steering slots**: a bias of the block's last writer such that adding v to it adds exactly v to
  the block's output (1-D biases, and per-expert biases whose routing weights sum to one), either
  present, created by a stock config flag (tried: boolean config keys naming a bias), or gained by
  re-declaring the checkpoint as Llama; each checked for exact equality with zeros in place.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field

import torch

from ..model.config import text as arch_text
from ..model import keys as keymod
from ..model import tiny

TOKENS = 24  # longer than the tiny sliding window (8): a window changes the probe's outputs
RTOL = 1e-5  # relative: the probes' answers differ by orders of magnitude, float32 routers add ~1e-7


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _rel(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if name.startswith(prefix + ".") else name


@dataclass(frozen=True)
class WriterRule:
    """A residual writer of one kind of block; names are relative to the block."""

    module: str
    coef: float  # block output = input + sum(coef * writer output)
    out: tuple[tuple[str, int], ...]  # output-side parameter templates and their hidden axis
    exact: bool  # projecting r out of `out` projects it out of the writer's output
    final: bool  # adding v to its output adds coef * v to the block's output
    slot: tuple[str, int] | None = None  # a bias whose change by v adds v to the writer's output
    norm_of: str | None = None  # a post-norm: the module whose output it normalizes
    norm_offset: float | None = None  # effective scale = offset + weight (RMS post-norms)
    source_out: tuple[tuple[str, int], ...] = ()  # output-side tensors of `norm_of`


@dataclass(frozen=True)
class BlockRule:
    signature: tuple[str, ...]
    writers: tuple[WriterRule, ...]
    why: str = ""  # when no decomposition was found

    @property
    def steer_writer(self) -> WriterRule | None:
        return next((w for w in self.writers if w.final and w.slot is not None), None)


@dataclass
class Probe:
    """What the probe derived for one config (tiny instance), before it is applied to a checkpoint."""

    model_type: str
    blocks_path: str  # e.g. "model.layers" (module path of the block list)
    embeds: tuple[tuple[str, tuple[tuple[str, int], ...], bool], ...]  # (module, out templates, exact)
    blocks: dict[tuple[str, ...], BlockRule]
    key_rules: dict
    head: str | None  # output embedding module
    tied: bool
    slot_flags: dict = field(default_factory=dict)  # config keys that create a steering slot
    slot_creates: tuple[str, ...] = ()  # parameter templates the flags create (written as zeros)
    slot: tuple[str, int] | None = None  # the created slot (template relative to the block, axis)
    slot_how: str = ""
    slot_why: str = ""  # why steering has no slot
    notes: list[str] = field(default_factory=list)


def signature(block: torch.nn.Module) -> tuple[str, ...]:
    return tuple(sorted({keymod.template(n)[0] for n, _ in block.named_parameters()}))


class _Recorder:
    """Forward hooks that keep the first call's (args, kwargs, output) of chosen modules."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.calls: dict[str, tuple] = {}
        self.counts: dict[str, int] = {}
        self.handles = []
        for name, m in modules.items():
            self.handles.append(m.register_forward_hook(self._hook(name), with_kwargs=True))

    def _hook(self, name):
        def fn(module, args, kwargs, output):
            self.counts[name] = self.counts.get(name, 0) + 1
            if name not in self.calls:
                self.calls[name] = (args, dict(kwargs), output)
        return fn

    def close(self):
        for h in self.handles:
            h.remove()


def _ids(model) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, max(4, min(vocab, 200)), (1, TOKENS), generator=g)


def _forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def find_blocks(model, ids) -> tuple[str, torch.nn.ModuleList]:
    """The outermost ModuleList whose every element runs once in a text forward."""
    lists = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0}
    elems = {f"{n}.{j}": sub for n, m in lists.items() for j, sub in enumerate(m)}
    rec = _Recorder(elems)
    try:
        _forward(model, ids)
    finally:
        rec.close()
    ran = [n for n, m in lists.items() if all(rec.counts.get(f"{n}.{j}") == 1 for j in range(len(m)))
           and any(True for _ in m[0].parameters())]
    if not ran:
        raise ValueError("no list of decoder blocks runs in a text forward")
    ran.sort(key=lambda n: (n.count("."), -len(lists[n])))
    return ran[0], lists[ran[0]]


def _unit(d: int, seed: int) -> torch.Tensor:
    r = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return r / r.norm()


def _along(vec, shape, axis):
    s = [1] * len(shape)
    s[axis] = vec.numel()
    return vec.reshape(s)


def _call(module, args, kwargs):
    with torch.no_grad():
        return _first(module(*args, **kwargs))


def _output_side(module, args, kwargs, d: int, r: torch.Tensor) -> tuple[dict, set]:
    """{(param name, axis)} of `module` whose rank-one change along r moves its output only along r."""
    y = _call(module, args, kwargs)
    found, seen_other = {}, set()
    g = torch.Generator().manual_seed(1)
    for name, p in module.named_parameters():
        if not p.is_floating_point():
            continue
        for a in range(p.ndim):
            if p.shape[a] != d:
                continue
            shape = list(p.shape)
            shape[a] = 1
            other = torch.randn(shape, generator=g, dtype=p.dtype)
            delta = other * _along(r.to(p.dtype), p.shape, a) * 0.5
            keep = p.detach().clone()
            with torch.no_grad():
                p.add_(delta)
                try:
                    dy = (_call(module, args, kwargs) - y).reshape(-1, d).to(torch.float64)
                finally:
                    p.copy_(keep)
            size = dy.norm()
            if size < 1e-12:
                continue  # not used on these tokens (an expert nobody was routed to)
            off = (dy - (dy @ r)[:, None] * r).norm()
            if off <= RTOL * size:  # a generic change is O(size) off the line; float32 routers leave ~1e-7
                found[(name, a)] = True
            else:
                seen_other.add((name, a))
    return found, seen_other


def _project(module, params, r):
    """Project r out of `params` ((name, axis) pairs) of module in place; returns the originals."""
    from ..compile.fold import project_out

    saved = {}
    named = dict(module.named_parameters())
    with torch.no_grad():
        for name, a in params:
            p = named[name]
            saved[name] = p.detach().clone()
            p.copy_(project_out(p.to(torch.float64), r, a).to(p.dtype))
    return saved


def _restore(module, saved):
    named = dict(module.named_parameters())
    with torch.no_grad():
        for name, t in saved.items():
            named[name].copy_(t)


def _exact(module, args, kwargs, params, r) -> bool:
    y = _call(module, args, kwargs).to(torch.float64)
    saved = _project(module, params, r)
    try:
        y2 = _call(module, args, kwargs).to(torch.float64)
    finally:
        _restore(module, saved)
    want = y - (y @ r)[..., None] * r
    return bool((y2 - want).abs().max() <= RTOL * (1 + y.abs().max()))


def _decompose(block_in, block_out, outs: dict[str, torch.Tensor]):
    """The subset of candidate outputs (with constant coefficients) that sums to out - in."""
    target = (block_out - block_in).reshape(-1).to(torch.float64)
    names = list(outs)
    for k in range(1, min(4, len(names)) + 1):
        for combo in itertools.combinations(names, k):
            A = torch.stack([outs[n].reshape(-1).to(torch.float64) for n in combo], 1)
            coef = torch.linalg.lstsq(A, target[:, None]).solution[:, 0]
            if (A @ coef - target).norm() <= 1e-7 * (1 + target.norm()) and (coef.abs() > 1e-6).all():
                return {n: (1.0 if abs(c - 1) < 1e-6 else c) for n, c in zip(combo, coef.tolist())}
    return None


def _norm_offset(module, args, kwargs) -> float | None:
    """RMS post-norm: y = x / rms(x) * (offset + weight); the offset (0 or 1), or None."""
    w = getattr(module, "weight", None)
    if w is None or w.ndim != 1 or not args:
        return None
    x = args[0].to(torch.float64)
    y = _call(module, args, kwargs).to(torch.float64)
    eps = next((float(v) for k in ("variance_epsilon", "eps", "epsilon") if isinstance(v := getattr(module, k, None), (int, float))), 0.0)
    n = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    for off in (0.0, 1.0):
        if torch.allclose(y, n * (off + w.detach().to(torch.float64)), rtol=1e-3, atol=1e-5):
            return off
    return None


def _block_rule(model, prefix, block, ids, d, r) -> BlockRule:
    sig = signature(block)
    kids = {f"{prefix}.{n}": m for n, m in block.named_children()}
    grand = {f"{prefix}.{n}": m for n, m in block.named_modules() if n and n.count(".") == 1}
    every = {f"{prefix}.{n}": m for n, m in block.named_modules() if n}
    rec = _Recorder({prefix: block, **every})
    try:
        _forward(model, ids)
    finally:
        rec.close()
    if prefix not in rec.calls:
        return BlockRule(sig, (), "the block does not run in a text forward")
    bargs, bkw, bout = rec.calls[prefix]
    b_in = bargs[0] if bargs else bkw.get("hidden_states")
    b_out = _first(bout)
    if not isinstance(b_in, torch.Tensor) or not isinstance(b_out, torch.Tensor) or b_in.shape != b_out.shape:
        return BlockRule(sig, (), "the block's input and output are not one hidden-state tensor each")
    found = None
    for pool in (kids, {**kids, **grand}):
        outs = {n: _first(rec.calls[n][2]) for n in pool if n in rec.calls and rec.counts.get(n) == 1
                and isinstance(_first(rec.calls[n][2]), torch.Tensor) and _first(rec.calls[n][2]).numel() == b_out.numel()}
        found = _decompose(b_in, b_out, outs)
        if found:
            break
    if not found:
        return BlockRule(sig, (), "its output is not its input plus a sum of sublayer outputs "
                                  "(a gate or norm acts on the residual stream itself)")
    writers = []
    for name, coef in found.items():
        name = _through_identity(name, every, rec, prefix)
        m = every[name]
        args, kw, out = rec.calls[name]
        side, other = _output_side(m, args, kw, d, r)
        params = tuple((p, a) for (p, a) in side if (p, a) not in other)
        exact = bool(params) and any(not p.endswith("bias") for p, _ in params) and _exact(m, args, kw, params, r)
        final = _is_final(block, bargs, bkw, m, coef, d)
        slot = _slot(m, args, kw, params, d)  # final or not: a steering site (block_out needs final)
        norm_of = off = None
        src_out = ()
        if not exact and not params and "norm" in type(m).__name__.lower():
            x = args[0] if args else None
            src = next((n for n, (_, _, o) in rec.calls.items() if n != name and n.startswith(prefix + ".")
                        and isinstance(_first(o), torch.Tensor) and x is not None and _first(o) is x), None)
            if src is None:
                src = next((n for n, (_, _, o) in rec.calls.items() if n != name and n.startswith(prefix + ".")
                            and isinstance(_first(o), torch.Tensor) and x is not None
                            and _first(o).shape == x.shape and torch.equal(_first(o), x)), None)
            if src is not None:
                norm_of = _rel(src, prefix)
                off = _norm_offset(m, args, kw)
                sa, skw, _ = rec.calls[src]
                s_side, s_other = _output_side(every[src], sa, skw, d, r)
                src_out = tuple((_tmpl(src, p, prefix, s_other, every[src]), a) for (p, a) in s_side
                                if (p, a) not in s_other)
        writers.append(WriterRule(_rel(name, prefix), coef, tuple((_tmpl(name, p, prefix, other, m), a) for p, a in params),
                                  exact, final, (_tmpl(name, slot[0], prefix, other, m), slot[1]) if slot else None,
                                  norm_of, off, src_out))
    return BlockRule(sig, tuple(writers))


def _through_identity(name: str, every: dict, rec, prefix: str) -> str:
    """A writer that passes its input through unchanged at inference (a dropout after GPT-NeoX's
    attention) stands for the module that produced that input."""
    m = every[name]
    args, _, out = rec.calls[name]
    x = args[0] if args else None
    if any(True for _ in m.parameters()) or not isinstance(x, torch.Tensor) or not isinstance(_first(out), torch.Tensor) \
            or x.shape != _first(out).shape or not torch.equal(x, _first(out)):
        return name
    src = next((n for n, (_, _, o) in rec.calls.items() if n != name and n.startswith(prefix + ".")
                and isinstance(_first(o), torch.Tensor) and _first(o) is x), None)
    return src if src is not None and rec.counts.get(src) == 1 else name


def _tmpl(module: str, param: str, prefix: str, other=(), mod: torch.nn.Module | None = None) -> str:
    """The parameter's name relative to the block, with its list indices generalized (`experts.#.w`)
    unless a sibling of the same template differs from it (not output-side, or another shape: the
    `ffn.0` / `ffn.2` of a Sequential); then the literal name."""
    own = keymod.template(param)[0]
    shapes = {n: tuple(p.shape) for n, p in mod.named_parameters()} if mod is not None else {}
    if any(keymod.template(o)[0] == own for o, _ in other) or any(
            keymod.template(n)[0] == own and shape != shapes[param] for n, shape in shapes.items()):
        return _rel(f"{module}.{param}", prefix)
    return keymod.template(_rel(f"{module}.{param}", prefix))[0]


def _is_final(block, bargs, bkw, m, coef, d) -> bool:
    v = _unit(d, 7)
    base = _call(block, bargs, bkw)
    h = m.register_forward_hook(lambda mod, a, o: ((o[0] + v,) + tuple(o[1:])) if isinstance(o, tuple) else o + v)
    try:
        moved = _call(block, bargs, bkw)
    finally:
        h.remove()
    return bool(((moved - base) - coef * v).abs().max() <= RTOL)


def _slot(m, args, kw, params, d):
    """An output-side parameter to which adding v (broadcast) adds v to every output position."""
    y = _call(m, args, kw)
    v = _unit(d, 11)
    named = dict(m.named_parameters())
    for name, a in sorted(params, key=lambda pa: named[pa[0]].ndim):
        p = named[name]
        if p.ndim > 2:
            continue
        delta = _along(v.to(p.dtype), p.shape, a).expand(p.shape).clone()
        keep = p.detach().clone()
        with torch.no_grad():
            p.add_(delta)
            try:
                dy = _call(m, args, kw) - y
            finally:
                p.copy_(keep)
        if (dy - v).abs().max() <= RTOL:
            return name, a
    return None


def _embeds(model, blocks_path, ids, d, r):
    """Parameters outside the blocks whose rank-one change moves block 0's input only along r."""
    first = f"{blocks_path}.0"
    modules = dict(model.named_modules())
    owners = {}
    for name, p in model.named_parameters():
        if name.startswith(blocks_path + ".") or not p.is_floating_point():
            continue
        owner, _, pn = name.rpartition(".")
        for a in range(p.ndim):
            if p.shape[a] == d:
                owners.setdefault(owner, []).append((pn, a))
    def h0():
        rec = _Recorder({first: modules[first]})
        try:
            _forward(model, ids)
        finally:
            rec.close()
        a, kw, _ = rec.calls[first]
        return (a[0] if a else kw["hidden_states"]).to(torch.float64)
    base = h0()
    g = torch.Generator().manual_seed(3)
    out = []
    for owner, cands in owners.items():
        m = modules[owner]
        named = dict(m.named_parameters(recurse=False))
        side = []
        for pn, a in cands:
            p = named.get(pn)
            if p is None:
                continue
            shape = list(p.shape)
            shape[a] = 1
            delta = torch.randn(shape, generator=g, dtype=p.dtype) * _along(r.to(p.dtype), p.shape, a)
            keep = p.detach().clone()
            with torch.no_grad():
                p.add_(delta)
                try:
                    dh = (h0() - base).reshape(-1, d)
                finally:
                    p.copy_(keep)
            if dh.norm() > 1e-12 and (dh - (dh @ r)[:, None] * r).norm() <= RTOL * dh.norm():
                side.append((pn, a))
        if side:
            rec = _Recorder({owner: m})
            try:
                _forward(model, ids)
            finally:
                rec.close()
            ea, ekw, _ = rec.calls[owner]
            exact = _exact(m, ea, ekw, side, r)
            out.append((owner, tuple((keymod.template(f"{owner}.{pn}")[0], a) for pn, a in side), exact))
    return tuple(out)


def _bias_flags(cfg) -> list[tuple[object, str]]:
    """(config object, key) of boolean config keys that name a bias and are off."""
    out = []
    subs = [cfg] + [getattr(cfg, k) for k in vars(cfg) if k.endswith("config") and hasattr(getattr(cfg, k), "to_dict")]
    for c in subs:
        for k, v in vars(c).items():
            if v is False and "bias" in k and not k.startswith("_"):
                out.append((c, k))
    return out


def _with_zeros(model, flagged, ids) -> tuple[bool, list[str]]:
    """Load `model`'s weights into `flagged` (which has extra parameters), zero the new ones, compare."""
    try:
        missing, unexpected = flagged.load_state_dict(model.state_dict(), strict=False)
    except RuntimeError:  # shapes differ: not the same layout
        return False, []
    if unexpected or not missing:
        return False, []
    named = dict(flagged.named_parameters())
    with torch.no_grad():
        for n in missing:
            if n in named:
                named[n].zero_()
    same = torch.allclose(_forward(model, ids), _forward(flagged, ids), rtol=0, atol=1e-9)
    return same, [n for n in missing if n in named]


def _flagged(model, cfg, ids):
    """Each boolean bias flag of `cfg` turned on: (config updates, key, flagged model, created parameter names)
    where the flagged model computes the same function as `model` with the new biases at zero."""
    import copy

    for c, k in _bias_flags(cfg):
        fcfg = copy.deepcopy(cfg)
        target = fcfg if c is cfg else next(getattr(fcfg, s) for s in vars(fcfg) if getattr(fcfg, s) is not None
                                            and s.endswith("config") and hasattr(getattr(fcfg, s), "to_dict")
                                            and k in vars(getattr(fcfg, s)))
        setattr(target, k, True)
        try:
            fcfg = type(fcfg).from_dict(fcfg.to_dict())  # the config class's own checks (InternLM3: bias == qkv_bias)
            flagged = tiny.build(fcfg)
        except Exception:  # noqa: BLE001 - a flag this class cannot take
            continue
        ok, created = _with_zeros(model, flagged, ids)
        if ok:
            sub = None if c is cfg else next(s for s in vars(cfg) if getattr(cfg, s) is c)
            yield ({sub: {k: True}} if sub else {k: True}), k, flagged, created


def _steer_via(model, cfg, ids, d, r, blocks_path):
    """Try bias flags, then re-declaration as Llama: (config updates, created names, flagged probe) or None."""
    for upd, k, flagged, created in _flagged(model, cfg, ids):
        slot = _slot_of(flagged, ids, d, r, blocks_path)
        if slot:
            return upd, created, slot, f"sets {k}: true (a stock config flag; the biases it creates are written as zeros)"
    return None


SITES = {"attn_out": ("attn", "attention", "mixer"), "mlp_out": ("mlp", "ffn", "feed_forward", "moe", "expert")}


def site_of(module: str) -> str | None:
    """The steering site of a writer, from its module name relative to the block: attention or MLP."""
    low = module.lower()
    return next((site for site, words in SITES.items() if any(w in low for w in words)), None)


def site_slot(rule: BlockRule, site: str) -> WriterRule | None:
    """The writer of `site` in a block rule, when it has a bias slot."""
    return next((w for w in rule.writers if w.slot is not None and site_of(w.module) == site), None)


def site_via(config: dict, site: str):
    """A stock config flag that gives every block a bias slot at `site` (`attn_out`, `mlp_out`) while the
    model computes the same function with the new biases at zero: (config updates, created parameter
    templates, slot template relative to the block, axis, writer module, coef, how) or None."""
    return _site_via(json.dumps(config, sort_keys=True, default=str), site)


@functools.lru_cache(maxsize=32)
def _site_via(config_json: str, site: str):
    cfg = tiny.tiny_config(json.loads(config_json))
    model = tiny.build(cfg)
    d = cfg.get_text_config().hidden_size
    r, ids = _unit(d, 5), _ids(model)
    blocks_path, _ = find_blocks(model, ids)
    for upd, k, flagged, created in _flagged(model, cfg, ids):
        fblocks = dict(flagged.named_modules())[blocks_path]
        writers = [site_slot(_block_rule(flagged, f"{blocks_path}.{j}", fblocks[j], ids, d, r), site)
                   for j in range(len(fblocks))]
        if any(w is None for w in writers) or len({(w.module, w.slot) for w in writers}) != 1:
            continue
        w = writers[0]
        templates = tuple(sorted({keymod.template(n)[0] for n in created}))
        return (upd, templates, w.slot[0], w.slot[1], w.module, w.coef,
                f"sets {k}: true (a stock config flag; the biases it creates are written as zeros)")
    return None


def _redeclare(model, cfg, ids, d, r, blocks_path):
    """Does a Llama with mlp_bias (and attention_bias) compute the same function with zero new biases?"""
    from transformers import LlamaConfig

    if getattr(cfg, "model_type", None) == "llama" or cfg.to_dict().get("text_config"):
        return None
    base = {k: v for k, v in cfg.to_dict().items() if k not in ("model_type", "architectures", "transformers_version")}
    differs = False
    for extra in ({"mlp_bias": True}, {"mlp_bias": True, "attention_bias": True}):
        try:
            lc = LlamaConfig(**{**base, **extra})
            llama = tiny.build(lc)
        except Exception:  # noqa: BLE001
            continue
        ok, created = _with_zeros(model, llama, ids)
        differs = differs or (not ok and bool(created))
        slot = _slot_of(llama, ids, d, r, blocks_path) if ok else None
        if slot:
            how = ("re-declared as Llama with " + " and ".join(f"{k}: true" for k in extra) +
                   " (the same function here; the biases Llama adds are written as zeros)")
            return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **extra}, created, slot, how
    return "differs" if differs else None


def _slot_of(model, ids, d, r, blocks_path) -> tuple[str, int] | None:
    """The steering slot (template relative to the block, axis) if every block has the same one."""
    modules = dict(model.named_modules())
    blocks = modules[blocks_path]
    slots = set()
    for j in range(len(blocks)):
        w = _block_rule(model, f"{blocks_path}.{j}", blocks[j], ids, d, r).steer_writer
        if w is None:
            return None
        slots.add(w.slot)
    return slots.pop() if len(slots) == 1 else None


# --- the probe as JSON: derived once per config, kept in bake's cache (bake.families.adapter) ---------

_TYPES = {c.__name__: c for c in (WriterRule, BlockRule, Probe, keymod.Piece)}


def _plain(x):
    if hasattr(x, "__dataclass_fields__"):
        return {"@": type(x).__name__, **{f: _plain(getattr(x, f)) for f in x.__dataclass_fields__}}
    if isinstance(x, tuple):
        return {"@t": [_plain(v) for v in x]}
    if isinstance(x, dict):
        return {"@d": [[_plain(k), _plain(v)] for k, v in x.items()]}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _typed(x):
    if isinstance(x, list):
        return [_typed(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "@t" in x:
        return tuple(_typed(v) for v in x["@t"])
    if "@d" in x:
        return {_typed(k): _typed(v) for k, v in x["@d"]}
    cls = _TYPES[x["@"]]
    return cls(**{k: _typed(v) for k, v in x.items() if k != "@"})


def to_json(probe: Probe) -> str:
    return json.dumps(_plain(probe))


def from_json(text: str) -> Probe:
    return _typed(json.loads(text))


def derive(config: dict) -> Probe:
    """Probe a tiny model with the structure of `config` (a config.json dict)."""
    from transformers.utils import logging as hf_logging

    was_disabled = hf_logging.is_progress_bar_enabled() is False
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # the probe's save_pretrained must not draw bars on the user's terminal,
    hf_logging.set_verbosity_error()  # nor its tiny forwards print kernel fallback notes
    try:
        return _derive(config)
    finally:
        hf_logging.set_verbosity(verbosity)
        if not was_disabled:
            hf_logging.enable_progress_bar()


def _derive(config: dict) -> Probe:
    cfg = tiny.tiny_config(config)
    model = tiny.build(cfg)
    text = cfg.get_text_config()
    d = text.hidden_size
    r = _unit(d, 5)
    ids = _ids(model)
    blocks_path, blocks = find_blocks(model, ids)
    rules = {}
    for j, block in enumerate(blocks):
        sig = signature(block)
        if sig not in rules:
            rules[sig] = _block_rule(model, f"{blocks_path}.{j}", block, ids, d, r)
    embeds = _embeds(model, blocks_path, ids, d, r)
    head = next((n for n, m in model.named_modules() if m is model.get_output_embeddings()), None)
    tied = bool(getattr(text, "tie_word_embeddings", getattr(cfg, "tie_word_embeddings", False)))
    probe = Probe(config.get("model_type"), blocks_path, embeds, rules, {}, head, tied)
    if all(rule.steer_writer is None for rule in rules.values()):
        probe.slot_why = _no_slot_reason(rules)
        if all(rule.writers and not any(w.norm_of for w in rule.writers) for rule in rules.values()):
            via = _steer_via(model, cfg, ids, d, r, blocks_path) or _redeclare(model, cfg, ids, d, r, blocks_path)
            if via == "differs":
                window = arch_text(config).get("sliding_window")
                probe.slot_why = ("Llama has an MLP bias flag, but re-declared as Llama this model computes a different "
                                  "function" + (f": its sliding_window={window} has no Llama equivalent" if window else "")
                                  + "; remove the window first, or run it as a hook")
                via = None
            if via:
                probe.slot_flags, created, probe.slot, probe.slot_how = via
                probe.slot_creates = tuple(sorted({keymod.template(n)[0] for n in created}))
                probe.slot_why = ""
    model2 = tiny.build(cfg)  # the key rules overwrite weights: use a fresh instance
    probe.key_rules = keymod.derive(model2)
    return probe


def _no_slot_reason(rules) -> str:
    for rule in rules.values():
        if not rule.writers:
            return rule.why
        if any(w.norm_of for w in rule.writers):
            return "a norm sits between each sublayer and the residual add, so no bias adds a constant to the block output"
        last = [w for w in rule.writers if w.final]
        if not last:
            return "no sublayer output reaches the block output unchanged"
    return "the block's last sublayer has no output bias, and no stock config flag or re-declaration adds one exactly"
