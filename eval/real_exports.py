"""The exports of the real SmolLM2-135M-Instruct demo bake, each verified in its runtime.

    .venv/bin/python eval/real_exports.py [--types f32 q8_0] [--patch]

Bakes recipes/smollm2-demo.yaml (Hugging Face folder only; learned artifacts from bake's cache) into
a temp folder, then exports it with `bake.export`: a GGUF per `--types` converted by llama.cpp's own
converter (`--mode convert`), and with `--patch` the embedded Q4_1 GGUF with the edited tensors
replaced (what `make demo` writes). Each export is verified by bake in llama.cpp against the baked
PyTorch model (greedy tokens and teacher-forced logits on the probe prompts). Prints one line per
export and writes eval/real_exports.json. The test suite covers the exporters on tiny models
(tests/test_export.py); this script is where the real model's exports are measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import bake  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", nargs="*", default=["f32"], help="GGUF types converted by llama.cpp's converter")
    ap.add_argument("--patch", action="store_true", help="also patch the embedded Q4_1 GGUF (as make demo does)")
    args = ap.parse_args()
    demo = ROOT / "recipes" / "smollm2-demo.yaml"
    data = yaml.safe_load(demo.read_text())
    data["export"] = ["hf"]
    data.pop("output", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bake-real-exports-") as tmp:
        t0 = time.time()
        report = bake.apply(_recipe(data, demo), output=Path(tmp) / "demo", progress=False)
        print(f"baked {demo.name}: verification {report['verification']['status']} in {time.time() - t0:.0f} s",
              flush=True)
        jobs = [("convert", t) for t in args.types] + ([("patch", None)] if args.patch else [])
        for mode, qtype in jobs:
            t0 = time.time()
            res = bake.export(Path(tmp) / "demo", "gguf", gguf_type=qtype, mode=mode, progress=False)
            m = res["metrics"]
            rows.append({"mode": mode, "type": res.get("type") or qtype, "file": res["file"], "status": res["status"],
                         "metrics": m, "seconds": round(time.time() - t0, 1),
                         **({"baseline": res["baseline"]["metrics"]} if "baseline" in res else {})})
            print(f"{res['file']}: {res['status']}; greedy {m.get('greedy_identical_prompts')} prompts identical, "
                  f"max |dlogit| {m.get('max_abs_logit')}, top-1 {m.get('top1_agreement')}; "
                  f"{rows[-1]['seconds']} s", flush=True)
    out = {"command": "python eval/real_exports.py " + " ".join(sys.argv[1:]),
           "machine": platform.processor() or platform.machine(), "bake": bake.__version__, "rows": rows}
    (ROOT / "eval" / "real_exports.json").write_text(json.dumps(out, indent=2) + "\n")


def _recipe(data: dict, path: Path):
    from bake.recipe.schema import parse

    return parse(data, str(path), base_dir=path.parent)


if __name__ == "__main__":
    main()
