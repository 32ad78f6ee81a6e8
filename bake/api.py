"""The Python API; each CLI command is a thin wrapper over one of these functions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from . import __version__, kinds
from .exporters import base as exporters
from .exporters.result import ExportResult
from .planner import plan, recipe_of as _recipe  # noqa: F401  (bake.api.plan is the public name)
from .compile.planning import merge_config
from .compile.planning import Plan
from .errors import BakeError, VerificationFailed
from .model.source import Checkpoint, resolve_model, sha256_file
from .publish import card
from .recipe import schema as recipe_mod
from .recipe.schema import Recipe
from .verification.verifier import verify as run_verify
from .write import integrity
from .files import staging
from .write import standalone
from .publish.report import Report
from .write.rewrite import rewrite


def plan_summary(p: Plan) -> dict:
    ckpt = p.checkpoint
    return {
        "model": {"spec": ckpt.spec, "path": str(ckpt.path), "family": p.family.name,
                  "model_type": ckpt.config.get("model_type"), "blocks": p.family.n_layers,
                  "hidden_size": p.family.d, "tied_embeddings": p.family.tied, "moe": p.family.moe,
                  **({"origin": ckpt.origin} if ckpt.origin else {})},
        "dtype": p.dtype,
        "exact": p.exact,
        "steps": [{"index": s.index, "kind": s.kind, "exact": s.exact, "summary": s.summary,
                   "tensors": len(s.tensors), **({"details": s.details} if s.details else {})} for s in p.steps],
        "edits": [{"tensor": e.name, "source": e.source, "shape": list(e.out_shape), "note": e.note,
                   "ops": [f"#{op.step} {p.steps[op.step].kind}: {op.describe()}" for op in e.ops]}
                  for e in p.edits.values()],
        "config_changes": {k: v for k, v in p.config_updates.items()
                           if ckpt.config.get(k) != v},
    }


def _output_dir(r: Recipe, output: str | Path | None) -> Path:
    if output is not None:
        return staging.resolve_path(output, "output")
    if r.output is not None:
        return staging.resolve_path(r.path(r.output), "output")
    return staging.resolve_path(Path("out") / "baked", "output")


def _inputs(r: Recipe, p: Plan) -> list[Path]:
    """Everything this run reads, which no output may replace, hold or lie inside: the model (and the
    GGUF it came from), the artifacts and the data that inline learning read (the recipe's folder,
    which may hold outputs, is protected apart)."""
    paths = [p.checkpoint.path, *map(Path, p.artifacts)]
    if p.checkpoint.origin.get("gguf"):
        paths.append(Path(p.checkpoint.origin["gguf"]))
    for entry in ((p.recipe.provenance or {}).get("learned") or {}).values():
        for v in entry["learn"].values():
            if isinstance(v, str) and r.path(v).exists():
                paths.append(r.path(v))
    return paths


def apply(recipe: Recipe | str | Path | dict, output: str | Path | None = None, force: bool = False,
          progress: bool = True, trust_remote_code: bool = False, verify_mode: str | None = None) -> Report:
    """Bake, verify and write. Returns the report (`bake/publish/report.py`); raises VerificationFailed (after writing the
    output with its failing report, so it can be inspected) when verification fails.
    `force` replaces an output folder that bake wrote earlier, never anything else;
    `trust_remote_code` lets transformers run code shipped with the model; `verify_mode`
    (full | streamed | local | auto) overrides the recipe's `verify.mode`."""
    from .model.device import prefer

    r = _recipe(recipe)
    with prefer(r.device):  # the recipe's `device:`, unless --device chose
        return _apply(r, output, force, progress, trust_remote_code, verify_mode)


def _apply(r: Recipe, output, force: bool, progress: bool, trust_remote_code: bool, verify_mode: str | None) -> Report:
    out = _output_dir(r, output)
    refuse = staging.own_output("bake apply")
    staging.check_target(out, folder=True, force=force, around=[r.base_dir], refuse=refuse)  # fail fast, before learning
    started = time.time()
    p = plan(r, progress, trust_remote_code=trust_remote_code)
    src = p.checkpoint.path
    if src in out.parents:
        raise BakeError(f"output {out} is inside the input model {src}; the input is never modified, "
                        "so choose an output outside it")
    out_config = json.loads(json.dumps(p.checkpoint.config))
    merge_config(out_config, p.config_updates)
    for fmt in (f for f in r.export if f != "hf"):  # refuse an export that cannot work before baking anything
        exporters.get(fmt).check(out_config, src, p.checkpoint.origin, **exporters.get(fmt).from_recipe(r))
    staging.preflight_space(out, sum((src / f).stat().st_size for f in p.checkpoint.shard_files))
    with staging.staged(out, folder=True, force=force, protect=_inputs(r, p), around=[r.base_dir],
                        refuse=refuse) as tmp:
        stats = rewrite(p, tmp, progress=progress)
        verification = run_verify(p, tmp, progress=progress, mode=verify_mode)
        report = Report(**plan_summary(p), bake_version=__version__, output=str(out), verification=verification)
        report.edits = stats
        report.model["base"] = card.base_info(p.checkpoint)
        (tmp / "recipe.yaml").write_text(  # with the artifacts it read, copied into artifacts/
            f"# resolved by bake {__version__}; `bake verify {out.name}` re-checks it\n"
            + yaml.safe_dump(standalone.recipe_as_run(p, tmp, out), sort_keys=False))
        if verification["status"] != "failed":  # inside the temp folder: all formats land together
            for fmt in (f for f in r.export if f != "hf"):
                _export(tmp, fmt, None, exporters.get(fmt).from_recipe(r), progress, r.verify.prompts, report, name=out.name,
                        trust_remote_code=trust_remote_code)
        report.seconds = round(time.time() - started, 1)
        report.files = integrity.manifest(tmp)
        report.write(tmp)
        card.write(tmp, report=report)
        staging.write_marker(tmp, "bake apply")
    if verification["status"] == "failed":
        raise VerificationFailed("verification failed: " + "; ".join(verification["failures"]), report)
    failed = {path: e for path, e in report.exports.items() if e["status"] == "failed"}
    if failed:
        raise VerificationFailed("export verification failed: " + "; ".join(
            f"{path}: {', '.join(e['failures'])}" for path, e in failed.items()), report)
    return report


def _export(folder: Path, fmt: str, out, given: dict, progress, prompts, report: Report | None,
            name: str | None = None, force: bool = False, trust_remote_code: bool = False) -> ExportResult:
    """Export `folder`, verify the result in its runtime, and record it (with the sha256 of every file
    written inside the folder) in the folder's report and card, when it has them. `out`: the path
    (default: the exporter's, inside the folder); `given`: the user's settings; `name`: the folder's
    final name, when it is still a temp folder. Only bake's own earlier export may be replaced."""
    ex = exporters.get(fmt)
    name = name or folder.name
    opts = ex.options(folder, report, **given)
    out = staging.resolve_path(out, "--out") if out else ex.default_output(folder, name, opts)
    refuse = staging.own_output(f"bake export {fmt}") if ex.folder else (
        lambda o: _not_own_export(folder, fmt, o, report))
    with staging.staged(out, folder=ex.folder, force=force, refuse=refuse, protect=ex.reads(opts), around=[folder],
                        what=f"{fmt.upper()} export", recorded_in=folder) as tmp:
        written = ex.write(folder, tmp, opts, progress, name, trust_remote_code)
        checked = ex.verify(folder, tmp, opts, written, progress, prompts, trust_remote_code)
        if ex.folder:
            staging.write_marker(tmp, f"bake export {fmt}")
    inside = folder in out.parents
    result = {"format": fmt, "path": str(out.relative_to(folder)) if inside else str(out),
              **({} if ex.folder else {"file": out.name}), **written, **checked}
    files = integrity.manifest(folder, out) if inside else {}  # sha256 of each file, computed once
    if out.is_file():
        result["sha256"] = files.get(result["path"]) or sha256_file(out)
    result = ExportResult.model_validate(result)
    if report is not None:
        report.record_export(result, files)
        report.write(folder)
        card.write(folder, report=report)
    return result


def _not_own_export(folder: Path, fmt: str, out: Path, report: Report | None) -> str | None:
    """None when `out` is a file that an earlier export of `folder` wrote and that is unchanged since."""
    for path, e in (report.exports if report else {}).items():
        where = Path(path) if Path(path).is_absolute() else folder / path
        if e.get("format") == fmt and where == out:
            if e.get("sha256") and out.is_file() and sha256_file(out) == e["sha256"]:
                return None
            return "it changed since bake exported it"
    return f"it is not a {fmt.upper()} that bake exported from this folder"


def export(folder: str | Path, fmt: str, out: str | Path | None = None, progress: bool = True, force: bool = False,
           trust_remote_code: bool = False, **given) -> dict:
    """Export a baked folder to a registered format (ONNX, GGUF, a plug-in's), verify it, and record
    it in the folder's report and card. `given`: the format's own settings (gguf: `gguf_type`,
    `mode`). Raises VerificationFailed (after writing) when the exported model does not match.
    `force` replaces an earlier export of this folder, never anything else."""
    exporters.get(fmt)  # an unknown format is refused first
    folder = staging.resolve_path(folder, "folder")
    if not (folder / "config.json").is_file():
        raise BakeError(f"{folder}: no config.json; `bake export` takes a model folder written by `bake apply`")
    report = Report.read(folder, required=False)
    if report:
        integrity.require_unchanged(folder, report, "export")
    prompts = None
    if (folder / "recipe.yaml").is_file():
        prompts = recipe_mod.load(folder / "recipe.yaml").verify.prompts
    with staging.locked(folder, "folder"):  # no bake may replace the folder while its report is updated
        result = _export(folder, fmt, out, given, progress, prompts, report, force=force,
                         trust_remote_code=trust_remote_code)
    if result["status"] == "failed":
        raise VerificationFailed(f"{fmt} verification failed: " + "; ".join(result["failures"]), {"export": result})
    return result


def verify(out_dir: str | Path, progress: bool = True, trust_remote_code: bool = False,
           mode: str | None = None, model: str | None = None) -> dict:
    """Check a written folder: its files against the sha256 manifest in its report, then the
    equivalence check again (its recipe.yaml names the source; `model` names it instead, e.g. a
    local model on another machine: its files must match the sha256 the recipe records). Trust
    comes from the caller only, never from the folder."""
    out = staging.resolve_path(out_dir, "folder")
    rpath = out / "recipe.yaml"
    if not rpath.is_file():
        raise BakeError(f"{out}: no recipe.yaml; is this a folder written by `bake apply`?")
    files = integrity.check(out, Report.read(out))
    if files["status"] == "changed":
        raise VerificationFailed("integrity check failed: the folder's files differ from what bake wrote ("
                                 + integrity.describe(files) + "); re-bake it with `bake apply`", {"integrity": files})
    r = recipe_mod.load(rpath)
    if model is not None:
        local = staging.resolve_path(model, "--model") if Path(model).exists() else None
        r = recipe_mod.parse({**recipe_mod.dump(r), "model": str(local or model)}, str(rpath), out)
    p = plan(r, trust_remote_code=trust_remote_code)
    expected = (r.provenance or {}).get("model_files", {})
    for f, digest in expected.items():
        path = p.checkpoint.path / f
        if not path.is_file() or sha256_file(path) != digest:
            raise BakeError(f"the source model changed since the bake: {path} does not match its recorded sha256")
    result = run_verify(p, out, progress=progress, mode=mode)
    if result["status"] == "failed":
        raise VerificationFailed("verification failed: " + "; ".join(result["failures"]),
                                 {"verification": result, "integrity": files})
    return {"output": str(out), "integrity": files, "verification": result}


def arch_info(model: str, trust_remote_code: bool = False) -> dict:
    """What the adapter resolves for a model: writers, tensors, steering slot, tying, exactness.
    (Reads config.json and safetensors headers, and probes a tiny random model of the same config.)"""
    from .exporters import serving
    from .families import resolve as resolve_family

    ckpt: Checkpoint = resolve_model(model, Path.cwd())
    fam = resolve_family(ckpt.config, ckpt.shapes, trust_remote_code)
    b0 = fam.block(0)

    def show(w):
        return {"tensors": [f"{k} (axis {a})" for k, a in w.tensors][:8] + (["..."] if len(w.tensors) > 8 else []),
                "exact": w.exact, **({"post_norm_of": [k for k, _ in w.source][:4]} if w.norm else {})}
    writers = {w.module: show(w) for w in fam.embeds}
    writers.update({w.module.replace(b0 + ".", fam.blocks_path + ".N.", 1): show(w) for w in fam.blocks[0]})
    status = {name: kind.status(fam) for name, kind in kinds.KINDS.items()}
    return {
        "model": ckpt.spec, "path": str(ckpt.path), "model_type": ckpt.config.get("model_type"),
        "blocks": fam.n_layers, "hidden_size": fam.d, "moe": fam.moe,
        "tied_embeddings": fam.tied, "post_norm": fam.post_norm,
        "writers (block 0 shown as N)": writers,
        "exactness": {k: f"{st}: {why}" for k, (st, why) in status.items()},
        "serving (as it is)": {rt: f"{ok}: {why}" for rt, ok, why in serving.notes(ckpt.config)},
    }


def evaluate(target: str | Path, against: str | None = None, suites: str = "toxicity,quality",
             out: str | Path | None = None, force: bool = False, sweep: str | None = None, hooks: bool = False,
             max_ppl_increase: float = 0.05, options: dict | None = None, progress: bool = True,
             trust_remote_code: bool = False) -> dict:
    """`bake eval`: measure `target` against the model it was made from (bake/evaluation/). The
    report (eval_report.json, .md, plots) goes into `out`; without `out`, into a baked folder that is
    the target (recorded in its report and model card), else into out/eval/NAME."""
    import shutil

    from .evaluation import report as ereport
    from .evaluation import run, suites as esuites
    from .recipe.schema import is_recipe
    from .files.tempdirs import temp_dir

    opts = esuites.Options(**(options or {}), progress=progress)
    folder = staging.resolve_path(target, "target")
    into_folder = out is None and folder.is_dir() and (folder / "bake_report.json").is_file()
    if into_folder:
        report = Report.read(folder)
        integrity.require_unchanged(folder, report, "eval")
    else:
        out = staging.resolve_path(out or Path("out") / "eval" / folder.stem, "--out")
        inputs = [Path(x) for x in (folder, against, *opts.data.values()) if x and Path(x).exists()]
        if is_recipe(folder):  # a recipe: its folder may hold the report, never be replaced by it; its model is an input
            r = _recipe(folder)
            model = Path(r.path(r.model)) if not str(r.model).startswith("builtin:") else None
            inputs, around = [*inputs, *([model] if model is not None and model.exists() else [])], [folder.parent]
        else:
            around = []
        policy = dict(folder=True, force=force, protect=inputs, around=around, what="eval output",
                      refuse=staging.own_output("bake eval"))
        staging.check_target(out, **policy)
    from .model.device import prefer

    with prefer(_recipe(folder).device if is_recipe(folder) else None):  # a recipe's `device:` (not a baked folder's)
        rep = run.evaluate(target, against, suites, opts, sweep=sweep, max_ppl_increase=max_ppl_increase, hooks=hooks,
                           trust_remote_code=trust_remote_code)
    if not into_folder:
        with staging.staged(out, **policy) as tmp:
            rep["files"] = ereport.write(rep, tmp)
            staging.write_marker(tmp, "bake eval")
        rep["output"] = str(out)
        return ereport.EvalReport.model_validate(rep)
    with staging.locked(folder, "folder"), temp_dir("eval-report") as tmp:
        rep["files"] = ereport.write(rep, Path(tmp))
        for f in rep["files"]:  # each file replaced atomically; the report and card follow
            with staging.replacing(folder / f) as dest:
                shutil.move(str(Path(tmp) / f), dest)
        report.files = {**(report.files or {}), **{f: sha256_file(folder / f) for f in rep["files"]}}
        report.evaluation = {"report": ereport.MD, "suites": rep["suites"], "against": rep["against"]}
        report.write(folder)
        card.write(folder, report=report)
    rep["output"] = str(folder)
    rep["updated"] = ["bake_report.json (its manifest and evaluation)", "README.md (the model card's Evaluation)"]
    return ereport.EvalReport.model_validate(rep)


def explain(sae: str, model: str, features: list[int] | None = None, top: int = 8, data: list[str] | None = None,
            words: str | None = None, max_words: int = 12, temperature: float = 0.05, contexts: int = 5,
            max_length: int = 128, space: str = "output", progress: bool = True, trust_remote_code: bool = False) -> dict:
    """`bake explain`: each feature's mutual-information explanation over a fixed vocabulary (bake/learn/explain.py)
    and, with `data`, its top activating contexts. `features` None: the `top` features whose explanation
    carries the most information."""
    from collections import Counter

    from .families import resolve as resolve_family
    from .learn import collect, data as data_mod
    from .model.loading import load_tokenizer
    from .learn import explain as ex
    from .artifacts import sae as sae_format

    started = time.time()
    s = sae_format.load(sae)
    ckpt = resolve_model(model)  # the model itself is loaded only for the top contexts
    family = resolve_family(ckpt.config, ckpt.shapes, trust_remote_code)
    if s.d_in != family.d:
        raise BakeError(f"SAE {sae}: reads {s.d_in}-wide activations; {model} has hidden size {family.d}")
    tok = load_tokenizer(ckpt.path, trust_remote_code=trust_remote_code)
    if tok is None:
        raise BakeError(f"{ckpt.spec}: bake explain needs a tokenizer in the model folder")
    texts = [t for spec in (data or []) for t in data_mod.load(spec).texts]
    ids = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    counts = Counter(i for row in ids for i in row) if texts else None
    word_list = None
    if words:
        p = Path(words)
        if not p.is_file():
            raise BakeError(f"--words {words}: no such file (one word per line)")
        word_list = [w for w in p.read_text().split() if w]
    vocab, vocab_ids = ex.vocabulary(tok, word_list)
    if not vocab:
        raise BakeError("the vocabulary is empty: give --words FILE with one word per line")
    try:
        emb, fvecs = ex.feature_vectors(ckpt, family, s.W_dec, space, trust_remote_code)
    except ValueError as e:
        raise BakeError(f"bake explain: {e}") from None
    p_c_w = ex.conditionals(ex.word_vectors(emb, vocab_ids), fvecs, temperature)
    p_w = ex.prior(vocab_ids, counts)
    if features:
        bad = [f for f in features if not 0 <= f < s.d_sae]
        if bad:
            raise BakeError(f"--features {bad}: out of range; the SAE has {s.d_sae} features")
        chosen = list(features)
    else:
        chosen = [c for c, _ in ex.rank_features(p_c_w, p_w, max_words)[:top]]
    acts = where = None
    if texts and contexts:
        runner = collect.Runner(ckpt, trust_remote_code)
        layer, _ = sae_format.hook_site(s.hook_name, family.n_layers)
        x, where = runner.token_states(texts, layer, max_length=max_length, progress=progress)
        acts = s.encode(x)
    rows = []
    for c in chosen:
        e = ex.explain(p_c_w, p_w, c, max_words)
        row = {"feature": c, "mi": e["mi"], "p_c": e["p_c"],
               "words": [{"word": vocab[w], "p_c_given_w": round(pc, 4)} for w, pc in zip(e["words"], e["p_c_given_w"])]}
        if acts is not None:
            row["active_share"] = float((acts[:, c] > 0).float().mean())
            row["contexts"] = ex.top_contexts(acts, where, ids, tok, c, contexts)
        rows.append(row)
    return {"sae": sae, "model": model, "hook_name": s.hook_name, "d_sae": s.d_sae, "vocabulary": len(vocab),
            "prior": "corpus token counts (add-one)" if counts else "uniform", "temperature": temperature, "space": space,
            "corpus_texts": len(texts), "features": rows, "seconds": round(time.time() - started, 1)}


def learn(what: str, progress: bool = True, trust_remote_code: bool = False, force: bool = False, **opts) -> dict | None:
    """`bake learn WHAT`: run a learner (bake.learn.learners; its options are its keyword arguments) and
    write its artifact to `opts["out"]` staged: an existing artifact is replaced only with `force`, and
    only when `bake learn` wrote it; never an input, nor anything inside an input folder. One of several
    `accelerate launch` processes shares the work and writes nothing (None); the first one writes."""
    import contextlib

    from .learn import learners
    from .learn.collect import is_main_process

    if what not in learners.LEARNERS:
        raise BakeError(f"bake learn: unknown artifact {what!r}; one of {', '.join(learners.LEARNERS)}")
    if not opts.get("out"):
        raise BakeError(f"bake learn {what}: give out= (the artifact to write)")
    fn = getattr(learners, learners.LEARNERS[what])
    if not is_main_process():
        from .files.tempdirs import temp_dir

        with temp_dir("learn") as d:
            extra = {"out": str(Path(d) / "a"), **({"statedict": None} if "statedict" in opts else {})}
            fn(progress=False, trust_remote_code=trust_remote_code, **{**opts, **extra})
        return None
    inputs = [Path(x) for k, v in opts.items() if k in ("model", *learners.PATH_OPTS)
              for x in (v if isinstance(v, list) else [v]) if isinstance(x, str) and Path(x).exists()]
    folder = getattr(fn, "folder", False)  # the SAE: a folder (SAELens layout)
    with contextlib.ExitStack() as stack:
        if opts.get("statedict"):  # ml-aura's folder of .statedict files: staged like every output
            opts["statedict"] = str(stack.enter_context(staging.staged(
                opts["statedict"], folder=True, force=force, protect=inputs, what="--statedict",
                refuse=staging.own_output("bake learn aura --statedict"))))
        tmp = stack.enter_context(staging.staged(opts["out"], folder=folder, force=force, protect=inputs,
                                                 what="--out", refuse=learners.own_artifact(what)))
        final, opts["out"] = opts["out"], str(tmp)
        res = fn(progress=progress, trust_remote_code=trust_remote_code, **opts)
        res["out"] = str(staging.resolve_path(final))
        if opts.get("statedict"):
            staging.write_marker(Path(opts["statedict"]), "bake learn aura --statedict")
    return res


def tune(recipe: str | Path, trials: int | None = None, show: bool = False, pick: int | None = None,
         out: str | Path | None = None, study_dir: str | Path | None = None, storage: str | None = None,
         study: str | None = None, data: dict | None = None, force: bool = False, progress: bool = True,
         trust_remote_code: bool = False):
    """`bake tune`: search the recipe's `tune:` block (an Optuna study, resumable; `show`: its front now;
    `pick`: re-measure that trial on the held-out split and write the resolved recipe to `out`)."""
    from .tune import study as tstudy
    from .tune.report import Picked, TuneReport

    if show and pick is not None:
        raise BakeError("bake tune: --show and --pick are two different things; give one")
    if out is not None and pick is None:
        raise BakeError("bake tune: --out is where --pick writes the resolved recipe; the study's folder is --study-dir")
    from .model.device import prefer

    s = tstudy.setup(recipe, study_dir, storage, study, data)
    with prefer(_recipe(recipe).device):  # the recipe's `device:`, unless --device chose
        if pick is not None:
            return Picked.model_validate(tstudy.pick(s, pick, out, force, progress, trust_remote_code))
        rep = tstudy.show(s) if show else tstudy.search(s, trials, progress, trust_remote_code)
    return TuneReport.model_validate(rep)
