"""`bake` command line: plan, apply, verify, arch. Exit codes: 0 ok, 1 verification failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, api, arch, interrupt
from .errors import BakeError, VerificationFailed


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def format_plan(summary: dict) -> str:
    m = summary["model"]
    lines = [f"model   {m['spec']}  ({m['family']}, {m['blocks']} blocks, hidden {m['hidden_size']}, "
             f"{'tied' if m['tied_embeddings'] else 'untied'} embeddings)",
             f"dtype   {summary['dtype']}",
             "interventions:"]
    for s in summary["steps"]:
        lines.append(f"  #{s['index']} {s['kind']:<6} {'exact' if s['exact'] else 'APPROXIMATE'}: {s['summary']} "
                     f"[{s['tensors']} tensors]")
    edits = summary["edits"]
    width = max((len(e["tensor"]) for e in edits), default=10)
    lines.append(f"tensor edits ({len(edits)}):")
    for e in edits:
        src = "new zeros" if e["source"] is None else ("" if e["source"] == e["tensor"] else f"from {e['source']}")
        what = "; ".join(e["ops"]) or "copy"
        extra = ", ".join(x for x in (src, e.get("note", "")) if x)
        lines.append(f"  {e['tensor']:<{width}}  {what}" + (f"  ({extra})" if extra else ""))
    if summary["config_changes"]:
        lines.append("config changes: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in summary["config_changes"].items()))
    return "\n".join(lines)


def format_verification(v: dict) -> str:
    m, t = v["metrics"], v["tolerance"]
    first = m["first_divergent_hidden_state"]
    lines = [
        f"verification: {v['status'].upper()}  ({len(v['prompts'])} prompts, hooked original vs baked "
        f"reloaded from disk, {v['compute_dtype']} compute)",
        f"  max |logit diff|      {_fmt(m['max_abs_logit'])}   (tolerance {_fmt(t['max_abs_logit'], 'g')})",
        f"  max relative diff     {_fmt(m['max_rel_logit'])}",
        f"  top-1 agreement       {m['top1_agreement']:.2%}   (minimum {t['min_top1']:.0%})",
        f"  KL(hooked||baked)     mean {_fmt(m['kl_mean'])}, max {_fmt(m['kl_max'])}",
        f"  greedy tokens agree   {_fmt(m['greedy_agreement'], '.2%')}   ({m['greedy_identical_prompts']} prompts identical)",
        f"  first divergent layer {'none' if first is None else f'hidden state {first}'} "
        f"(relative tolerance {t['hidden_state_rel']:g})",
    ]
    if not v["exact"]:
        lines.append("  APPROXIMATE bake: the figures above are the measured deviation from the hooks")
    for f in v["failures"]:
        lines.append(f"  FAIL: {f}")
    return "\n".join(lines)


def format_arch(info: dict) -> str:
    lines = [f"{k:<16} {v}" for k, v in info.items() if not isinstance(v, dict)]
    lines.append("residual writers (block N):")
    for mod, w in info["writers (block 0 shown as N)"].items():
        lines.append(f"  {mod:<40} {', '.join(x.replace('.0.', '.N.') for x in w['tensors'])}"
                     + (f"   then {w['post_norm']}" if w["post_norm"] else ""))
    lines.append("exactness:")
    for k, v in info["exactness"].items():
        lines.append(f"  {k:<7} {v}")
    return "\n".join(lines)


def exactness_table() -> str:
    """Markdown table of exactness per family x kind, generated from the adapters (README)."""
    rows = ["| family | model_type | aura | steer | ablate |", "| --- | --- | --- | --- | --- |"]
    for fam in arch.FAMILIES:
        e = arch.exactness(fam)
        rows.append(f"| {fam.name} | {', '.join(fam.model_types)} | {e['aura']} | {e['steer']} | {e['ablate']} |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bake", description="Compile AURA, steering and ablation into checkpoints.")
    p.add_argument("--version", action="version", version=f"bake {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars, only the result")

    sp = sub.add_parser("plan", help="show the per-tensor edit table; writes nothing")
    sp.add_argument("recipe")
    common(sp)
    sp = sub.add_parser("apply", help="bake, verify and write a checkpoint")
    sp.add_argument("recipe")
    sp.add_argument("--output", "-o", help="output folder (overrides the recipe's `output`)")
    sp.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    common(sp)
    sp = sub.add_parser("verify", help="re-run the equivalence check on a baked folder")
    sp.add_argument("output")
    common(sp)
    sp = sub.add_parser("arch", help="what the adapter resolves for a model")
    sp.add_argument("model", nargs="?", help="local folder, .gguf, Hub id or builtin:NAME")
    sp.add_argument("--table", action="store_true", help="print the exactness table of every family (markdown)")
    common(sp)
    return p


def _dispatch(args, progress: bool, out) -> int:
    if args.cmd == "plan":
        summary = api.plan_summary(api.plan(args.recipe))
        print(json.dumps(summary, indent=2) if args.json else format_plan(summary), file=out)
    elif args.cmd == "apply":
        report = api.apply(args.recipe, output=args.output, force=args.force, progress=progress)
        if args.json:
            print(json.dumps(report, indent=2), file=out)
        else:
            if not args.quiet:
                print(format_plan(report), file=out)
            print(format_verification(report["verification"]), file=out)
            print(f"wrote {report['output']} in {report['seconds']} s", file=out)
    elif args.cmd == "verify":
        result = api.verify(args.output, progress=progress)
        print(json.dumps(result, indent=2) if args.json else format_verification(result["verification"]), file=out)
    elif args.cmd == "arch":
        if args.table:
            print(exactness_table(), file=out)
        elif not args.model:
            raise BakeError("bake arch: give a model (folder, .gguf, Hub id or builtin:NAME) or --table")
        else:
            info = api.arch_info(args.model)
            print(json.dumps(info, indent=2) if args.json else format_arch(info), file=out)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    previous = interrupt.install()  # SIGTERM unwinds through apply(), which removes its temp folder
    out = sys.stdout
    try:
        return _dispatch(args, not (args.quiet or args.json), out)
    except BaseException as e:
        if interrupt.received is not None:  # whatever the signal turned into on its way out
            print("bake: terminated; nothing was written", file=sys.stderr)
            raise SystemExit(128 + interrupt.received) from None
        if isinstance(e, VerificationFailed):
            report = e.report or {}
            if args.json:
                print(json.dumps(report, indent=2), file=out)
            elif "verification" in report:
                print(format_verification(report["verification"]), file=out)
            print(f"bake: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, BakeError):
            print(f"bake: error: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, KeyboardInterrupt):
            print("bake: interrupted; nothing was written", file=sys.stderr)
            return 130
        raise
    finally:
        interrupt.uninstall(previous)
