"""A baked folder that stands alone: the recipe as run, with everything it read inside the folder.

`bake apply` copies every artifact the plan read (vectors, directions, alphas, an SAE folder, the
files `learn:` made in the cache) into `artifacts/` of the baked folder (the report's manifest holds
their sha256), and writes `recipe.yaml` with references into it, so `bake verify` re-checks a copy of
the folder anywhere, a Hub download included. No absolute path is written: the model is the
recipe's `builtin:` name or Hub id as given, or a local model's path relative to the folder (on
another machine, `bake verify FOLDER --model PATH` names it; its files are checked against the
sha256 recorded here). Keys left at their defaults (null) are left out.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .. import __version__, kinds
from ..files.staging import sha256_file
from ..recipe import schema as recipe_mod

ARTIFACTS = "artifacts"


def _name(src: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.+-]", "_", src.name) or "artifact"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{i}-{base}"
    taken.add(name)
    return name


def copy_artifacts(plan, folder: Path) -> dict[str, str]:
    """Copy every file or folder the plan read into `folder/artifacts/`: {resolved source: its
    reference relative to the folder}."""
    names, taken = {}, set()
    for path in plan.artifacts:
        src = Path(path).resolve()
        if str(src) in names or not src.exists():
            continue
        rel = f"{ARTIFACTS}/{_name(src, taken)}"
        (folder / ARTIFACTS).mkdir(exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, folder / rel, symlinks=False)
        else:
            shutil.copyfile(src, folder / rel)
        names[str(src)] = rel
    return names


def _ref(recipe, x, names: dict[str, str]):
    """An artifact reference rewritten into the folder (`path#key` keeps its key); ids and numbers as given."""
    if not isinstance(x, str) or x.startswith("hf:"):
        return x
    path, sep, key = x.partition("#")
    rel = names.get(str(Path(recipe.path(path)).resolve()))
    return rel + sep + key if rel else x


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def model_ref(recipe, final: Path) -> str:
    """The recipe's model as the folder's recipe names it: a `builtin:` name or Hub id as given, a
    local model's path relative to the baked folder."""
    given = str(recipe.model)
    local = Path(recipe.path(given))
    if given.startswith("builtin:") or not local.exists():
        return given
    return os.path.relpath(local.resolve(), final)


def recipe_as_run(plan, folder: Path, final: Path) -> dict:
    """The recipe as run, standing alone in `folder` (which will be renamed to `final`): artifacts
    copied in and referenced relatively, null keys left out, and its provenance (bake's version, the
    sha256 of the model's files and of each artifact, what `learn:` ran)."""
    r = plan.recipe
    names = copy_artifacts(plan, folder)
    data = recipe_mod.dump(r)
    for iv in data["interventions"]:
        for key in kinds.get(iv["kind"]).artifacts:
            value = iv.get(key)
            if value is not None:
                refs = [_ref(r, x, names) for x in (value if isinstance(value, list) else [value])]
                iv[key] = refs if isinstance(value, list) else refs[0]
    data["model"] = model_ref(r, final)
    data.pop("output", None)
    given = data.pop("provenance", None) or {}
    learned, tuned = given.get("learned") or {}, given.get("tuned")
    data.pop("tune", None)  # the search that chose the values is the recipe's; the bake records its result
    for entry in learned.values():
        entry["file"] = _ref(r, entry["file"], names)
        entry["summary"] = {k: v for k, v in (entry.get("summary") or {}).items() if k != "out"}
    ckpt = plan.checkpoint
    origin = {k: (Path(v).name if k == "gguf" else v) for k, v in (ckpt.origin or {}).items()}
    data["provenance"] = {
        **({"learned": learned} if learned else {}),
        **({"tuned": tuned} if tuned else {}),
        "bake_version": __version__,
        **({"model_origin": origin} if origin else {}),
        "model_files": {f: sha256_file(ckpt.path / f) for f in ["config.json"] + ckpt.shard_files},
        "artifacts": {rel: {"role": plan.artifacts.get(src, _role(plan, src)), "sha256": _digest(folder / rel)}
                      for src, rel in names.items()},
    }
    return _drop_none(data)


def _role(plan, src: str) -> str:
    return next((role for path, role in plan.artifacts.items() if str(Path(path).resolve()) == src), "artifact")


def _digest(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    return "folder:" + ",".join(f"{p.relative_to(path)}={sha256_file(p)[:16]}" for p in sorted(path.rglob("*"))
                                if p.is_file())
