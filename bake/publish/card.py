"""The model card (README.md) of a baked folder, rendered from its bake_report.json and recipe.yaml.

Hub metadata: `base_model` (when the base is known to be a Hub model), `base_model_relation:
finetune` (the weights were changed; the Hub's other relations, adapter/merge/quantized, do not
fit), tags naming the interventions, the license inherited from the base (its card's front matter
or the GGUF's `general.license`), and the formats present. The body states exactly what changed:
the recipe, every edited tensor with its operations and rounding error, config changes, and
each format's verification.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..exporters.base import get as exporter
from ..kinds import KINDS
from ..model.source import BUILTINS
from .report import Report


def base_info(ckpt) -> dict:
    """What the card says about the base model: its Hub id (when known) and license."""
    spec, license_ = ckpt.spec, None
    hub_id = (ckpt.origin or {}).get("hub")  # resolved from the Hub
    if spec.startswith("builtin:"):
        hub_id = BUILTINS.get(spec.split(":", 1)[1], (None, None, None))[2]
    readme = ckpt.path / "README.md"
    if readme.is_file():
        meta = front_matter(readme.read_text(errors="replace"))
        license_ = meta.get("license")
    gguf_path = (ckpt.origin or {}).get("gguf")
    if license_ is None and gguf_path and Path(gguf_path).is_file():
        import gguf

        field = gguf.GGUFReader(gguf_path).fields.get("general.license")
        license_ = field.contents() if field is not None else None
    return {"hub_id": hub_id, "license": license_}


def front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _g(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _inside(report: Report) -> list:
    """The exports that live inside the folder (and so are uploaded with it)."""
    return [e for e in (report.get("exports") or {}).values() if e.inside]


def _verification_rows(report: Report) -> list[str]:
    """The card's verification table: one row per format, each rendered by its result (the same object
    the CLI prints)."""
    return ["| format | runtime | checked against | status | max abs logit diff | greedy tokens identical | other |",
            "| --- | --- | --- | --- | --- | --- | --- |", report.verification.card_row()] + [e.card_row() for e in _inside(report)]


def render(folder: Path, repo: str | None = None, report: Report | None = None) -> str:
    """The card for a baked folder (deterministic: only the report, the recipe and the Hub repo id
    it is pushed to go in). Exports written outside the folder are not part of it. `report`: the
    folder's, when the caller holds it already."""
    folder = Path(folder)
    report = report or Report.read(folder)
    recipe_text = (folder / "recipe.yaml").read_text() if (folder / "recipe.yaml").is_file() else ""
    model, base = report["model"], report["model"].get("base") or {}
    kinds = [s["kind"] for s in report["steps"]]
    exports = _inside(report)
    formats = ["safetensors"] + list(dict.fromkeys(e["format"] for e in exports))
    meta = {
        **({"base_model": base["hub_id"], "base_model_relation": "finetune"} if base.get("hub_id") else {}),
        **({"license": base["license"]} if base.get("license") else {}),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["bake"] + sorted({KINDS[k].tag if k in KINDS else k for k in kinds}) + formats[1:],
    }
    name = repo or Path(report.get("output") or folder).name  # (a bake renders it in its temp folder)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    spec = model["spec"]  # a local model by its folder's name: the card names no path of the machine it was baked on
    spec = f"{Path(spec).name} (a local model)" if Path(spec).is_absolute() else spec
    base_desc = f"[{base['hub_id']}](https://huggingface.co/{base['hub_id']})" if base.get("hub_id") else f"`{spec}`"
    lines += [f"{base_desc} with inference-time interventions compiled into its weights by "
              f"bake {report['bake_version']}. It is an ordinary {model['family']}-family "
              "checkpoint: stock runtimes load it with no custom code and no hooks.", ""]
    lines += ["## What was changed", ""]
    for s in report["steps"]:
        lines.append(f"- **#{s['index']} {s['kind']}** ({'exact' if s['exact'] else 'APPROXIMATE'}): {s['summary']} "
                     f"({s['tensors']} tensors)")
    if report.get("config_changes"):
        lines += ["", "Config changes: " + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in report["config_changes"].items())]
    lines += ["", "## Verification", "",
              "Each format was run on the same probe prompts and compared with its reference; greedy "
              "generation uses 32 new tokens.", ""] + _verification_rows(report)
    tuned = ((yaml.safe_load(recipe_text) or {}).get("provenance") or {}).get("tuned") if recipe_text else None
    if tuned:  # the values bake tune chose, with their figures on the tuning and the held-out split
        from ..tune.report import card_section as tuning_section

        lines += [""] + tuning_section(tuned)
    if (folder / "eval_report.json").is_file():  # written by `bake eval` (recorded in the report's manifest)
        from ..evaluation.report import EvalReport

        lines += [""] + EvalReport.model_validate(json.loads((folder / "eval_report.json").read_text())).card_section()
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'model = AutoModelForCausalLM.from_pretrained("{name}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{name}")', "```"]
    for e in exports:  # each format says how it is used (bake/exporters/)
        lines += [x for line in exporter(e["format"]).card_use(e) for x in ("", line)]
    if (folder / "config.json").is_file():
        from ..exporters.serving import notes

        config = json.loads((folder / "config.json").read_text())
        lines += ["", "## Serving", "", "| runtime | serves this checkpoint unchanged | why |", "| --- | --- | --- |"]
        lines += [f"| {rt} | {ok} | {why.replace('|', '/')} |" for rt, ok, why in notes(config, report.get("config_changes"))]
    lines += ["", "## Recipe", "", "```yaml", recipe_text.strip(), "```", "",
              f"## Edited tensors ({len(report['edits'])})", "",
              "| tensor | interventions and operations | max rounding error |", "| --- | --- | --- |"]
    for e in report["edits"]:
        ops = "; ".join(e["ops"]) or "copy"
        if e.get("note"):
            ops += f" ({e['note']})"
        lines.append(f"| `{e['tensor']}` | {ops} | {_g(e['rounding_max_abs'])} |")
    return "\n".join(lines) + "\n"


def write(folder: Path, repo: str | None = None, report: Report | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render(folder, repo, report))
    return path
