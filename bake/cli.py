"""`bake` command line: plan, apply, verify, export, push, generate, arch, learn. Exit codes: 0 ok, 1 verification failed, 2 bad input."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from . import __version__
from .exporters.base import FORMATS
from .errors import BakeError, VerificationFailed, first_line
from .files import interrupt, redact  # light: torch and transformers load only once a command runs


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def edit_counts(edits: list[dict]) -> str:
    """'1 tensor changed, 88 zero biases created, 1 copy': what the tensor edits are, by what they do."""
    changed = sum(bool(e["ops"]) for e in edits)
    zeros = sum(not e["ops"] and e["source"] is None for e in edits)
    copies = sum(not e["ops"] and e["source"] is not None for e in edits)
    parts = [f"{_n(changed, 'tensor')} changed"]
    if zeros:
        parts.append(f"{_n(zeros, 'zero bias')} created".replace("biass", "biases"))
    if copies:
        parts.append(_n(copies, "unchanged copy").replace("copys", "copies"))
    return ", ".join(parts)


def format_plan(summary: dict, tensors: bool = True) -> str:
    """Model, interventions and config changes; with `tensors`, the per-tensor edit table too (one row
    per edited tensor: hundreds on a real model, so `bake apply` shows it only with --verbose)."""
    m = summary["model"]
    lines = [f"model   {m['spec']}  ({m['family']}, {m['blocks']} blocks, hidden {m['hidden_size']}, "
             f"{'tied' if m['tied_embeddings'] else 'untied'} embeddings)",
             f"dtype   {summary['dtype']}",
             "interventions:"]
    for s in summary["steps"]:
        lines.append(f"  #{s['index']} {s['kind']:<6} {'exact' if s['exact'] else 'APPROXIMATE'}: {s['summary']} "
                     f"[{s['tensors']} tensor{'s' if s['tensors'] != 1 else ''}]")
    edits = summary["edits"]
    width = max((len(e["tensor"]) for e in edits), default=10)
    lines.append(f"tensor edits ({edit_counts(edits)}):" if tensors else
                 f"tensor edits: {edit_counts(edits)} (listed by --verbose, in bake_report.json and in the model card)")
    for e in edits if tensors else ():
        src = "new zeros" if e["source"] is None else ("" if e["source"] == e["tensor"] else f"from {e['source']}")
        what = "; ".join(e["ops"]) or "copy"
        extra = ", ".join(x for x in (src, e.get("note", "")) if x)
        lines.append(f"  {e['tensor']:<{width}}  {what}" + (f"  ({extra})" if extra else ""))
    if summary["config_changes"]:
        lines.append("config changes: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in summary["config_changes"].items()))
    return "\n".join(lines)


def format_local(v: dict) -> list[str]:
    loc = v.get("local")
    if not loc:
        return []
    rows = loc["modules"]
    worst = max((r["max_rel"] for r in rows if r["exact"]), default=None)
    n_rand, n_rec = (sum(kind in r["inputs"] for r in rows) for kind in ("random", "recorded"))
    lines = [f"  module-local checks   {loc['status'].upper()}: {len(rows)} module checks, hooked vs baked "
             f"({n_rand} on random inputs, {n_rec} on inputs recorded end to end), max relative diff {_fmt(worst)} "
             f"(tolerance {loc['tolerance_rel']:g}); {sum(c['status'] == 'passed' for c in loc['copies'])} "
             "copied or created tensors identical"]
    lines += [f"  unchecked: {u}" for u in loc["unchecked"][:5]]
    if len(loc["unchecked"]) > 5:
        lines.append(f"  ... {len(loc['unchecked']) - 5} more unchecked (see bake_report.json)")
    return lines


def format_verification(v: dict) -> str:
    if v.get("mode") == "local":
        lines = [f"verification: {v['status'].upper()}  (module-local checks only: --verify local"
                 + (", the models do not fit in memory for the end-to-end pass" if v.get("mode_asked") == "auto" else "")
                 + "; no end-to-end logits compared)", *format_local(v)]
        if not v["exact"]:
            measured = any(not r["exact"] for r in v["local"]["modules"])
            lines.append("  APPROXIMATE bake: " + ("the module-local figures above are the measured deviation from the "
                                                   "hooks" if measured else "no module-local check measures its "
                                                   "deviation; --verify full or streamed measures it end to end"))
        return "\n".join(lines + [f"  FAIL: {f}" for f in v["failures"]])
    m, t = v["metrics"], v["tolerance"]
    first = m["first_divergent_hidden_state"]
    lines = [
        f"verification: {v['status'].upper()}  ({len(v['prompts'])} prompts, hooked original vs baked "
        f"reloaded from disk, {v['compute_dtype']} compute"
        + (", streamed from disk module by module, teacher-forced only" if v.get("mode") == "streamed" else "") + ")",
        f"  max |logit diff|      {_fmt(m['max_abs_logit'])}   (tolerance {_fmt(t['max_abs_logit'], 'g')})",
        f"  max relative diff     {_fmt(m['max_rel_logit'])}",
        f"  top-1 agreement       {m['top1_agreement']:.2%}   (minimum {t['min_top1']:.0%})",
        f"  KL(hooked||baked)     mean {_fmt(m['kl_mean'])}, max {_fmt(m['kl_max'])}",
        (f"  greedy tokens agree   {_fmt(m['greedy_agreement'], '.2%')}   ({m['greedy_identical_prompts']} prompts identical)"
         if m["greedy_agreement"] is not None else "  greedy tokens         not compared (no generation in this mode)"),
        f"  first divergent layer {'none' if first is None else f'hidden state {first}'} "
        f"(relative tolerance {t['hidden_state_rel']:g})",
        *format_local(v),
    ]
    if not v["exact"]:
        lines.append("  APPROXIMATE bake: the figures above are the measured deviation from the hooks")
    for f in v["failures"]:
        lines.append(f"  FAIL: {f}")
    return "\n".join(lines)


def format_export(fmt: str, e: dict) -> str:
    m = e.get("metrics", {})
    lines = [f"{fmt} export: {e['status'].upper()}  {e['path']}  ({e.get('runtime', '')} vs {e.get('against', '')})"]
    if "type" in e:
        lines.append(f"  type {e['type']}, {e['mode']}" + (f" of {e['source']}" if e.get("source") else ""))
    if "max_abs_logit" in m:
        tol = e.get("tolerance", {}).get("max_abs_logit")
        tol = f"{tol:g}" if isinstance(tol, (int, float)) else tol
        rel = f" ({m['max_abs_logit_relative']:.2g} of the largest logit)" if "max_abs_logit_relative" in m else ""
        lines.append(f"  max |logit diff|      {_fmt(m['max_abs_logit'])}{rel}" + (f"   (tolerance {tol})" if tol else ""))
    if m.get("top1_flips"):
        lines.append(f"  top-1 flips           {m['top1_flips']} on the teacher-forced sequences, at reference "
                     f"margins up to {_fmt(m['flip_margin_max'])}")
    if "greedy_identical_prompts" in m:
        lines.append(f"  greedy tokens         {m['greedy_identical_prompts']} prompts identical"
                     + (f", {m['greedy_token_agreement']:.2%} of tokens agree" if "greedy_token_agreement" in m else "")
                     + (f"; top-1 {m['top1_agreement']:.2%} on the same sequences" if "top1_agreement" in m else ""))
    if "tokenization_identical" in m:
        lines.append(f"  tokenization          {m['tokenization_identical']} probe texts tokenized as transformers does")
    if "genai_identical_prompts" in m:
        lines.append(f"  onnxruntime-genai     {m['genai_identical_prompts']} prompts identical")
    if e.get("baseline"):
        b = e["baseline"]["metrics"]
        lines.append(f"  baseline              {b['greedy_identical_prompts']} prompts identical, "
                     f"{b['greedy_token_agreement']:.2%} of tokens agree, top-1 {b['top1_agreement']:.2%}, "
                     f"max |logit diff| {_fmt(b['max_abs_logit'])}"
                     f"  ({e['baseline']['what']})")
    if e.get("note"):
        lines.append(f"  note: {e['note']}")
    for f in e.get("failures", []):
        lines.append(f"  FAIL: {f}")
    return "\n".join(lines)


def format_push(r: dict) -> str:
    head = (f"dry run: would push to {r['repo']}@{r['revision']}" if r["dry_run"]
            else f"pushed to {r['repo']}@{r['revision']}: {r['commit_url']}")
    lines = [head + (" (private)" if r["private"] else "") + (" [--force: verification failed]" if r["forced"] else ""),
             f"commit message: {r['message']}", f"files ({len(r['files'])}):"]
    lines += [f"  {f['path']:<48} {f['bytes']:>14,} bytes" for f in r["files"]]
    if r["dry_run"]:
        lines += ["model card (README.md):", r["card"]]
    return "\n".join(lines)


def format_arch(info: dict) -> str:
    lines = [f"{k:<16} {v}" for k, v in info.items() if not isinstance(v, dict)]
    lines.append("residual writers (block N):")
    for mod, w in info["writers (block 0 shown as N)"].items():
        lines.append(f"  {mod:<40} {', '.join(w['tensors']) or '-'}"
                     + (f"   (post-norm of {', '.join(w['post_norm_of'])})" if w.get("post_norm_of") else ""))
    lines.append("exactness:")
    for k, v in info["exactness"].items():
        lines.append(f"  {k:<7} {v}")
    lines.append("serving (as it is; a bake's card says it for the baked checkpoint):")
    for k, v in info["serving (as it is)"].items():
        lines.append(f"  {k:<13} {v}")
    return "\n".join(lines)


def exactness_table(progress: bool = True) -> str:
    """Markdown table: every causal-LM type of the installed transformers, its status per kind (the
    adapter of a tiny checkpoint of it) and per export. `eval/coverage.py` prints the same table with
    each status proven by baking; docs/families.md carries that one."""
    from tqdm.auto import tqdm

    from .evaluation import coverage

    rows = []
    for mt in tqdm(coverage.causal_lm_types(), desc="probing model types", disable=not progress):
        row = coverage.status(mt)
        rows.append({"model_type": mt, "decoder": row.decoder, "why": row.why, "cells": row.status})
    return coverage.table(rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bake", description="Compile AURA, steering, ablation and SAE-feature "
                                "interventions into checkpoints.")
    p.add_argument("--version", action="version", version=f"bake {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, trust=True):
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars, only the result")
        sp.add_argument("--progress", action="store_true",
                        help="show progress bars even when stderr is not a terminal (default: only on a terminal)")
        if trust:
            sp.add_argument("--trust-remote-code", action="store_true",
                            help="let transformers run Python code shipped with the model (never the default; "
                                 "a recipe or a folder cannot ask for it)")

    sp = sub.add_parser("plan", help="show the per-tensor edit table; writes nothing")
    sp.add_argument("recipe")
    common(sp)
    sp = sub.add_parser("apply", help="bake, verify and write a checkpoint")
    sp.add_argument("recipe")
    sp.add_argument("--output", "-o", help="output folder (overrides the recipe's `output`)")
    sp.add_argument("--force", action="store_true",
                    help="replace an output folder that bake wrote earlier (never any other folder)")
    sp.add_argument("--verbose", "-v", action="store_true", help="also print the per-tensor edit table")
    _verify_mode(sp)
    common(sp)
    sp = sub.add_parser("verify", help="re-run the equivalence check on a baked folder")
    sp.add_argument("output")
    _verify_mode(sp)
    common(sp)
    sp = sub.add_parser("generate", help="generate text from a model, a baked folder, or a recipe's hooks (try before baking)")
    sp.add_argument("source", help="a recipe (its model with its hooks), a baked folder, a folder, .gguf, Hub id or builtin:NAME")
    sp.add_argument("prompts", nargs="+", help="one or more prompts (each through the chat template when there is one)")
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument("--hooks", action="store_true", default=None,
                      help="a recipe's model with the recipe's hooks attached (the default for a recipe)")
    mode.add_argument("--base", dest="hooks", action="store_false", help="a recipe's model without its hooks")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (seeded per prompt)")
    sp.add_argument("--temperature", type=float, default=1.0)
    sp.add_argument("--top-p", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-chat", dest="chat", action="store_false", help="feed prompts as plain text")
    common(sp)
    _eval_parser(sub.add_parser("eval", help="measure what a bake does to behaviour and quality (toxicity, refusal, "
                                "perplexity, KL), against the base model; --sweep re-bakes a recipe per value"), common)
    sp = sub.add_parser("explain", help="explain SAE features by the words that carry the most mutual information "
                        "about them, and by their top activating contexts")
    sp.add_argument("sae", help="a SAELens folder or hf:owner/repo[/subfolder]")
    sp.add_argument("--model", required=True, help="the model the SAE reads (folder, .gguf, Hub id or builtin:NAME)")
    sp.add_argument("--features", help="comma-separated feature indices (default: the --top most informative)")
    sp.add_argument("--top", type=int, default=8)
    sp.add_argument("--data", nargs="+", help="a corpus (text files or Hub datasets): the word prior and the contexts")
    sp.add_argument("--words", help="a word list file (default: the tokenizer's single-token words)")
    sp.add_argument("--max-words", type=int, default=12, help="at most this many words per explanation")
    sp.add_argument("--temperature", type=float, default=0.05, help="p(c|w) = softmax(cos(e_w, W_c) / temperature)")
    sp.add_argument("--space", choices=["output", "input"], default="output",
                    help="output: output embeddings and W_dec times the final norm's gain (what the feature promotes); "
                         "input: input embeddings and W_dec as it is")
    sp.add_argument("--contexts", type=int, default=5, help="top activating contexts per feature (with --data)")
    sp.add_argument("--out", help="also write the explanation as JSON here")
    sp.add_argument("--force", action="store_true", help="replace an --out file that bake explain wrote earlier")
    common(sp)
    sp = sub.add_parser("arch", help="what the adapter resolves for a model")
    sp.add_argument("model", nargs="?", help="local folder, .gguf, Hub id or builtin:NAME")
    sp.add_argument("--table", action="store_true",
                    help="probe every causal-LM type of the installed transformers and print its status per kind")
    common(sp, trust=False)  # reads config.json and safetensors headers only: no model code runs
    sp = sub.add_parser("export", help="write and verify an ONNX or GGUF copy of a baked folder")
    sp.add_argument("format", choices=FORMATS)
    sp.add_argument("folder", help="a folder written by `bake apply`")
    sp.add_argument("--out", help="onnx: a folder (default FOLDER/onnx); gguf: a file (default FOLDER/NAME.TYPE.gguf)")
    sp.add_argument("--type", dest="gguf_type", help="gguf: f32 | f16 | bf16 | q8_0 | q5_1 | q5_0 | q4_1 | q4_0 "
                    "(default f32 for float32 checkpoints, else f16)")
    sp.add_argument("--mode", choices=["auto", "patch", "convert"], default="auto",
                    help="gguf: patch the GGUF the model was baked from (auto when there is one) or convert the folder")
    sp.add_argument("--force", action="store_true", help="replace an earlier export of this folder (never any other file)")
    common(sp)
    sp = sub.add_parser("push", help="upload a baked folder (with its model card) to the Hugging Face Hub")
    sp.add_argument("folder")
    sp.add_argument("--repo", required=True, help="user/name on the Hub (created if missing)")
    sp.add_argument("--private", action="store_true")
    sp.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    sp.add_argument("--dry-run", action="store_true", help="print the file list and model card; upload nothing")
    sp.add_argument("--force", action="store_true",
                    help="push even if the report records a failed verification or the files changed since the bake")
    sp.add_argument("--message", help="commit message")
    common(sp, trust=False)
    _learn_parsers(sub.add_parser("learn", help="learn an artifact from data: aura | steer | refusal | sae"), common)
    return p


def _eval_parser(sp, common):
    from .evaluation.suites import SUITES, Options

    d = Options()
    sp.add_argument("target", help="a baked folder, a recipe (baked into a temporary folder; with --hooks, run hooked), "
                    "or any model")
    sp.add_argument("--against", help="the reference model (default: the model the target was made from)")
    sp.add_argument("--suite", default="toxicity,quality",
                    help=f"comma-separated: {', '.join(SUITES)}, consistency (base, hooked and baked on the same "
                         "suites; hooked and baked must agree). Default toxicity,quality")
    sp.add_argument("--sweep", metavar="KEY=V1,V2,...", help="re-bake the recipe for each value of one numeric key "
                    "(a path such as interventions[1].scale, or a name that occurs once, including a field left at its default: strength)")
    sp.add_argument("--max-ppl-increase", type=float, default=0.05,
                    help="a sweep's best point: the most effect at no more than this relative perplexity increase")
    sp.add_argument("--hooks", action="store_true", help="a recipe target: evaluate its hooks instead of a bake")
    sp.add_argument("--data", action="append", default=[], metavar="INPUT=PATH",
                    help="replace a default input: toxicity (texts with 0/1 labels; prompts are their first halves), "
                         "harmful, harmless (instructions), text (neutral text, one per line), open (steering "
                         "prompts, one per line), mc (multiple choice JSONL: question, choices, answer). Repeatable")
    sp.add_argument("--limit", type=int, help="at most this many items per input (a seeded, label-stratified sample)")
    sp.add_argument("--samples", type=int, default=d.samples, help="toxicity, steering: continuations per prompt")
    sp.add_argument("--tokens", type=int, default=d.tokens, help="toxicity, steering: tokens per continuation")
    sp.add_argument("--scorer", default=d.scorer, help="toxicity scorer: profanity-check (offline) or "
                    "hf:<Hub id or folder> (a transformers text-classification model)")
    sp.add_argument("--lengths", default=",".join(map(str, d.lengths)), help="refusal: reply lengths (tokens)")
    sp.add_argument("--judge", help="refusal: also judge replies with a transformers text-classification model, "
                    "hf:<Hub id or folder> (e.g. hf:protectai/distilroberta-base-rejection-v1), beside the markers")
    sp.add_argument("--seed", type=int, default=d.seed)
    sp.add_argument("--out", help="report folder (default: into the baked folder given as target, else out/eval/NAME)")
    sp.add_argument("--force", action="store_true", help="replace a report folder that bake eval wrote earlier")
    common(sp)


def format_eval(rep: dict) -> str:
    from .evaluation.report import sections

    lines = [f"bake eval: {rep['target']} against {rep['against']} ({rep['seconds']} s, seed {rep['seed']})", ""]
    lines += [line for line in sections(rep)]
    lines.append(f"wrote {', '.join(rep['files'])} to {rep['output']}")
    return "\n".join(lines)


def _verify_mode(sp):
    sp.add_argument("--verify", choices=["auto", "full", "streamed", "local"], dest="verify_mode",
                    help="full: hooked vs baked model end to end in memory, then module-local checks; streamed: "
                         "the same end-to-end pass reading each module's weights from disk when it runs (memory: "
                         "about one module; no generation); local: only the module-local checks; auto (the "
                         "recipe's default): full when both models fit in memory, else streamed")


def _learn_parsers(lp, common):
    sub = lp.add_subparsers(dest="what", required=True)
    a = sub.add_parser("aura", help="AURA alphas from labelled texts (AUROC of each unit as a detector)")
    a.add_argument("--model", required=True)
    a.add_argument("--data", required=True, help="CSV/TSV/JSONL/JSON file or a Hub dataset id[:split]")
    a.add_argument("--text-column")
    a.add_argument("--label-column")
    a.add_argument("--layout", choices=["jigsaw", "davidson"], help="named column layouts")
    a.add_argument("--modules", nargs="+", default=["model.layers.*.mlp.up_proj"])
    a.add_argument("--pooling", choices=["max", "mean", "last"], default="max")
    a.add_argument("--max-length", type=int, default=128)
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--score", choices=["auroc", "aucpr", "cohens_d", "point_biserial"], default="auroc")
    a.add_argument("--rule", choices=["aura", "damp", "det0"], default="aura")
    a.add_argument("--top-k", type=int)
    a.add_argument("--top-fraction", type=float)
    a.add_argument("--per-layer", action="store_true", help="top-k per module instead of globally")
    a.add_argument("--value", type=float, default=0.5, help="alpha of damped units (rule damp)")
    a.add_argument("--strength", type=float, default=1.0, help="alpha -> 1 - s (1 - alpha)")
    a.add_argument("--zscore", action="store_true", help="z-score the ranking score across modules")
    a.add_argument("--limit", type=int, help="use a seeded, stratified sample of this many examples")
    a.add_argument("--statedict", help="also export an ml-aura .statedict folder here")
    a.add_argument("--means", action="store_true", help="also store each unit's mean response on the negative "
                   "texts (mu/<module>), which a recipe's `mu:` reads for the mean-shift form")
    a.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="compute dtype of the forward passes: float64 gives the same alphas for any batch size "
                        "and padding; float32 is about 2x faster on CPU, and near-ties may swap ranks")
    a.add_argument("--out", required=True)
    a.add_argument("--force", action="store_true", help="replace an existing --out file")
    _max_memory(a)
    common(a)
    s = sub.add_parser("steer", help="a steering vector from contrasting texts, or imported")
    s.add_argument("--model", required=True)
    s.add_argument("--positive")
    s.add_argument("--negative")
    s.add_argument("--layers", default="all", help="8:16, 3,5 or all")
    s.add_argument("--site", choices=["block_out", "attn_out", "mlp_out"], default="block_out",
                   help="where the recipe's steer adds it (its `site:`): learned on the residual stream there")
    s.add_argument("--method", choices=["mean-diff", "pca"], default="mean-diff")
    s.add_argument("--position", default="last", help="last | mean")
    s.add_argument("--normalize", choices=["unit", "resid"])
    s.add_argument("--chat", action="store_true", help="format texts with the chat template first")
    s.add_argument("--from-gguf", help="import a llama.cpp / repeng control vector (direction.N -> block N)")
    s.add_argument("--from-sae", help="import a SAELens SAE folder's decoder row (with --feature)")
    s.add_argument("--feature", type=int)
    s.add_argument("--from-steering-vectors", help="import a steering-vectors .pt (layer_activations)")
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true", help="replace an existing --out file")
    _max_memory(s)
    common(s)
    r = sub.add_parser("refusal", help="the refusal direction (difference in means, chosen on validation)")
    r.add_argument("--model", required=True)
    r.add_argument("--harmful", required=True)
    r.add_argument("--harmless", required=True)
    r.add_argument("--harmful-val")
    r.add_argument("--harmless-val")
    r.add_argument("--kl-max", type=float, default=0.1)
    r.add_argument("--prune-last", type=float, default=0.2, help="discard candidates in the last 20%% of layers")
    r.add_argument("--layers", help="only these candidate layers (e.g. 4:24)")
    r.add_argument("--limit", type=int, help="sample this many training instructions of each kind")
    r.add_argument("--val-limit", type=int)
    r.add_argument("--projected", action="store_true", help="remove the harmless-mean component")
    r.add_argument("--out", required=True)
    r.add_argument("--force", action="store_true", help="replace an existing --out file")
    _max_memory(r)
    common(r)
    e = sub.add_parser("sae", help="train a TopK SAE on one block's output (saved in SAELens's layout)")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True, nargs="+", help="text files or Hub dataset ids (every token is a sample)")
    e.add_argument("--text-column")
    e.add_argument("--layer", type=int, required=True, help="the block whose output (hook_resid_post) it reads")
    e.add_argument("--d-sae", type=int, default=1024, help="number of features")
    e.add_argument("--k", type=int, default=16, help="active features per token (TopK)")
    e.add_argument("--continue-tokens", type=int, default=0,
                   help="extend each text by this many tokens sampled from the model itself (seeded)")
    e.add_argument("--max-length", type=int, default=128)
    e.add_argument("--steps", type=int, default=3000)
    e.add_argument("--batch-size", type=int, default=512, help="tokens per training step")
    e.add_argument("--lr", type=float, default=1e-3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="a folder (cfg.json + sae_weights.safetensors)")
    e.add_argument("--force", action="store_true", help="replace an existing --out folder that bake wrote")
    _max_memory(e)
    common(e)


def _max_memory(p):
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory the model may take (e.g. 8GB, 512MiB); a larger model is streamed from disk, one "
                        "module at a time, each batch reading it once (default: 60%% of the memory available)")


def format_explain(res: dict) -> str:
    lines = [f"SAE {res['sae']} on {res['hook_name']} ({res['d_sae']} features); vocabulary {res['vocabulary']} words, "
             f"prior {res['prior']}, {res['space']} embeddings, temperature {res['temperature']:g}", "",
             "| feature | MI (nats) | words carrying the most information (p(c|w)) |"
             + (" top activating contexts |" if any("contexts" in r for r in res["features"]) else ""),
             "| --- | --- | --- |" + (" --- |" if any("contexts" in r for r in res["features"]) else "")]
    for r in res["features"]:
        words = ", ".join(f"{w['word']} ({w['p_c_given_w']:.2f})" for w in r["words"])
        row = f"| {r['feature']} | {r['mi']:.2e} | {words} |"
        if "contexts" in r:
            row += " " + " / ".join(c["context"].replace("|", "/").replace("\n", " ") for c in r["contexts"][:3]) + " |"
        lines.append(row)
    return "\n".join(lines)


def format_learn(what: str, res: dict) -> str:
    if what == "aura":
        lines = [f"wrote {res['out']}: alphas for {res['units']} units in {res['modules']} modules "
                 f"({res['examples']} examples, {res['positives']} positive)",
                 f"units with AUROC > 0.5: {res['units_auroc_gt_0.5']}; damped (alpha < 1): {res['units_damped']}",
                 f"responses: {res['sentences_per_s']} sentences/s; peak RSS {res['peak_rss_mb']} MB"
                 + ("; model streamed from disk" if res.get("streamed") else "")
                 + (f"; {res['processes']} processes" if res.get("processes", 1) > 1 else "") + "; "
                 f"total {res['seconds_total']} s", "top 10 units by AUROC:"]
        lines += [f"  {t['unit']:<40} {t['auroc']:.4f}" for t in res["top10"]]
        return "\n".join(lines)
    if what == "steer":
        return (f"wrote {res['out']}: vector[num_layers, hidden] for site {res.get('site', 'block_out')}, nonzero at "
                f"blocks {res['layers']} (norms {res['norms']})")
    if what == "sae":
        return (f"wrote {res['out']}: TopK SAE on {res['hook_name']}, {res['d_sae']} features, k = {res['k']}, "
                f"trained on {res['tokens']} tokens of {res['texts']} texts ({res['steps']} steps, {res['seconds']} s)\n"
                f"held-out fraction of variance unexplained {res['fvu_held_out']:.4f}; dead features "
                f"{res['dead_share']:.1%}")
    lines = [f"{'pos':>4} {'layer':>5} {'refusal':>9} {'KL':>9}  kept"]
    for row in res["candidates"]:
        lines.append(f"{row['position']:>4} {row['layer']:>5} {row['refusal_score']:>9.3f} {row['kl_harmless']:>9.4f}"
                     f"  {'yes' if row['kept'] else 'no'}")
    c = res["chosen"]
    lines.append(f"chosen: layer {c['layer']}, position {c['position']}: refusal score "
                 f"{c['baseline_refusal_score']:.3f} -> {c['refusal_score']:.3f}, KL on harmless {c['kl_harmless']:.4f}")
    lines.append(f"wrote {res['out']} (use {res['out']}#direction in a recipe)")
    return "\n".join(lines)


def _as_json(obj):
    """json.dumps' fallback: the typed report as the JSON object it is stored as."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dispatch(args, progress: bool, out) -> int:
    from . import api

    trust = getattr(args, "trust_remote_code", False)
    if args.cmd == "plan":
        summary = api.plan_summary(api.plan(args.recipe, trust_remote_code=trust))
        print(json.dumps(summary, indent=2) if args.json else format_plan(summary), file=out)
    elif args.cmd == "apply":
        report = api.apply(args.recipe, output=args.output, force=args.force, progress=progress,
                           trust_remote_code=trust, verify_mode=args.verify_mode)
        if args.json:
            print(json.dumps(report, indent=2, default=_as_json), file=out)
        else:
            print(format_verification(report["verification"]), file=out)  # what matters first
            for e in (report.get("exports") or {}).values():
                print(format_export(e["format"], e), file=out)
            if not args.quiet:
                print(format_plan(report, tensors=args.verbose), file=out)
            print(f"wrote {report['output']} in {report['seconds']} s", file=out)
    elif args.cmd == "verify":
        result = api.verify(args.output, progress=progress, trust_remote_code=trust, mode=args.verify_mode)
        print(json.dumps(result, indent=2) if args.json else format_integrity(result["integrity"]) + "\n"
              + format_verification(result["verification"]), file=out)
    elif args.cmd == "export":
        result = api.export(args.folder, args.format, args.out, args.gguf_type, args.mode, progress=progress,
                            force=args.force, trust_remote_code=trust)
        print(json.dumps(result, indent=2) if args.json else format_export(args.format, result), file=out)
    elif args.cmd == "push":
        from .publish import hub

        res = hub.push(args.folder, args.repo, private=args.private, revision=args.revision, dry_run=args.dry_run,
                       force=args.force, message=args.message)
        print(json.dumps(res, indent=2) if args.json else format_push(res), file=out)
    elif args.cmd == "learn":
        from .learn import learners
        from .files import staging

        opts = {k: v for k, v in vars(args).items() if k not in ("cmd", "what", "json", "quiet", "force", "progress")}
        from .learn.collect import is_main_process

        if not is_main_process():  # one of several `accelerate launch` processes: it shares the work, the first writes
            from .files.tempdirs import temp_dir

            with temp_dir("learn") as d:
                extra = {"out": str(Path(d) / "a"), **({"statedict": None} if "statedict" in opts else {})}
                getattr(learners, f"learn_{args.what}")(progress=False, **{**opts, **extra})
            return 0
        inputs = [Path(x) for k, v in opts.items() if k in ("model", *learners.PATH_OPTS)
                  for x in (v if isinstance(v, list) else [v]) if isinstance(x, str) and Path(x).exists()]
        # the artifact is written to a temp sibling and renamed; an existing one is replaced only with --force,
        # and only when `bake learn` wrote it; never an input, nor anything inside an input folder
        sae = args.what == "sae"  # a folder (SAELens layout)
        with contextlib.ExitStack() as stack:
            if opts.get("statedict"):  # ml-aura's folder of .statedict files: staged like every output
                opts["statedict"] = str(stack.enter_context(staging.staged(
                    opts["statedict"], folder=True, force=args.force, protect=inputs, what="--statedict",
                    refuse=staging.own_output("bake learn aura --statedict"))))
            tmp = stack.enter_context(staging.staged(opts["out"], folder=sae, force=args.force, protect=inputs,
                                                     what="--out", refuse=learners.own_artifact(args.what)))
            final, opts["out"] = opts["out"], str(tmp)
            res = getattr(learners, f"learn_{args.what}")(progress=progress, **opts)
            res["out"] = str(staging.resolve_path(final))
            if opts.get("statedict"):
                staging.write_marker(Path(opts["statedict"]), "bake learn aura --statedict")
        print(json.dumps(res, indent=2, default=str) if args.json else format_learn(args.what, res), file=out)
    elif args.cmd == "generate":
        from .evaluation.generate import generate, subject

        if args.max_new_tokens < 1 or not 0 < args.temperature or not 0 < args.top_p <= 1:
            raise BakeError("bake generate: --max-new-tokens must be >= 1, --temperature > 0 and 0 < --top-p <= 1")
        model, tok, hooks, what = subject(args.source, args.hooks, trust_remote_code=trust, progress=progress)
        res = generate(model, tok, args.prompts, hooks=hooks, max_new_tokens=args.max_new_tokens, sample=args.sample,
                       temperature=args.temperature, top_p=args.top_p, seed=args.seed, chat=args.chat)
        decoding = f"sampled (seed {args.seed}, T={args.temperature:g}, top-p {args.top_p:g})" if args.sample else "greedy"
        if args.json:
            print(json.dumps({"source": what, "decoding": decoding, "replies": res}, indent=2), file=out)
        else:
            print(f"{what}; {decoding}, at most {args.max_new_tokens} new tokens", file=out)
            for r in res:
                print(f"\n> {r['prompt']}\n{r['reply']}", file=out)
    elif args.cmd == "eval":
        data = {}
        for item in args.data:
            key, sep, path = item.partition("=")
            if not sep or not path:
                raise BakeError(f"--data {item!r}: expected INPUT=PATH (e.g. toxicity=test.csv)")
            data[key] = path
        try:
            lengths = tuple(sorted({int(n) for n in args.lengths.split(",") if n.strip()}))
        except ValueError:
            lengths = ()
        if not lengths or min(lengths) < 1 or args.samples < 1 or args.tokens < 1 or (args.limit or 1) < 1:
            raise BakeError("bake eval: --lengths (positive integers), --samples, --tokens and --limit must be >= 1")
        options = {"data": data, "seed": args.seed, "limit": args.limit, "samples": args.samples,
                   "tokens": args.tokens, "scorer": args.scorer, "lengths": lengths, "judge": args.judge}
        rep = api.evaluate(args.target, args.against, args.suite, out=args.out, force=args.force, sweep=args.sweep,
                           hooks=args.hooks, max_ppl_increase=args.max_ppl_increase, options=options,
                           progress=progress, trust_remote_code=trust)
        print(json.dumps(rep, indent=2, default=float) if args.json else format_eval(rep), file=out)
    elif args.cmd == "explain":
        try:
            feats = [int(f) for f in args.features.split(",") if f.strip()] if args.features else None
        except ValueError:
            raise BakeError(f"--features {args.features}: expected comma-separated integers") from None
        if args.top < 1 or args.max_words < 1 or args.temperature <= 0 or args.contexts < 0:
            raise BakeError("bake explain: --top and --max-words must be >= 1, --temperature > 0, --contexts >= 0")
        if args.out:  # refused before any work
            from .files import staging

            inputs = [Path(x) for x in (args.sae.removeprefix("hf:"), args.model, args.words, *(args.data or []))
                      if x and Path(x).exists()]
            policy = dict(folder=False, force=args.force, protect=inputs, what="--out", refuse=_own_explanation)
            staging.check_target(staging.resolve_path(args.out, "--out"), **policy)
        res = api.explain(args.sae, args.model, feats, args.top, args.data, args.words, args.max_words,
                          args.temperature, args.contexts, space=args.space, progress=progress, trust_remote_code=trust)
        if args.out:
            with staging.staged(args.out, **policy) as tmp:
                tmp.write_text(json.dumps({"written_by": "bake explain", **res}, indent=2) + "\n")
        print(json.dumps(res, indent=2) if args.json else format_explain(res), file=out)
    elif args.cmd == "arch":
        if args.table:
            print(exactness_table(progress=progress), file=out)
        elif not args.model:
            raise BakeError("bake arch: give a model (folder, .gguf, Hub id or builtin:NAME) or --table")
        else:
            info = api.arch_info(args.model)
            print(json.dumps(info, indent=2) if args.json else format_arch(info), file=out)
    return 0


def _own_explanation(path: Path) -> str | None:
    """None when `path` is a JSON file that `bake explain` wrote (the only file its --force replaces)."""
    try:
        ok = json.loads(path.read_text()).get("written_by") == "bake explain"
    except (OSError, ValueError, AttributeError):
        ok = False
    return None if ok else "it is not an explanation it wrote"


_own_explanation.command = "bake explain"


def format_integrity(c: dict) -> str:
    from .write.integrity import describe

    return f"integrity: {c['status'].upper()}  ({describe(c)})"


def main(argv=None) -> int:
    """The `bake` command. Run as the program (argv None), the signal handlers stay installed until
    the process exits, so no signal can end it with a traceback."""
    previous = interrupt.install()  # SIGTERM/SIGINT/SIGHUP unwind through the staging, which removes temp files
    streams = redact.install()  # no token or URL password reaches the terminal, tracebacks included
    out = sys.stdout
    args = None
    try:
        args = _parser().parse_args(argv)
        from .files import tempdirs

        tempdirs.sweep()  # what a killed run left in bake's temp root
        # progress bars only on a terminal (a log or CI sees no redraws), unless asked for
        return _dispatch(args, not (args.quiet or args.json) and (args.progress or sys.stderr.isatty()), out)
    except BaseException as e:
        if interrupt.received is not None:  # whatever the signal turned into on its way out
            print(f"bake: stopped by {interrupt.name(interrupt.received)}; unfinished output was removed",
                  file=sys.stderr)
            raise SystemExit(128 + interrupt.received) from None
        if isinstance(e, SystemExit):  # argparse's usage errors (exit 2) and --help/--version (0)
            raise
        if isinstance(e, VerificationFailed):
            report = e.report or {}
            if args.json:
                print(json.dumps(report, indent=2, default=_as_json), file=out)
            else:
                if "integrity" in report and report["integrity"]["status"] == "changed":
                    print(format_integrity(report["integrity"]), file=out)
                if "verification" in report:
                    print(format_verification(report["verification"]), file=out)
                for entry in (report.get("exports") or {}).values():
                    print(format_export(entry["format"], entry), file=out)
                if "export" in report:
                    print(format_export(report["export"]["format"], report["export"]), file=out)
            print(f"bake: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, BakeError):
            print(f"bake: error: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, KeyboardInterrupt):
            print("bake: interrupted; unfinished output was removed", file=sys.stderr)
            return 130
        if os.environ.get("BAKE_DEBUG"):
            raise
        print(f"bake: internal error: {type(e).__name__}: {first_line(e, 500)} (a bug in bake, not in your input: "
              "please report it; BAKE_DEBUG=1 shows the traceback). Unfinished output was removed.", file=sys.stderr)
        return 3
    finally:
        if argv is not None:
            interrupt.uninstall(previous)
            redact.uninstall(streams)
        else:
            sys.stdout.flush()
            sys.stderr.flush()
