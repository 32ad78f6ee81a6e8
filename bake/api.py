"""The Python API; each CLI command is a thin wrapper over one of these functions."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from . import __version__, arch, card, interrupt
from . import recipe as recipe_mod
from .compile import Plan, compile_plan
from .errors import BakeError, VerificationFailed
from .recipe import Recipe
from .rewrite import rewrite
from .source import Checkpoint, resolve_model, sha256_file
from .verify import verify as run_verify

TMP_TAG = ".bake-tmp-"


def _recipe(r: Recipe | str | Path | dict) -> Recipe:
    if isinstance(r, Recipe):
        return r
    if isinstance(r, dict):
        return recipe_mod.parse(r)
    return recipe_mod.load(r)


def plan(recipe: Recipe | str | Path | dict, progress: bool = True) -> Plan:
    """Resolve the model, learn inline artifacts, compile; writes nothing but caches
    (the dequantized GGUF, learned artifacts)."""
    from .learners import materialize

    r = _recipe(recipe)
    ckpt = resolve_model(r.model, r.base_dir)
    return compile_plan(materialize(r, ckpt, progress), ckpt)


def plan_summary(p: Plan) -> dict:
    ckpt = p.checkpoint
    return {
        "model": {"spec": ckpt.spec, "path": str(ckpt.path), "family": p.family.name,
                  "model_type": ckpt.config.get("model_type"), "blocks": arch.num_layers(ckpt.config),
                  "hidden_size": arch.hidden_size(ckpt.config), "tied_embeddings": arch.tied(ckpt.config),
                  **({"origin": ckpt.origin} if ckpt.origin else {})},
        "dtype": p.dtype,
        "exact": p.exact,
        "steps": [{"index": s.index, "kind": s.kind, "exact": s.exact, "summary": s.summary,
                   "tensors": len(s.tensors)} for s in p.steps],
        "edits": [{"tensor": e.name, "source": e.source, "shape": list(e.shape), "note": e.note,
                   "ops": [f"#{op.step} {p.steps[op.step].kind}: {op.describe()}" for op in e.ops]}
                  for e in p.edits.values()],
        "config_changes": {k: v for k, v in p.config_updates.items()
                           if ckpt.config.get(k) != v},
    }


def _resolved_recipe(p: Plan) -> dict:
    """The recipe as run: artifact paths absolute, plus sha256 of everything read."""
    r = p.recipe
    data = recipe_mod.dump(r)
    for iv in data["interventions"]:
        for key in ("alphas", "vector", "direction"):
            if isinstance(iv.get(key), str):
                path, sep, k = iv[key].partition("#")
                iv[key] = str(r.path(path).resolve()) + sep + k
    if not str(r.model).startswith("builtin:") and Path(r.path(r.model)).exists():
        data["model"] = str(Path(r.path(r.model)).resolve())
    data.pop("output", None)
    learned = (data.pop("provenance", None) or {}).get("learned")
    ckpt = p.checkpoint
    data["provenance"] = {
        **({"learned": learned} if learned else {}),
        "bake_version": __version__,
        "model_path": str(ckpt.path),
        **({"model_origin": ckpt.origin} if ckpt.origin else {}),
        "model_files": {f: sha256_file(ckpt.path / f) for f in ["config.json"] + ckpt.shard_files},
        "artifacts": {path: {"role": role, "sha256": sha256_file(Path(path)) if Path(path).is_file() else "folder:" +
                             ",".join(sha256_file(f)[:16] for f in sorted(Path(path).glob("*.statedict")))}
                      for path, role in p.artifacts.items()},
    }
    return data


def _clean_stale(out: Path):
    """Remove temp siblings (folders or files) left by bakes and exports that were killed (their
    pid is gone)."""
    for tmp in out.parent.glob(f".{out.name}{TMP_TAG}*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def _output_dir(r: Recipe, output: str | Path | None) -> Path:
    if output is not None:
        return Path(output).resolve()
    if r.output is not None:
        return r.path(r.output).resolve()
    return Path("out").resolve() / "baked"


def apply(recipe: Recipe | str | Path | dict, output: str | Path | None = None, force: bool = False,
          progress: bool = True) -> dict:
    """Bake, verify and write. Returns the report; raises VerificationFailed (after writing the
    output with its failing report, so it can be inspected) when verification fails."""
    r = _recipe(recipe)
    out = _output_dir(r, output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise BakeError(f"output {out} exists and is not empty; pass --force to replace it")
    started = time.time()
    p = plan(r, progress)
    src = p.checkpoint.path
    if out == src or src in out.parents or out in src.parents:
        raise BakeError(f"output {out} and the input model {src} overlap; the input is never modified, "
                        "so choose an output outside it (and not a folder that contains it)")
    out_config = {**p.checkpoint.config, **p.config_updates}
    if "onnx" in r.export:  # refuse an export that cannot work before baking anything
        from . import export_onnx

        export_onnx.check(out_config, "the baked model")
    if "gguf" in r.export:
        from . import export_gguf

        export_gguf.check(out_config, "the baked model", r.gguf_type)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.parent / f".{out.name}{TMP_TAG}{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        stats = rewrite(p, tmp, progress=progress)
        verification = run_verify(p, tmp, progress=progress)
        report = {**plan_summary(p), "bake_version": __version__, "output": str(out), "edits": stats,
                  "verification": verification, "seconds": round(time.time() - started, 1)}
        report["model"]["base"] = card.base_info(p.checkpoint)
        (tmp / "recipe.yaml").write_text(
            f"# resolved by bake {__version__}; `bake verify {out.name}` re-checks it\n"
            + yaml.safe_dump(_resolved_recipe(p), sort_keys=False))
        (tmp / "bake_report.json").write_text(json.dumps(report, indent=2) + "\n")
        card.write(tmp)
        for fmt in (f for f in r.export if f != "hf"):  # inside the temp folder: all formats land together
            if verification["status"] != "failed":
                _export(tmp, fmt, None, r.gguf_type, "auto", progress, r.verify.prompts, name=out.name)
        report = json.loads((tmp / "bake_report.json").read_text())
        report["seconds"] = round(time.time() - started, 1)
        (tmp / "bake_report.json").write_text(json.dumps(report, indent=2) + "\n")
        interrupt.check()
        if out.exists():  # --force: swap, and put the old folder back if the swap fails
            trash = out.parent / f".{out.name}{TMP_TAG}old-{os.getpid()}"
            os.replace(out, trash)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(trash, out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise BakeError(f"no space left on device while writing {out}; nothing was written "
                            f"(the input model is untouched)") from None
        raise BakeError(f"cannot write {out}: {e}; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verification["status"] == "failed":
        raise VerificationFailed("verification failed: " + "; ".join(verification["failures"]), report)
    failed = {path: e for path, e in (report.get("exports") or {}).items() if e["status"] == "failed"}
    if failed:
        raise VerificationFailed("export verification failed: " + "; ".join(
            f"{path}: {', '.join(e['failures'])}" for path, e in failed.items()), report)
    return report


def _export(folder: Path, fmt: str, out, gguf_type, mode, progress, prompts, name: str | None = None) -> dict:
    """Export, then record the result in the folder's bake_report.json and card (when it has them).
    `name`: the folder's final name, when it is still a temp folder."""
    try:
        path, result = _run_export(folder, fmt, out, gguf_type, mode, progress, prompts, name)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BakeError(f"no space left on device while exporting {fmt}; nothing was written") from None
        raise BakeError(f"cannot write the {fmt} export: {e}; nothing was written") from None
    result = {"format": fmt, "path": str(path.relative_to(folder)) if folder in path.parents else str(path), **result}
    report_path = folder / "bake_report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        report.setdefault("exports", {})[result["path"]] = result  # one entry per written file or folder
        tmp = report_path.with_name(f".{report_path.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, report_path)
        card.write(folder)
    return result


def _run_export(folder: Path, fmt: str, out, gguf_type, mode, progress, prompts, name):
    """The one place that picks an export's path (default: inside the folder) and clears what a
    killed export to that path left behind."""
    name = name or folder.name
    if fmt == "onnx":
        from . import export_onnx

        out = Path(out).resolve() if out else folder / "onnx"
        _clean_stale(out)
        return export_onnx.export(folder, out, progress=progress, prompts=prompts)
    if fmt == "gguf":
        from . import export_gguf

        mode, source, gguf_type = export_gguf.resolve(folder, gguf_type, mode)
        out = Path(out).resolve() if out else folder / export_gguf.default_name(name, gguf_type, source)
        _clean_stale(out)
        return export_gguf.export(folder, out, gguf_type, mode, source, progress=progress, prompts=prompts, name=name)
    raise BakeError(f"unknown export format {fmt!r}; expected onnx or gguf")


def export(folder: str | Path, fmt: str, out: str | Path | None = None, gguf_type: str | None = None,
           mode: str = "auto", progress: bool = True) -> dict:
    """Export a baked folder to ONNX or GGUF, verify it, and record it in the folder's report and
    card. Raises VerificationFailed (after writing) when the exported model does not match."""
    folder = Path(folder).resolve()
    if not (folder / "config.json").is_file():
        raise BakeError(f"{folder}: no config.json; `bake export` takes a model folder written by `bake apply`")
    prompts = None
    if (folder / "recipe.yaml").is_file():
        prompts = recipe_mod.load(folder / "recipe.yaml").verify.prompts
    result = _export(folder, fmt, out, gguf_type, mode, progress, prompts)
    if result["status"] == "failed":
        raise VerificationFailed(f"{fmt} verification failed: " + "; ".join(result["failures"]), {"export": result})
    return result


def verify(out_dir: str | Path, progress: bool = True) -> dict:
    """Re-run the equivalence check on a written checkpoint (its recipe.yaml names the source)."""
    out = Path(out_dir).resolve()
    rpath = out / "recipe.yaml"
    if not rpath.is_file():
        raise BakeError(f"{out}: no recipe.yaml; is this a folder written by `bake apply`?")
    r = recipe_mod.load(rpath)
    p = plan(r)
    expected = (r.provenance or {}).get("model_files", {})
    for f, digest in expected.items():
        path = p.checkpoint.path / f
        if not path.is_file() or sha256_file(path) != digest:
            raise BakeError(f"the source model changed since the bake: {path} does not match its recorded sha256")
    result = run_verify(p, out, progress=progress)
    if result["status"] == "failed":
        raise VerificationFailed("verification failed: " + "; ".join(result["failures"]), {"verification": result})
    return {"output": str(out), "verification": result}


def arch_info(model: str) -> dict:
    """What the adapter resolves for a model: family, writers, bias slots, tying, exactness."""
    ckpt: Checkpoint = resolve_model(model, Path.cwd())
    fam = arch.resolve(ckpt.config)
    n = arch.num_layers(ckpt.config)
    names = list(ckpt.shapes)
    writers = {}
    for w, i in arch.writers(fam, 1):  # the embeddings and block 0, shown as block N
        label = w.module if i is None else w.module.replace("{i}", "N")
        writers[label] = {"tensors": [m for t in w.tensors for m in arch.match_tensors(t, names, i)],
                          "post_norm": w.post_norm.replace("{i}", "N") if w.post_norm else None}
    return {
        "model": ckpt.spec, "path": str(ckpt.path), "family": fam.name, "model_type": ckpt.config.get("model_type"),
        "blocks": n, "hidden_size": arch.hidden_size(ckpt.config), "layout": fam.layout,
        "tied_embeddings": arch.tied(ckpt.config), "post_norm": fam.post_norm,
        "mlp_output_bias": fam.mlp_bias_name(0) in names,
        "writers (block 0 shown as N)": writers,
        "exactness": arch.exactness(fam, ckpt.config, names),
    }
