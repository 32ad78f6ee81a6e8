"""Inline learning in a recipe: every `{learn: {...}}` artifact replaced by the file its learner
writes (bake.learn.learners), cached by the content of the model, the data and the options, so a
second plan of the same recipe learns nothing."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

from .. import kinds
from ..errors import BakeError
from ..files.staging import cache_hit, caching
from ..kinds.base import Learn
from ..learn.collect import Runner
from ..learn.learners import LEARNER_VERSION, PATH_OPTS, learner
from ..model.source import cache_dir, sha256_file


def _learn_one(recipe, ckpt, kind, iv, spec, fn, suffix: str, where: str, state: dict, progress: bool):
    """Learn one `{learn: {...}}` artifact (cached by content hash): (the file's reference, provenance)."""
    where = f"{where}.learn"
    opts = dict(spec.learn)
    allowed = set(inspect.signature(fn).parameters) - {"model", "out", "progress", "runner", "trust_remote_code"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise BakeError(f"{where}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")

    def local(v):  # a path relative to the recipe, made absolute; else a Hub dataset id, as given
        return str(recipe.path(v).resolve()) if isinstance(v, str) and Path(recipe.path(v)).exists() else v

    def content(v):  # a data file by its content, so a clone elsewhere hits the cache; else as given
        return sha256_file(Path(v)) if isinstance(v, str) and Path(v).is_file() else v

    for k in PATH_OPTS:
        if k in opts:
            opts[k] = [local(v) for v in opts[k]] if isinstance(opts[k], list) else local(opts[k])
    for k, v in kind.learn_defaults(iv).items():
        opts.setdefault(k, v)
    state["model_digest"] = state["model_digest"] or [sha256_file(ckpt.path / f) for f in ckpt.shard_files]
    data = {k: [content(v) for v in opts[k]] if isinstance(opts[k], list) else content(opts[k])
            for k in PATH_OPTS if isinstance(opts.get(k), list) or (isinstance(opts.get(k), str)
                                                                     and Path(opts[k]).is_file())}
    digest = hashlib.sha256(json.dumps({  # data files by content, not by path: a clone elsewhere hits the cache
        "kind": iv.kind, "opts": {k: v for k, v in opts.items() if k not in data}, "model": state["model_digest"],
        "learner": LEARNER_VERSION, "data": data,
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = getattr(fn, "folder", False)
    out = cache_dir() / "learned" / f"{iv.kind}-{digest}{'' if folder else '.safetensors'}"
    summary_path = out.with_name(out.name.removesuffix(".safetensors") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not (cache_hit(out) and cache_hit(summary_path)):  # a truncated or changed entry is learned again
        if state["runner"] is None and not any(k.startswith("from_") for k in opts):
            state["runner"] = Runner(ckpt, recipe.trust_remote_code)
        with caching(out) as tmp:
            res = fn(model=ckpt, out=tmp, progress=progress, runner=state["runner"], **opts)
            res.pop("candidates", None)
            res["out"] = str(out)
        with caching(summary_path) as tmp:
            tmp.write_text(json.dumps(res, indent=2, default=str))
    summary = json.loads(summary_path.read_text())
    suffix = "#" + spec.key if spec.key else suffix
    return str(out) + suffix, {"learn": spec.learn, "file": str(out) + suffix, "summary": summary}


def materialize(recipe, ckpt, progress: bool = True):
    """Replace every `{learn: {...}}` artifact by the file it learns (cached by content hash).

    Returns a new Recipe whose provenance records, per intervention, the learn options and file.
    """
    learned, state, ivs = {}, {"runner": None, "model_digest": None}, []
    for idx, iv in enumerate(recipe.interventions):
        kind = kinds.get(iv.kind)
        update = {}
        for key, (fn_name, suffix) in kind.learners.items():
            value = getattr(iv, key)
            items = value if isinstance(value, list) else [value]
            if not any(isinstance(x, Learn) for x in items):
                continue
            new = []
            for j, spec in enumerate(items):
                at = f"interventions[{idx}].{key}" + (f"[{j}]" if isinstance(value, list) else "")
                if not isinstance(spec, Learn):
                    new.append(spec)
                    continue
                ref, record = _learn_one(recipe, ckpt, kind, iv, spec, learner(fn_name), suffix, at, state, progress)
                learned[at] = record
                new.append(ref)
            update[key] = new if isinstance(value, list) else new[0]
        ivs.append(iv.model_copy(update=update) if update else iv)
    if not learned:
        return recipe
    kept = {k: v for k, v in (recipe.provenance or {}).items() if k == "tuned"}  # what bake tune chose
    new = recipe.model_copy(update={"interventions": ivs, "provenance": {**kept, "learned": learned}})
    new.base_dir = recipe.base_dir
    return new
