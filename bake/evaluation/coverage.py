"""Every causal-LM model type of the installed transformers, and how each kind bakes on it.

`classify(model_type)` builds a tiny random instance of the type's default config and says whether
it is a decoder-only causal LM (encoder-decoders and bidirectional encoders with an LM head are
not); `status(model_type)` runs the adapter probe on it and gives one status per kind: `exact`,
`exact via <flag>` (a stock config flag or re-declaration), `approximate` (opt-in, deviation
measured), or `refused` with the reason. `eval/coverage.py` then proves each `exact` by baking and
verifying a tiny model; `bake arch --table` prints the statuses.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import torch

from .. import kinds as _kinds

# the kinds with a per-family status of their own (the SAE kinds bake through steer's slot or ablate's fold)
KINDS = {name: kind for name, kind in _kinds.KINDS.items() if kind.coverage}


@dataclass
class Row:
    model_type: str
    decoder: bool | None  # None: could not tell (no tiny instance builds)
    status: dict[str, tuple[str, str]] = field(default_factory=dict)  # kind -> (status, why)
    why: str = ""  # why the type is not a decoder-only causal LM, or why it could not be probed


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def default_config(model_type: str) -> dict:
    from transformers import CONFIG_MAPPING

    from ..families.overrides import defaults

    return CONFIG_MAPPING[model_type](**defaults(model_type)).to_dict()


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def classify(model_type: str) -> Row:
    """Is the type a decoder-only causal LM? (built tiny; causality checked numerically)."""
    from ..errors import first_line
    from ..model import tiny

    _quiet()
    try:
        config = default_config(model_type)
    except Exception as e:  # noqa: BLE001 - a config class whose defaults do not validate
        return Row(model_type, None, why=f"its default config does not build ({type(e).__name__}: {first_line(e)})")
    if config.get("is_encoder_decoder"):
        return Row(model_type, False, why="encoder-decoder")
    try:
        model = tiny.build(tiny.tiny_config(config))
        ids = torch.randint(3, 200, (1, 12), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a = model(input_ids=ids, use_cache=False).logits
            ids2 = ids.clone()
            ids2[0, -1] = (ids2[0, -1] + 1) % 200 + 3
            b = model(input_ids=ids2, use_cache=False).logits
    except Exception as e:  # noqa: BLE001 - any model class failing on a tiny config
        return Row(model_type, None, why=f"no tiny model of its default config runs here ({type(e).__name__}: "
                                         f"{first_line(e)[:160]})")
    if not torch.allclose(a[0, :-1], b[0, :-1], rtol=0, atol=1e-9):  # float64 noise (expert sums) is not a future token
        return Row(model_type, False, why="not causal by default (a bidirectional encoder with an LM head)")
    return Row(model_type, True)


def status(model_type: str, config: dict | None = None) -> Row:
    """Classify, then resolve the adapter of a tiny checkpoint of the type's default config, saved
    with transformers as a user's would be: one status per kind (what `eval/coverage.py` then
    bakes to prove)."""
    from pathlib import Path

    from ..errors import BakeError, first_line
    from ..model.source import open_checkpoint
    from ..model import tiny
    from ..families.adapter import resolve
    from ..families.overrides import refused
    from ..files.tempdirs import temp_dir

    why = refused({"model_type": model_type})
    if why:  # a decoder-only LM bake refuses by hand (overrides.REFUSED), whether or not a tiny one builds
        return Row(model_type, True, status={k: ("refused", why) for k in KINDS})
    row = classify(model_type)
    if not row.decoder:
        return row
    with temp_dir("coverage") as tmp:
        try:
            tiny.save(config or default_config(model_type), Path(tmp))
        except Exception as e:  # noqa: BLE001 - a model class that cannot save its own tiny instance
            row.why = f"no tiny checkpoint of its default config saves here ({type(e).__name__}: {first_line(e)[:160]})"
            return row
        try:
            ck = open_checkpoint(Path(tmp))
            fam = resolve(ck.config, ck.shapes)
        except BakeError as e:
            row.status = {k: ("refused", first_line(e)) for k in KINDS}
            return row
    row.status = adapter_status(fam)
    return row


def adapter_status(fam) -> dict[str, tuple[str, str]]:
    """Status per kind of a resolved adapter: exact, exact via config (a stock flag or a
    re-declaration creates the slot), approximate (opt-in), or refused, each with its reason."""
    steer, why = KINDS["steer"].status(fam)
    if steer == "exact" and fam.steer_config:
        flags = {k: v for k, v in fam.steer_config.items() if k not in ("architectures",)}
        steer, why = "exact via config", ", ".join(
            f"{k}: {json.dumps(v)}" if not isinstance(v, dict) else ", ".join(f"{k}.{a}: {json.dumps(b)}" for a, b in v.items())
            for k, v in flags.items())
    return {name: ((steer, why) if name == "steer" else kind.status(fam)) for name, kind in KINDS.items()}


def artifacts(model_dir, dest) -> dict[str, dict]:
    """One intervention per kind for a (tiny) checkpoint (each kind's `example`: e.g. a steering vector,
    a direction, AURA alphas for the first Linear module of the first block); seeded, written under `dest`."""
    from pathlib import Path

    from ..model.source import open_checkpoint
    from ..families.adapter import resolve

    dest = Path(dest)
    ck = open_checkpoint(Path(model_dir))
    fam = resolve(ck.config, ck.shapes)
    g = torch.Generator().manual_seed(1)
    examples = {name: kind.example(fam, dest, g) for name, kind in KINDS.items()}
    return {name: ex for name, ex in examples.items() if ex is not None}


# --- the docs/families.md table, from eval/coverage.py's rows (JSON) --------------------------------------


def counts(rows) -> str:
    dec = [r for r in rows if r["decoder"] is not False]
    out = []
    for kind in KINDS:
        exact = sum(1 for r in dec if r["cells"].get(kind, ("",))[0].startswith("exact"))
        approx = sum(1 for r in dec if r["cells"].get(kind, ("",))[0] == "approximate")
        out.append(f"`{kind}` exact on {exact} of {len(dec)} ({100 * exact / max(1, len(dec)):.0f}%)"
                   + (f", approximate on {approx} more" if approx else ""))
    return "; ".join(out)


def exports(model_type: str, row: dict | None = None) -> tuple[str, str]:
    """(GGUF, ONNX) status of a type: llama.cpp's converter registers its architecture; a tiny random model
    of it exported with torch.onnx and onnxruntime reproduced its logits (eval/coverage.py runs that trial
    and stores it in the row as `onnx`; unproven, the column says the trial runs at export)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from ..exporters import gguf as export_gguf

    folder = export_gguf.converter_dir()
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    gguf = "-" if folder is None else ("converter" if arch in export_gguf.known_architectures(folder) else "no")
    onnx = (row or {}).get("onnx")
    return gguf, ("tried at export" if onnx is None else "yes" if onnx == "" else f"no: {onnx}")


def table(rows) -> str:
    lines = [counts(rows), "",
             "GGUF: `converter` = llama.cpp's converter registers the architecture (`bake export gguf` then writes "
             "and verifies the file); ONNX: `yes` = a tiny random model of the type exported with torch.onnx and "
             "onnxruntime reproduced its logits (`bake apply` with `export: [onnx]` runs the same trial before baking); "
             "`tried at export`: eval/coverage.py has not run the trial for the type yet.", "",
             "| model_type | " + " | ".join(KINDS) + " | GGUF | ONNX |", "|" + " --- |" * (len(KINDS) + 3)]
    for r in rows:
        if r["decoder"] is False:
            continue
        gguf, onnx = exports(r["model_type"], r)
        if not r["cells"]:
            lines.append((f"| {r['model_type']} | refused: {r['why']} |" + " |" * (len(KINDS) - 1)
                          + f" {gguf} | {onnx} |").replace("\n", " "))
            continue
        cell = {k: (c[0] if c[0] in ("exact", "approximate") else f"{c[0]}: {c[1]}").replace("|", "/")
                for k, c in r["cells"].items()}
        lines.append((f"| {r['model_type']} | " + " | ".join(cell.get(k, "-") for k in KINDS)
                      + f" | {gguf} | {onnx} |").replace("\n", " "))
    lines += ["", "Not decoder-only (not counted): " + ", ".join(
        f"{r['model_type']} ({r['why']})" for r in rows if r["decoder"] is False)]
    return "\n".join(lines)
