"""`bake eval`: run suites on the base model and on the target (baked, hooked, or each point of a
sweep), one model in memory at a time, and compare. Returns the report as a dict (report.py
writes it as JSON, Markdown and plots)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from ..errors import BakeError
from . import heldout, sweep as sweep_mod
from ..recipe.schema import is_recipe
from .subjects import Subject, baked_subject, base_of, hooked_subject, load_model_subject, versions
from .suites import Options, get


def _measure(s: Subject, suites, opts: Options, base: dict | None) -> dict:
    memo: dict = {}
    return {su.name: su.measure(s, opts, (base or {}).get(su.name), memo) for su in suites}


def _public(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def _entry(s: Subject, suites, raw: dict, base_raw: dict | None, opts: Options) -> dict:
    out = {"model": s.description}
    for su in suites:
        out[su.name] = {"summary": su.summary(raw[su.name], opts),
                        "examples": {k: v for k, v in raw[su.name].items() if k.endswith("examples")}}
        if base_raw is not None:
            out[su.name]["vs base"] = su.compare(base_raw[su.name], raw[su.name], opts)
            out[su.name]["headline"] = su.headline(out[su.name]["vs base"])
    return out


def _numeric_lists(raw: dict, prefix: str = "") -> dict[str, list]:
    out = {}
    for k, v in raw.items():
        if k.startswith("_") or k in ("prompt_toxic",):
            continue
        if isinstance(v, dict):
            out.update(_numeric_lists(v, f"{prefix}{k}@"))
        elif isinstance(v, list) and v and all(isinstance(x, float) for x in v):
            out[prefix + k] = v
    return out


def consistency(hooked: dict, baked: dict) -> dict:
    """Hooked against baked, item by item: every per-prompt figure's mean difference with its
    bootstrap interval (they agree when the interval holds 0), and the share of identical replies."""
    from .suites import _diff_ci

    rows, agree = {}, True
    for suite, h in hooked.items():
        b = baked[suite]
        for name, hv in _numeric_lists(h).items():
            d = _diff_ci(hv, _numeric_lists(b)[name])
            d["agree"] = d["ci"][0] <= 1e-9 and d["ci"][1] >= -1e-9
            agree &= d["agree"]
            rows[f"{suite}: {name}"] = d
        for key in (k for k in h if k.endswith("replies")):
            flat_h = [r for rs in h[key] for r in (rs if rs and isinstance(rs[0], list) else [rs])]
            flat_b = [r for rs in b[key] for r in (rs if rs and isinstance(rs[0], list) else [rs])]
            rows[f"{suite}: identical {key}"] = {"share": float(np.mean([x == y for x, y in zip(flat_h, flat_b)])),
                                                 "n": len(flat_h)}
    return {"status": "agree" if agree else "DISAGREE", "rows": rows,
            "rule": "hooked and baked agree when the 95% bootstrap interval of every per-prompt difference holds 0"}


def _free(s):
    del s
    gc.collect()


def evaluate(target: str | Path, against: str | None = None, suites="toxicity,quality", opts: Options | None = None,
             sweep: str | None = None, max_ppl_increase: float = 0.05, hooks: bool = False,
             trust_remote_code: bool = False) -> dict:
    """Evaluate `target` (a baked folder, any model, or a recipe: baked into a temporary folder, or
    run with its hooks when `hooks`) against `against` (default: the model it was made from)."""
    from ..planner import plan
    from ..recipe import schema

    opts = opts or Options()
    names = [n.strip() for n in suites.split(",")] if isinstance(suites, str) else list(suites)
    chosen = get(names)
    if not chosen:
        raise BakeError("--suite consistency compares hooked and baked on other suites; add one (e.g. toxicity,consistency)")
    check = "consistency" in names
    if (sweep or hooks) and not is_recipe(target):
        raise BakeError(f"{'--sweep' if sweep else '--hooks'} needs a recipe (recipe.yaml) as the target; {target} is not one")
    recipe_path = Path(target) if is_recipe(target) else Path(target) / "recipe.yaml"
    if check and not recipe_path.is_file():
        raise BakeError(f"--suite consistency needs the recipe to hook: {target} is neither a recipe nor a baked folder")
    started = time.time()
    against = against or base_of(target)
    trust = trust_remote_code
    tuned = heldout.tuned_block(recipe_path)
    if tuned:  # a tuned bake: measured on the held-out part of its study's data, never on what the trials saw
        found, about = heldout.resolve(tuned, names, opts.data)
        opts.data = {**opts.data, **found}
    report = {"target": str(target), "against": str(against), "suites": [s.name for s in chosen],
              "consistency_checked": check, "seed": opts.seed,
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()
                          if k not in ("progress", "directions")},
              "versions": versions(), "models": {}}
    if tuned:
        report["data"] = {"tuned": f"study {tuned.get('study')}, trial {tuned.get('trial')} (bake tune)", "inputs": about}

    if "steering" in report["suites"] and recipe_path.is_file() and not opts.directions:
        opts.directions, report["directions"] = steer_directions(recipe_path, trust, opts.progress)
    base_subject = load_model_subject(against, "base", trust)
    base_raw = _measure(base_subject, chosen, opts, None)
    report["models"]["base"] = _entry(base_subject, chosen, base_raw, None, opts)
    if "toxicity" in base_raw:
        report["scorer"] = base_raw["toxicity"]["scorer"]
    _free(base_subject)
    raws = {}

    def run(s: Subject, role: str):
        raw = _measure(s, chosen, opts, base_raw)
        report["models"][role] = _entry(s, chosen, raw, base_raw, opts)
        raws[role] = raw

    if sweep:
        key, values = sweep_mod.parse(sweep)
        data = schema.load_yaml(Path(target).read_text(), str(target))
        path = sweep_mod.resolve(data, key)
        points = []
        for v in values:
            r = schema.parse(sweep_mod.set_path(data, path, v), f"{target} ({path}={v:g})", Path(target).parent)
            p = plan(r, progress=opts.progress, trust_remote_code=trust)
            with baked_subject(p, trust, opts.progress) as s:
                run(s, f"{path}={v:g}")
            head = {k: v2 for su in chosen for k, v2 in report["models"][f"{path}={v:g}"][su.name]["headline"].items()}
            points.append({"key": path, "value": v, **head})
        report["sweep"] = _sweep_summary(points, max_ppl_increase)
    elif is_recipe(target):
        p = plan(target, progress=opts.progress, trust_remote_code=trust, hooks_only=hooks)
        if hooks or check:  # --hooks: the recipe's hook realization; consistency: the hooks the bake compiles
            s = hooked_subject(p, trust)
            run(s, "hooked")
            _free(s)
        if not hooks or check:
            if hooks:  # with consistency: the hook realization against the bake (they differ where a kind linearizes)
                p = plan(target, progress=opts.progress, trust_remote_code=trust)
            with baked_subject(p, trust, opts.progress) as s:
                run(s, "baked")
    else:
        s = load_model_subject(target, "baked", trust)
        run(s, "baked")
        _free(s)
        if check:
            s = hooked_subject(plan(recipe_path, progress=opts.progress, trust_remote_code=trust), trust)
            run(s, "hooked")
            _free(s)
    if check:
        report["consistency"] = consistency(_strip(raws["hooked"]), _strip(raws["baked"]))
    report["seconds"] = round(time.time() - started, 1)
    return report


def steer_directions(recipe_path: Path, trust: bool = False, progress: bool = True) -> tuple[dict, dict]:
    """The steering suite's directions from a recipe's `steer` and SAE interventions: ({name: (block,
    unit vector)}, {name: where it came from, or why it is missing}). Inline `learn:` artifacts are
    learned (or read from the cache) first, as `bake apply` does."""
    from ..planner.learned import materialize
    from ..model.source import resolve_model
    from ..artifacts.tensors import load_tensor
    from ..recipe.schema import Learn, load

    r = load(recipe_path).with_trust(trust)
    steers = [(i, iv) for i, iv in enumerate(r.interventions) if iv.kind == "steer"]
    saes = [i for i, iv in enumerate(r.interventions) if iv.kind.startswith("sae_")]
    if any(isinstance(iv.vector, Learn) for _, iv in steers) or saes:
        ckpt = resolve_model(r.model, r.base_dir)
        r = materialize(r, ckpt, progress)
        steers = [(i, r.interventions[i]) for i, _ in steers]
    found, about = {}, {}
    if saes:  # the SAE kinds steer along the sum of their features' unit decoder rows (their sae_gate hook's S)
        from ..planner.builder import compile_plan

        try:
            steps = compile_plan(r, ckpt, hooks_only=True).steps
        except BakeError as e:  # e.g. a baked folder whose recipe points at a cleared cache
            steps, saes = [], []
            about["SAE features"] = f"no projection: {e}"
        for i in saes:
            d = steps[i].details
            v = next(h.vec for h in steps[i].hooks if h.fn == "sae_gate").sum(dim=1)
            name = f"block {d['block']} (SAE features {d['features']})"
            found[name] = (int(d["block"]), v / v.norm())
            about[name] = f"interventions[{i}]: the sum of the features' unit decoder rows at {d['hook_name']}"
    for i, iv in steers:
        where = f"interventions[{i}].vector"
        try:
            v = load_tensor(iv.vector, r.base_dir, where)
        except BakeError as e:  # e.g. a baked folder whose recipe points at a cleared cache
            about[f"interventions[{i}]"] = f"no projection: {e}"
            continue
        for layer in iv.layers:
            row = (v if v.ndim == 1 else v[layer]).double()
            if not float(row.norm()) > 0:
                about[f"interventions[{i}]"] = "no projection: the vector is zero"
                continue
            name = f"block {layer}" + (f" (#{i})" if len(steers) > 1 else "")
            found[name] = (int(layer), row / row.norm())
            about[name] = f"{where} = {iv.vector}, at {iv.site}; unit vector, |v| = {float(row.norm()):.4g}"
    return found, about


def _strip(raw: dict) -> dict:
    return {suite: _public(r) for suite, r in raw.items()}


def _sweep_summary(points: list[dict], max_ppl_increase: float) -> dict:
    from .metrics import pareto_front

    effect = next((k for k in ("toxicity_ratio", "refusal_drop", "sentiment_change") if k in points[0]), None)
    cost = next((k for k in ("ppl_change", "kl_reply") if k in points[0]), None)
    out = {"points": points, "effect": effect, "cost": cost}
    if effect and cost:
        out["pareto"] = [p["value"] for p in pareto_front(points, effect, cost)]
        if cost == "ppl_change":
            ok = [p for p in points if p["ppl_change"] <= max_ppl_increase]
            out["limit"] = {"ppl_change": max_ppl_increase}
            out["best"] = max(ok, key=lambda p: p[effect]) if ok else None
    return out
