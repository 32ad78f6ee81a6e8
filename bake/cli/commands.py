"""The commands, one `Command` each: arguments, the API call, the rendering (bake.cli.base)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from ..errors import BakeError
from .base import Command, register
from .render import _fmt, format_integrity, format_plan

# the order `bake --help` lists them in: the pipeline's
__all__ = ["Plan", "Apply", "Verify", "Export", "Push", "Generate", "Eval", "Tune", "Explain", "Arch", "Learn"]


def data_inputs(items: list[str]) -> dict[str, str]:
    """`--data INPUT=PATH` (repeated) as {input: path}."""
    data = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise BakeError(f"--data {item!r}: expected INPUT=PATH (e.g. harmful=harmful_test.json)")
        data[key] = path
    return data


def verify_mode(sp) -> None:
    sp.add_argument("--verify", choices=["auto", "full", "streamed", "local"], dest="verify_mode",
                    help="full: hooked vs baked model end to end in memory (logits and greedy tokens), then "
                         "module-local checks; streamed: the same end-to-end pass reading each module's weights "
                         "from disk when it runs (memory: about one module; no generation); local: only the "
                         "module-local checks (seconds; no end-to-end logits); auto (the recipe's default): full "
                         "when both models fit in memory, else streamed")


@register
class Plan(Command):
    name = "plan"
    help = "show what a recipe would change, tensor by tensor; writes nothing"
    examples = ("bake plan recipes/smollm2-demo.yaml", "bake plan recipe.yaml --json")

    def arguments(self, sp):
        sp.add_argument("recipe", help="a recipe.yaml")

    def run(self, args, progress):
        from .. import api

        return api.plan_summary(api.plan(args.recipe, trust_remote_code=args.trust_remote_code))

    def render(self, result, args):
        return format_plan(result)


@register
class Apply(Command):
    name = "apply"
    device = True
    help = "bake a recipe into a checkpoint, verify it against the hooks, write it (and its exports)"
    examples = ("bake apply recipes/smollm2-demo.yaml",
                "bake apply recipe.yaml --out out/mine --force --verify local",
                "bake apply recipe.yaml --push-to-hub you/mine-baked")

    def arguments(self, sp):
        sp.add_argument("recipe", help="a recipe.yaml")
        sp.add_argument("--out", "-o", help="the output folder (default: the recipe's `output`, else out/baked)")
        sp.add_argument("--force", action="store_true",
                        help="replace an output folder that bake apply wrote earlier (never any other folder)")
        sp.add_argument("--verbose", "-v", action="store_true", help="also print the per-tensor edit table")
        sp.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="after a passing bake, upload the folder to this Hub repo (as `bake push`)")
        sp.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
        verify_mode(sp)

    def run(self, args, progress):
        from .. import api

        report = api.apply(args.recipe, output=args.out, force=args.force, progress=progress,
                           trust_remote_code=args.trust_remote_code, verify_mode=args.verify_mode)
        if not args.push_to_hub:
            return report
        from ..publish import hub

        pushed = hub.push(report["output"], args.push_to_hub, private=args.private)
        report["pushed"] = {k: pushed[k] for k in ("repo", "revision", "commit_url")}  # (printed, not in the file)
        return report

    def render(self, report, args):
        lines = [report["verification"].terminal()]  # what matters first
        lines += [e.terminal() for e in (report.get("exports") or {}).values()]
        if not args.quiet:
            lines.append(format_plan(report, tensors=args.verbose))
        lines.append(f"wrote {report['output']} in {report['seconds']} s")
        if report.get("pushed"):
            lines.append(f"pushed to {report['pushed']['repo']}@{report['pushed']['revision']}: "
                         f"{report['pushed']['commit_url']}")
        return "\n".join(lines)


@register
class Verify(Command):
    name = "verify"
    device = True
    help = "re-check a baked folder: its files against their sha256, then the hooked source against it"
    examples = ("bake verify out/smollm2-demo", "bake verify out/smollm2-demo --verify local")

    def arguments(self, sp):
        sp.add_argument("folder", help="a folder written by `bake apply` (or downloaded from the Hub)")
        sp.add_argument("--model", help="the source model, where the folder's recipe names a local one that is "
                        "elsewhere here (its files must match the sha256 the recipe records)")
        verify_mode(sp)

    def run(self, args, progress):
        from .. import api

        return api.verify(args.folder, progress=progress, trust_remote_code=args.trust_remote_code,
                          mode=args.verify_mode, model=args.model)

    def render(self, result, args):
        return format_integrity(result["integrity"]) + "\n" + result["verification"].terminal()


@register
class Export(Command):
    """`bake export FORMAT`: one sub-command per registered exporter, with the exporter's own options."""

    name = "export"
    help = "write a copy of a baked folder in another format (ONNX, GGUF) and verify it in its runtime"
    examples = ("bake export onnx out/smollm2-demo", "bake export gguf out/smollm2-demo --type q8_0",
                "bake export gguf out/smollm2-demo --out smollm2.gguf --force")
    nested = True

    def arguments(self, sp):
        from ..exporters.base import EXPORTERS, formats
        from .base import Formatter, common, epilog

        sub = sp.add_subparsers(dest="format", required=True, metavar="{" + ",".join(formats()) + "}")
        for fmt in formats():
            ex = EXPORTERS[fmt]
            fp = sub.add_parser(fmt, help=ex.help, description=ex.help, formatter_class=Formatter,
                                epilog=epilog([e for e in self.examples if e.startswith(f"bake export {fmt} ")]))
            fp.add_argument("folder", help="a folder written by `bake apply`")
            fp.add_argument("--out", help=f"the {'folder' if ex.folder else 'file'} to write (default: inside FOLDER)")
            ex.arguments(fp)
            fp.add_argument("--force", action="store_true",
                            help="replace an earlier export of this folder (never any other file)")
            common(fp)

    def run(self, args, progress):
        from .. import api
        from ..exporters.base import get

        return api.export(args.folder, args.format, args.out, progress=progress, force=args.force,
                          trust_remote_code=args.trust_remote_code, **get(args.format).given(args))

    def render(self, result, args):
        return result.terminal()


@register
class Push(Command):
    name = "push"
    help = "upload a baked folder (with its model card) to the Hugging Face Hub"
    examples = ("bake push out/smollm2-demo --repo-id you/smollm2-demo --dry-run",
                "bake push out/smollm2-demo --repo-id you/smollm2-demo --private --revision v1")
    trust = False  # reads the folder's files only

    def arguments(self, sp):
        sp.add_argument("folder", help="a folder written by `bake apply`")
        sp.add_argument("--repo-id", required=True, help="user/name on the Hub (created if missing)")
        sp.add_argument("--private", action="store_true", help="create the repo private")
        sp.add_argument("--revision", help="branch to commit to (created if missing; default main)")
        sp.add_argument("--dry-run", action="store_true", help="print the file list and model card; upload nothing")
        sp.add_argument("--force", action="store_true",
                        help="push even if the report records a failed verification or the files changed since "
                             "the bake")
        sp.add_argument("--message", help="commit message (default: what was baked)")

    def run(self, args, progress):
        from ..publish import hub

        return hub.push(args.folder, args.repo_id, private=args.private, revision=args.revision,
                        dry_run=args.dry_run, force=args.force, message=args.message)

    def render(self, r, args):
        head = (f"dry run: would push to {r['repo']}@{r['revision']}" if r["dry_run"]
                else f"pushed to {r['repo']}@{r['revision']}: {r['commit_url']}")
        lines = [head + (" (private)" if r["private"] else "")
                 + (" [--force: verification failed]" if r["forced"] else ""),
                 f"commit message: {r['message']}", f"files ({len(r['files'])}):"]
        lines += [f"  {f['path']:<48} {f['bytes']:>14,} bytes" for f in r["files"]]
        if r["dry_run"]:
            lines += ["model card (README.md):", r["card"]]
        return "\n".join(lines)


@register
class Generate(Command):
    name = "generate"
    device = True
    help = "generate text from a model, a baked folder, or a recipe's hooks (try before baking)"
    examples = ('bake generate recipes/smollm2-demo.yaml "Tell me about your day."',
                'bake generate recipes/smollm2-demo.yaml "Tell me about your day." --base',
                'bake generate out/smollm2-demo "Hi" --sample --seed 1 --max-new-tokens 32')

    def arguments(self, sp):
        sp.add_argument("source", help="a recipe (its model with its hooks), a baked folder, a folder, .gguf, "
                        "Hub id or builtin:NAME")
        sp.add_argument("prompts", nargs="+",
                        help="one or more prompts (each through the chat template when there is one)")
        mode = sp.add_mutually_exclusive_group()
        mode.add_argument("--hooks", action="store_true", default=None,
                          help="a recipe's model with the recipe's hooks attached (the default for a recipe)")
        mode.add_argument("--base", dest="hooks", action="store_false", help="a recipe's model without its hooks")
        sp.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt at most")
        sp.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (seeded per prompt)")
        sp.add_argument("--temperature", type=float, default=1.0, help="with --sample")
        sp.add_argument("--top-p", type=float, default=1.0, help="with --sample: nucleus sampling's mass")
        sp.add_argument("--seed", type=int, default=0, help="with --sample: prompt i is sampled with seed + i")
        sp.add_argument("--no-chat", dest="chat", action="store_false", help="feed prompts as plain text")

    def run(self, args, progress):
        from ..evaluation.generate import generate, subject

        if args.max_new_tokens < 1 or not 0 < args.temperature or not 0 < args.top_p <= 1:
            raise BakeError("bake generate: --max-new-tokens must be >= 1, --temperature > 0 and 0 < --top-p <= 1")
        model, tok, hooks, what = subject(args.source, args.hooks, trust_remote_code=args.trust_remote_code,
                                          progress=progress)
        res = generate(model, tok, args.prompts, hooks=hooks, max_new_tokens=args.max_new_tokens, sample=args.sample,
                       temperature=args.temperature, top_p=args.top_p, seed=args.seed, chat=args.chat)
        decoding = (f"sampled (seed {args.seed}, T={args.temperature:g}, top-p {args.top_p:g})" if args.sample
                    else "greedy")
        return {"source": what, "decoding": decoding, "replies": res}

    def render(self, r, args):
        lines = [f"{r['source']}; {r['decoding']}, at most {args.max_new_tokens} new tokens"]
        lines += [f"\n> {x['prompt']}\n{x['reply']}" for x in r["replies"]]
        return "\n".join(lines)


@register
class Eval(Command):
    name = "eval"
    device = True
    budget = True
    help = ("measure what a bake does to behaviour and quality (toxicity, steering, refusal, perplexity, KL) "
            "against the base model; --sweep re-bakes a recipe per value")
    examples = ("bake eval out/smollm2-demo --suite toxicity,steering,refusal,quality --limit 16",
                "bake eval recipes/smollm2-demo.yaml --hooks --suite quality",
                "bake eval recipes/smollm2-detox.yaml --sweep strength=0.25,0.5,1 --suite toxicity,quality")

    def arguments(self, sp):
        from ..evaluation.suites import SUITES, Options

        d = Options()
        sp.add_argument("target", help="a baked folder, a recipe (baked into a temporary folder; with --hooks, run "
                        "hooked), or any model")
        sp.add_argument("--against", help="the reference model (default: the model the target was made from)")
        sp.add_argument("--suite", default="toxicity,quality",
                        help=f"comma-separated: {', '.join(SUITES)}, consistency (base, hooked and baked on the same "
                             "suites; hooked and baked must agree)")
        sp.add_argument("--sweep", metavar="KEY=V1,V2,...", help="re-bake the recipe for each value of one numeric "
                        "key (a path such as interventions[1].scale, or a name that occurs once, including a field "
                        "left at its default: strength)")
        sp.add_argument("--max-ppl-increase", type=float, default=0.05,
                        help="a sweep's best point: the most effect at no more than this relative perplexity increase")
        sp.add_argument("--hooks", action="store_true", help="a recipe target: evaluate its hooks instead of a bake")
        sp.add_argument("--data", action="append", default=[], metavar="INPUT=PATH",
                        help="replace a default input: toxicity (texts with 0/1 labels; prompts are their first "
                             "halves), harmful, harmless (instructions), text (neutral text, one per line), open "
                             "(steering prompts, one per line), mc (multiple choice JSONL: question, choices, "
                             "answer). Repeatable")
        sp.add_argument("--limit", type=int,
                        help="at most this many items per input (a seeded, label-stratified sample)")
        sp.add_argument("--samples", type=int, default=d.samples, help="toxicity, steering: continuations per prompt")
        sp.add_argument("--tokens", type=int, default=d.tokens, help="toxicity, steering: tokens per continuation")
        sp.add_argument("--scorer", default=d.scorer, help="toxicity scorer: profanity-check (offline) or "
                        "hf:<Hub id or folder> (a transformers text-classification model)")
        sp.add_argument("--lengths", default=",".join(map(str, d.lengths)), help="refusal: reply lengths (tokens)")
        sp.add_argument("--judge", help="refusal: also judge replies with a transformers text-classification "
                        "model, hf:<Hub id or folder> (e.g. hf:protectai/distilroberta-base-rejection-v1)")
        sp.add_argument("--seed", type=int, default=d.seed, help="the seed of samples and subsets")
        sp.add_argument("--out", help="report folder (default: into the baked folder given as target, else "
                        "out/eval/NAME)")
        sp.add_argument("--force", action="store_true", help="replace a report folder that bake eval wrote earlier")

    def run(self, args, progress):
        from .. import api

        data = data_inputs(args.data)
        try:
            lengths = tuple(sorted({int(n) for n in args.lengths.split(",") if n.strip()}))
        except ValueError:
            lengths = ()
        if not lengths or min(lengths) < 1 or args.samples < 1 or args.tokens < 1 or (args.limit or 1) < 1:
            raise BakeError("bake eval: --lengths (positive integers), --samples, --tokens and --limit must be >= 1")
        options = {"data": data, "seed": args.seed, "limit": args.limit, "samples": args.samples,
                   "tokens": args.tokens, "scorer": args.scorer, "lengths": lengths, "judge": args.judge}
        return api.evaluate(args.target, args.against, args.suite, out=args.out, force=args.force, sweep=args.sweep,
                            hooks=args.hooks, max_ppl_increase=args.max_ppl_increase, options=options,
                            progress=progress, trust_remote_code=args.trust_remote_code)

    def render(self, rep, args):
        return rep.terminal()


def _own_explanation(path: Path) -> str | None:
    """None when `path` is a JSON file that `bake explain` wrote (the only file its --force replaces)."""
    try:
        ok = json.loads(path.read_text()).get("written_by") == "bake explain"
    except (OSError, ValueError, AttributeError):
        ok = False
    return None if ok else "it is not an explanation it wrote"


_own_explanation.command = "bake explain"


@register
class Tune(Command):
    name = "tune"
    device = True
    budget = True
    help = ("search a recipe's parameters (its `tune:` block) with Optuna on a tuning split; show the Pareto "
            "front; --pick re-measures a trial on the held-out split and writes the recipe with its figures")
    examples = ("bake tune recipes/refuser-abliterate.yaml --trials 60",
                "bake tune recipes/refuser-abliterate.yaml --show",
                "bake tune recipes/refuser-abliterate.yaml --pick 41 --out tuned.yaml")

    def arguments(self, sp):
        sp.add_argument("recipe", help="a recipe with a `tune:` block (docs/tuning.md)")
        sp.add_argument("--trials", type=int, help="finished trials the study aims at, counting those it holds "
                        "already and those of other processes on the same storage (default: the block's `trials`)")
        sp.add_argument("--show", action="store_true", help="print the front of the study as it is (finished or "
                        "interrupted); runs no trial")
        sp.add_argument("--pick", type=int, metavar="TRIAL", help="re-measure this trial on the held-out split and "
                        "write the resolved recipe (its values set, both figures in provenance.tuned)")
        sp.add_argument("--out", help="--pick: the resolved recipe's path (default: STUDY_DIR/trial-N.yaml)")
        sp.add_argument("--study-dir", help="the study's folder: splits, report, plot, and the default storage "
                        "(default: out/tune/NAME)")
        sp.add_argument("--storage", metavar="URL", help="an Optuna storage URL (e.g. sqlite:///study.db, "
                        "postgresql://...) that several processes or machines work on at once (default: "
                        "sqlite:///STUDY_DIR/study.db)")
        sp.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the recipe's name)")
        sp.add_argument("--data", action="append", default=[], metavar="INPUT=PATH",
                        help="replace a data input of the tune block (harmful, harmless, toxicity, text, mc, open); "
                             "it is split into a tuning and a held-out part. Repeatable")
        sp.add_argument("--force", action="store_true", help="--pick: replace a recipe that bake tune wrote earlier")

    def run(self, args, progress):
        from .. import api

        if args.trials is not None and args.trials < 1:
            raise BakeError("bake tune: --trials must be >= 1")
        data = data_inputs(args.data)
        return api.tune(args.recipe, args.trials, args.show, args.pick, args.out, args.study_dir, args.storage,
                        args.study, data, args.force, progress, args.trust_remote_code)

    def render(self, rep, args):
        return rep.terminal()


@register
class Explain(Command):
    name = "explain"
    device = True
    help = ("explain SAE features by the words that carry the most mutual information about them, and by their "
            "top activating contexts")
    examples = ("bake explain path/to/sae --model builtin:smollm2-135m-instruct --top 5",
                "bake explain path/to/sae --model builtin:smollm2-135m-instruct --features 3,17 --data corpus.txt")

    def arguments(self, sp):
        sp.add_argument("sae", help="a SAELens folder or hf:owner/repo[/subfolder]")
        sp.add_argument("--model", required=True, help="the model the SAE reads (folder, .gguf, Hub id or "
                        "builtin:NAME)")
        sp.add_argument("--features", help="comma-separated feature indices (default: the --top most informative)")
        sp.add_argument("--top", type=int, default=8, help="how many features, without --features")
        sp.add_argument("--data", nargs="+", help="a corpus (text files or Hub datasets): the word prior and the "
                        "contexts")
        sp.add_argument("--words", help="a word list file (default: the tokenizer's single-token words)")
        sp.add_argument("--max-words", type=int, default=12, help="at most this many words per explanation")
        sp.add_argument("--temperature", type=float, default=0.05,
                        help="p(c|w) = softmax(cos(e_w, W_c) / temperature)")
        sp.add_argument("--space", choices=["output", "input"], default="output",
                        help="output: output embeddings and W_dec times the final norm's gain (what the feature "
                             "promotes); input: input embeddings and W_dec as it is")
        sp.add_argument("--contexts", type=int, default=5, help="top activating contexts per feature (with --data)")
        sp.add_argument("--out", help="also write the explanation as JSON here")
        sp.add_argument("--force", action="store_true", help="replace an --out file that bake explain wrote earlier")

    def run(self, args, progress):
        from .. import api
        from ..files import staging

        try:
            feats = [int(f) for f in args.features.split(",") if f.strip()] if args.features else None
        except ValueError:
            raise BakeError(f"--features {args.features}: expected comma-separated integers") from None
        if args.top < 1 or args.max_words < 1 or args.temperature <= 0 or args.contexts < 0:
            raise BakeError("bake explain: --top and --max-words must be >= 1, --temperature > 0, --contexts >= 0")
        policy = None
        if args.out:  # refused before any work
            inputs = [Path(x) for x in (args.sae.removeprefix("hf:"), args.model, args.words, *(args.data or []))
                      if x and Path(x).exists()]
            policy = dict(folder=False, force=args.force, protect=inputs, what="--out", refuse=_own_explanation)
            staging.check_target(staging.resolve_path(args.out, "--out"), **policy)
        res = api.explain(args.sae, args.model, feats, args.top, args.data, args.words, args.max_words,
                          args.temperature, args.contexts, space=args.space, progress=progress,
                          trust_remote_code=args.trust_remote_code)
        if policy:
            with staging.staged(args.out, **policy) as tmp:
                tmp.write_text(json.dumps({"written_by": "bake explain", **res}, indent=2) + "\n")
        return res

    def render(self, res, args):
        ctx = any("contexts" in r for r in res["features"])
        lines = [f"SAE {res['sae']} on {res['hook_name']} ({res['d_sae']} features); vocabulary {res['vocabulary']} "
                 f"words, prior {res['prior']}, {res['space']} embeddings, temperature {res['temperature']:g}", "",
                 "| feature | MI (nats) | words carrying the most information (p(c|w)) |"
                 + (" top activating contexts |" if ctx else ""), "| --- | --- | --- |" + (" --- |" if ctx else "")]
        for r in res["features"]:
            words = ", ".join(f"{w['word']} ({w['p_c_given_w']:.2f})" for w in r["words"])
            row = f"| {r['feature']} | {r['mi']:.2e} | {words} |"
            if "contexts" in r:
                row += " " + " / ".join(c["context"].replace("|", "/").replace("\n", " ")
                                        for c in r["contexts"][:3]) + " |"
            lines.append(row)
        return "\n".join(lines)


@register
class Arch(Command):
    name = "arch"
    help = "what bake derives for a model: residual writers, steering slots, exactness per kind, serving"
    examples = ("bake arch builtin:smollm2-135m-instruct", "bake arch --table")
    trust = False  # reads config.json and safetensors headers only: no model code runs

    def arguments(self, sp):
        sp.add_argument("model", nargs="?", help="local folder, .gguf, Hub id or builtin:NAME")
        sp.add_argument("--table", action="store_true",
                        help="probe every causal-LM type of the installed transformers and print its status per kind")

    def run(self, args, progress):
        from .. import api

        if args.table:
            return {"table": exactness_table(progress=progress)}
        if not args.model:
            raise BakeError("bake arch: give a model (folder, .gguf, Hub id or builtin:NAME) or --table")
        return api.arch_info(args.model)

    def render(self, info, args):
        if "table" in info:
            return info["table"]
        lines = [f"{k:<16} {v}" for k, v in info.items() if not isinstance(v, dict)]
        lines.append("residual writers (block N):")
        for mod, w in info["writers (block 0 shown as N)"].items():
            lines.append(f"  {mod:<40} {', '.join(w['tensors']) or '-'}"
                         + (f"   (post-norm of {', '.join(w['post_norm_of'])})" if w.get("post_norm_of") else ""))
        lines.append("exactness:")
        lines += [f"  {k:<7} {v}" for k, v in info["exactness"].items()]
        lines.append("serving (as it is; a bake's card says it for the baked checkpoint):")
        lines += [f"  {k:<13} {v}" for k, v in info["serving (as it is)"].items()]
        return "\n".join(lines)


def exactness_table(progress: bool = True) -> str:
    """Markdown table: every causal-LM type of the installed transformers, its status per kind (the
    adapter of a tiny checkpoint of it) and per export. `eval/coverage.py` prints the same table with
    each status proven by baking; docs/families.md carries that one."""
    from tqdm.auto import tqdm

    from ..evaluation import coverage

    rows = []
    for mt in tqdm(coverage.causal_lm_types(), desc="probing model types", disable=not progress):
        row = coverage.status(mt)
        rows.append({"model_type": mt, "decoder": row.decoder, "why": row.why, "cells": row.status})
    return coverage.table(rows)


@register
class Learn(Command):
    """`bake learn WHAT`: one sub-command per learner, its options read off the learner's signature
    (bake.learn.learners: each option declared once, for the API, this command and recipes)."""

    name = "learn"
    help = "learn an artifact from data: aura | steer | refusal | sae"
    nested = True  # the common options go on each learner's sub-command
    examples = ("bake learn aura --model builtin:smollm2-135m-instruct --data recipes/data/toxicity-sample.jsonl "
                "--out alphas.safetensors",
                "bake learn steer --model builtin:smollm2-135m-instruct --positive recipes/data/joy.txt "
                "--negative recipes/data/gloom.txt --layers 12 --out joy.safetensors",
                "bake learn refusal --model builtin:smollm2-135m-instruct --harmful recipes/data/harmful.json "
                "--harmless recipes/data/harmless.json --layers 16:19 --out refusal.safetensors",
                "bake learn sae --model builtin:smollm2-135m-instruct --data recipes/data/sae-corpus.txt --layer 6 "
                "--d-sae 512 --k 8 --out sae-l6",
                "bake learn lineas --model builtin:smollm2-135m-instruct --data recipes/data/toxicity-sample.jsonl "
                "--steps 200 --out lineas.safetensors")

    def arguments(self, sp):
        from ..learn import learners
        from .base import Formatter, common, epilog

        sub = sp.add_subparsers(dest="what", required=True, metavar="{" + ",".join(learners.LEARNERS) + "}")
        for what, fname in learners.LEARNERS.items():
            fn = getattr(learners, fname)
            doc = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
            lp = sub.add_parser(what, help=doc, description=doc, formatter_class=Formatter,
                                epilog=epilog([e for e in self.examples if e.startswith(f"bake learn {what} ")]))
            for o in learners.options(fn):
                flag = "--" + o.name.replace("_", "-")
                kw = {"help": o.opt.help.replace("%", "%%")}
                if o.type is bool:
                    kw["action"] = "store_true"
                else:
                    kw["type"] = o.type
                    if o.many:
                        kw["nargs"] = "+"
                    if o.opt.choices:
                        kw["choices"] = list(o.opt.choices)
                    if o.default is inspect.Parameter.empty:
                        kw["required"] = True
                    else:
                        kw["default"] = list(o.default) if o.many and o.default is not None else o.default
                lp.add_argument(flag, **kw)
            lp.add_argument("--force", action="store_true",
                            help="replace an existing --out that bake learn wrote (never any other file)")
            common(lp, device=True)

    def run(self, args, progress):
        from .. import api
        from ..learn import learners

        names = {o.name for o in learners.options(getattr(learners, learners.LEARNERS[args.what]))}
        opts = {k: v for k, v in vars(args).items() if k in names}
        return api.learn(args.what, progress=progress, trust_remote_code=args.trust_remote_code, force=args.force,
                         **opts)

    def render(self, res, args):
        if args.what == "aura":
            lines = [f"wrote {res['out']}: alphas for {res['units']} units in {res['modules']} modules "
                     f"({res['examples']} examples, {res['positives']} positive)",
                     f"units with AUROC > 0.5: {res['units_auroc_gt_0.5']}; damped (alpha < 1): {res['units_damped']}",
                     f"responses: {res['sentences_per_s']} sentences/s; peak RSS {res['peak_rss_mb']} MB"
                     + ("; model streamed from disk" if res.get("streamed") else "")
                     + (f"; {res['processes']} processes" if res.get("processes", 1) > 1 else "") + "; "
                     f"total {res['seconds_total']} s", "top 10 units by AUROC:"]
            lines += [f"  {t['unit']:<40} {t['auroc']:.4f}" for t in res["top10"]]
            return "\n".join(lines)
        if args.what == "steer":
            return (f"wrote {res['out']}: vector[num_layers, hidden] for site {res.get('site', 'block_out')}, "
                    f"nonzero at blocks {res['layers']} (norms {res['norms']})")
        if args.what == "lineas":
            return (f"wrote {res['out']}: LinEAS maps (scale, shift) on the input of {res['modules']} modules, fitted "
                    f"end to end on {res['source']} source and {res['target']} target texts in {res['steps']} steps\n"
                    f"sliced-Wasserstein loss {res['loss_first']:.4g} -> {res['loss_last']:.4g} (mean of the last 10 "
                    f"steps {res['loss_last10_mean']:.4g}); support {res['support']} of {res['units']} units\n"
                    f"{res['seconds_per_step']} s per step (one forward and one backward pass); peak RSS "
                    f"{res['peak_rss_mb']} MB; total {res['seconds_total']} s")
        if args.what == "sae":
            return (f"wrote {res['out']}: TopK SAE on {res['hook_name']}, {res['d_sae']} features, k = {res['k']}, "
                    f"trained on {res['tokens']} tokens of {res['texts']} texts ({res['steps']} steps, "
                    f"{res['seconds']} s)\nheld-out fraction of variance unexplained {res['fvu_held_out']:.4f}; "
                    f"dead features {res['dead_share']:.1%}")
        lines = [f"{'pos':>4} {'layer':>5} {'refusal':>9} {'KL':>9}  kept"]
        for row in res["candidates"]:
            lines.append(f"{row['position']:>4} {row['layer']:>5} {row['refusal_score']:>9.3f} "
                         f"{row['kl_harmless']:>9.4f}  {'yes' if row['kept'] else 'no'}")
        c = res["chosen"]
        lines.append(f"chosen: layer {c['layer']}, position {c['position']}: refusal score "
                     f"{c['baseline_refusal_score']:.3f} -> {c['refusal_score']:.3f}, KL on harmless "
                     f"{_fmt(c['kl_harmless'], '.4f')}")
        lines.append(f"wrote {res['out']} (use {res['out']}#direction in a recipe)")
        return "\n".join(lines)
