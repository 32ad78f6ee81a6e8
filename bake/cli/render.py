"""Terminal renderers of the plan and the integrity check, which several commands print. The
verification and each export render themselves (`terminal()`, beside the card's `card_row()`:
bake/verification/result.py, bake/exporters/result.py), so the CLI and the card read one object."""

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


def format_integrity(c: dict) -> str:
    from ..write.integrity import describe

    return f"integrity: {c['status'].upper()}  ({describe(c)})"
