"""Terminal renderers of the results several commands print: the plan, the verification, an export,
the integrity check. Each takes the result as the API returns it (and `--json` prints)."""

from __future__ import annotations

import json


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
        lines.append("  checked               the hooked modules alone. More: --verify full (the whole model end to "
                     "end: logits, hidden states, greedy tokens), or streamed when it does not fit in memory")
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
        (f"  greedy tokens agree   {_fmt(m['greedy_agreement'], '.2%')}   ({m['greedy_identical_prompts']} prompts "
         "identical: the baked model's greedy choice at each of the hooked model's steps)"
         if m["greedy_agreement"] is not None else "  greedy tokens         not compared (no generation in this mode)"),
        f"  first divergent layer {'none' if first is None else f'hidden state {first}'} "
        f"(relative tolerance {t['hidden_state_rel']:g})",
        *format_local(v),
    ]
    if not v["exact"]:
        lines.append("  APPROXIMATE bake: the figures above are the measured deviation from the hooks")
    lines.append(checked(v))
    for f in v["failures"]:
        lines.append(f"  FAIL: {f}")
    return "\n".join(lines)


def checked(v: dict) -> str:
    """What this verification ran, and how to check more or less."""
    gen = v.get("generate_tokens") or 0
    local = v.get("local") or {}
    done = (f"{len(v['prompts'])} probe prompts teacher-forced" + (f", {gen} greedy steps each" if gen else "")
            + (f", {len(local.get('modules', []))} modules alone" if local else ""))
    return (f"  checked               {done}. More: `verify: {{prompts: [...], generate_tokens: N}}` in the recipe; "
            "less: --verify local (modules alone, no end-to-end pass)")


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


def format_integrity(c: dict) -> str:
    from ..write.integrity import describe

    return f"integrity: {c['status'].upper()}  ({describe(c)})"
