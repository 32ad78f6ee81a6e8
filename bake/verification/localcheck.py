"""Module-local checks: each hooked module, with its hook on the source weights, against the same
module with the baked weights, both read from disk one module at a time (float64; float32 for a
16-bit output).

The end-to-end pass (`verifier.verify`) runs two whole models; these checks load only the modules a
recipe hooks, from a meta-device skeleton of the model whose parameters are filled from the
checkpoints through the family's key map (fused or per-expert keys alike). Memory is one module.
They run with every verification (after the end-to-end pass, whose inputs they replay) and alone
with `bake apply --verify local`. Inputs: seeded random activations the module's signature admits
(hidden states for Linear, Conv1D and norm modules, token ids for embeddings, hidden states with a
random top-k routing for fused experts) and, when the end-to-end pass runs, the inputs each module
received there (`record`). An edited tensor that no fold touches (the untied copy of a tied
embedding, a created bias) must equal its source or be zeros, bit for bit.
"""

from __future__ import annotations

import dataclasses
import inspect
from contextlib import contextmanager
from pathlib import Path

import torch

from ..compile.hooks import hooked
from ..compile.ops import OPS
from ..compile.planning import Plan
from ..errors import BakeError, first_line
from ..model.keys import KeyMap
from ..model.skeleton import load, release, skeleton
from ..model.source import Checkpoint, open_checkpoint
from .verifier import HIDDEN_RTOL

N_RANDOM = 3  # seeded random input batches per module
TOKENS = 7
RTOL = HIDDEN_RTOL  # max |diff| / max |output|, by checkpoint dtype: the end-to-end pass's hidden-state tolerance


def random_inputs(module: torch.nn.Module, d: int, g: torch.Generator, routed: bool = False,
                  dtype: torch.dtype = torch.float64) -> list[tuple[tuple, dict]] | None:
    """Seeded inputs the module's signature admits, or None when bake cannot make any up. `routed`:
    the module is a fused experts module (the adapter's `experts`), called as (x, indices, weights)."""
    def hidden(width, *lead):
        return torch.randn(*lead, width, generator=g, dtype=dtype)

    if isinstance(module, torch.nn.Embedding):
        return [((torch.randint(0, module.num_embeddings, (1, TOKENS), generator=g),), {}) for _ in range(N_RANDOM)]
    if isinstance(module, torch.nn.Linear):
        return [((hidden(module.in_features, 1, TOKENS),), {}) for _ in range(N_RANDOM)]
    if type(module).__name__ == "Conv1D":
        return [((hidden(module.weight.shape[0], 1, TOKENS),), {}) for _ in range(N_RANDOM)]
    params = dict(module.named_parameters())
    three_d = [p for p in params.values() if p.ndim == 3]
    if routed and three_d and len(inspect.signature(module.forward).parameters) >= 3:
        n_exp, k = three_d[0].shape[0], min(2, three_d[0].shape[0])
        out = []
        for _ in range(N_RANDOM):
            idx = torch.stack([torch.randperm(n_exp, generator=g)[:k] for _ in range(TOKENS)])
            w = torch.softmax(torch.randn(TOKENS, k, generator=g, dtype=dtype), -1)
            out.append(((hidden(d, TOKENS), idx, w), {}))
        return out
    if set(params) <= {"weight", "bias"} and params.get("weight") is not None and params["weight"].ndim == 1:
        return [((hidden(params["weight"].shape[0], 1, TOKENS),), {}) for _ in range(N_RANDOM)]  # a norm
    return None


@contextmanager
def record(model: torch.nn.Module, names: list[str], into: dict):
    """Keep the first input (args, kwargs) each module in `names` receives while the context is open."""
    table = dict(model.named_modules())

    def make(name):
        def pre(module, args, kwargs):
            if name not in into:
                into[name] = tuple(_detach(a) for a in args), {k: _detach(v) for k, v in kwargs.items()}
        return pre

    handles = [table[n].register_forward_pre_hook(make(n), with_kwargs=True) for n in names if n in table]
    try:
        yield into
    finally:
        for h in handles:
            h.remove()


def _detach(v):
    """A copy on the CPU (where the module-local checks run), through tuples and lists (rotary cos/sin)."""
    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu", copy=True)
    if type(v) in (tuple, list):
        return type(v)(_detach(x) for x in v)
    return v


def _output(y):
    return y[0] if isinstance(y, tuple) else y


def _cast(v, dtype: torch.dtype):
    if isinstance(v, (tuple, list)):
        return type(v)(_cast(x, dtype) for x in v)
    return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v


def _plain(v) -> bool:
    if isinstance(v, (tuple, list)):
        return all(map(_plain, v))
    return v is None or isinstance(v, (torch.Tensor, int, float, bool, str))


def _replayable(v):
    """A recorded input without cache objects (KV or recurrent state): replaying one would write into
    it, and the second run would see the first run's state. The module then runs without a cache."""
    return v if _plain(v) else None


def dtype_for(plan: Plan) -> torch.dtype:
    """float64, or float32 for a bfloat16 or float16 output: its tolerance (2e-2, 5e-3) is 10^4 times
    float32's noise, and a 128k-token embedding then takes 2 GiB per copy instead of 4."""
    return torch.float64 if plan.dtype == "float32" else torch.float32


def check(plan: Plan, baked_dir: Path, recorded: dict | None = None) -> dict:
    """The local section of the verification report: one row per hooked module, then the copies."""
    trust, moe = plan.recipe.trust_remote_code, plan.family.moe
    baked = open_checkpoint(Path(baked_dir))
    rules = plan.family.key_rules
    src_map, baked_map = KeyMap(rules, plan.checkpoint.shapes), KeyMap(rules, baked.shapes)
    rtol = RTOL[plan.dtype]
    exact_steps = {s.index for s in plan.steps if s.exact}
    by_module: dict[str, list] = {}
    for h in plan.hooks:
        by_module.setdefault(h.module, []).append(h)
    rows, failures, unchecked = [], [], []
    src_skel = skeleton(plan.checkpoint.path, trust, moe)
    baked_skel = skeleton(baked.path, trust, moe)
    g = torch.Generator().manual_seed(0)
    modules = dict(src_skel.named_modules())
    targets: dict[str, list[str]] = {}  # module to run -> the hooked modules it checks
    for name, hooks in by_module.items():
        mine = [name]
        if name not in modules:
            unchecked.append(f"{name}: not a module of the model transformers builds from the config")
            continue
        if any(OPS[h.fn].fold is None and h.step not in exact_steps for h in hooks):
            # a hook no fold computes (the SAE gate): its bake approximates it inside the module, so only the
            # module itself, on the inputs it received in the model, can be compared with it
            if not (recorded and name in recorded):
                unchecked.append(f"{name}: its hook ({hooks[0].fn}) is approximated inside the module; only the "
                                 "end-to-end pass and the inputs it records check it")
                continue
        elif random_inputs(modules[name], plan.family.d, g, name in plan.family.experts) is None:
            # a sublayer (attention, MLP) whose inputs bake cannot make up: check the modules holding the
            # tensors its hooks fold into instead, with those hooks at their output. The hooks are linear
            # (scale, add, project out) and the sublayer's output is a linear combination of those
            # modules' outputs (that is what makes the fold exact), so the check is the same.
            mine = _owners(modules, name, plan.edits, {h.step for h in hooks}) or [name]
        if recorded and name in recorded and name not in mine:
            mine.append(name)  # and the sublayer itself, on the inputs it received in the model
        for t in mine:
            targets.setdefault(t, []).append(name)
    for target, stands_for in targets.items():
        hooks = _hooks_for(target, plan, by_module)
        exact = all(h.step in exact_steps for h in hooks)
        row, why = _check_one(target, hooks, exact, src_skel, baked_skel, plan, baked, src_map, baked_map,
                              (recorded or {}).pop(target, None), rtol, g)  # popped: freed once used
        if row is None:
            unchecked.append(f"{target}: {why}")
            continue
        row["hooked_modules"] = stands_for
        rows.append(row)
        if row["status"] == "failed":
            failures.append(f"{target}: hooked vs baked module differ by {row['max_rel']:.3g} of the output's "
                            f"scale (tolerance {rtol:g})")
    copies = _copies(plan, baked, list(by_module))
    failures += [f"{c['tensor']}: {c['why']}" for c in copies if c["status"] == "failed"]
    unchecked += [f"{c['tensor']}: {c['why']}" for c in copies if c["status"] == "unchecked"]
    status = "failed" if failures else ("incomplete" if unchecked else "passed")
    return {"status": status, "tolerance_rel": rtol, "compute_dtype": str(dtype_for(plan)).removeprefix("torch."),
            "modules": rows, "copies": copies,
            "unchecked": unchecked, "failures": failures}


def _hooks_for(target: str, plan: Plan, by_module: dict) -> list:
    """The hooks that shape `target`'s output, with names relative to it: those inside it or on it
    (they fire in its forward, in recipe order), then those of enclosing sublayers whose step folds into
    its tensors, innermost first: they act on its output after them, or (lineas's `affine_in`, on the
    sublayer's input) on its input, which is the sublayer's where such a step folds into it."""
    inner = [dataclasses.replace(h, module=h.module[len(target) + 1:]) for h in plan.hooks
             if h.module == target or h.module.startswith(target + ".")]
    mine = [e for k, e in plan.edits.items() if k.startswith(target + ".")]
    folded = {op.step for e in mine for op in e.ops}  # the steps with a fold in `target`'s tensors
    moved = []
    for outer in sorted((m for m in by_module if target.startswith(m + ".")), key=len, reverse=True):
        moved += [dataclasses.replace(h, module="") for h in by_module[outer] if h.step in folded]
    return inner + moved


def _owners(modules: dict, name: str, edits: dict, steps: set[int]) -> list[str]:
    """The innermost modules under `name` holding tensors that `steps` fold into (checkpoint keys of
    fused experts stored per expert map onto the fused module)."""
    out = []
    for key, edit in edits.items():
        if key.startswith(name + ".") and any(op.step in steps for op in edit.ops):
            owner = max((m for m in modules if m.startswith(name + ".") and key.startswith(m + ".")), key=len,
                        default=None)
            if owner and owner not in out:
                out.append(owner)
    return out


def _check_one(name, hooks, exact, src_skel, baked_skel, plan, baked, src_map, baked_map, recorded, rtol, g):
    """(row, None) for module `name` checked on its inputs, or (None, why) when it cannot be. The
    module's weights go back to the meta device afterwards: one module is in memory at a time."""
    try:
        ref_m = load(src_skel, name, plan.checkpoint, src_map, dtype_for(plan))
        got_m = load(baked_skel, name, baked, baked_map, dtype_for(plan))
        return _run_one(name, ref_m, got_m, hooks, exact, plan, recorded, rtol, g)
    except BakeError as e:
        return None, first_line(e)
    finally:
        release(src_skel.get_submodule(name)), release(baked_skel.get_submodule(name))


def _run_one(name, ref_m, got_m, hooks, exact, plan, recorded, rtol, g):
    dtype = dtype_for(plan)
    inputs = [("random", i) for i in (random_inputs(ref_m, plan.family.d, g, name in plan.family.experts, dtype) or [])]
    if recorded is not None:
        inputs.append(("recorded", recorded))
    if not inputs:
        return None, (f"bake cannot make up inputs for a {type(ref_m).__name__}; `--verify full` checks it with "
                      "the inputs it receives in the model")
    worst_abs = worst_rel = 0.0
    with torch.no_grad():
        for _, (args, kwargs) in inputs:
            args = tuple(_cast(_replayable(a), dtype) for a in args)
            kwargs = {k: _cast(_replayable(v), dtype) for k, v in kwargs.items()}
            with hooked(ref_m, hooks):
                want = _output(ref_m(*args, **kwargs))
            got = _output(got_m(*args, **kwargs))
            diff = (want - got).abs().max().item()
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(want.abs().max().item(), 1e-30))
    kinds = [k for k in ("random", "recorded") if any(kk == k for kk, _ in inputs)]
    return {"module": name, "steps": sorted({h.step for h in hooks}), "exact": exact,
            "inputs": ", ".join(f"{sum(1 for k, _ in inputs if k == kind)} {kind}" for kind in kinds),
            "max_abs": worst_abs, "max_rel": worst_rel,
            "status": "approximate" if not exact else "passed" if worst_rel <= rtol else "failed"}, None


def _copies(plan: Plan, baked: Checkpoint, hooked_modules: list[str]) -> list[dict]:
    """Edited tensors with no fold: a copy must equal its source, a created bias must be zeros (and
    units added as zeros, zeros after it); a folded tensor outside every hooked module is left to the
    end-to-end pass."""
    out = []
    for name, edit in plan.edits.items():
        if not all(op.fn == "append" and not op.vec.any() for op in edit.ops):  # folded (not only zero units)
            if not any(name.startswith(m + ".") for m in hooked_modules):
                out.append({"tensor": name, "status": "unchecked",
                            "why": "folded outside every hooked module; only the end-to-end pass checks it"})
            continue
        got = baked.read(name)
        old = tuple(slice(0, n) for n in edit.shape)
        src = (plan.checkpoint.read(edit.source).to(got.dtype) if edit.source is not None
               else torch.zeros(edit.shape, dtype=got.dtype))
        same = tuple(got.shape) == edit.out_shape and torch.equal(src, got[old])
        if same and edit.ops:  # the units added after the source's: zeros
            rest = got.clone()
            rest[old] = 0
            same = not rest.any().item()
        what = (f"a copy of {edit.source}" if edit.source is not None else "created as zeros") + (
            ", with zero units added" if edit.ops else "")
        out.append({"tensor": name, "status": "passed" if same else "failed",
                    "why": what + ("" if same else ", but its values differ")})
    return out
