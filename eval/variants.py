"""The intervention variants on the real SmolLM2-135M-Instruct: each recipe bakes, verifies and says
what it did.

    .venv/bin/python eval/variants.py [--recipes recipes/smollm2-abliterate-kernel.yaml ...]

Bakes each variant recipe of recipes/ (norm-preserving and per-layer ablation, a two-direction
subspace with an interpolated candidate, steering at the attention site, AURA's mean shift) into a
temp folder with full verification (hooked original against the baked checkpoint reloaded from
disk, float64), and prints per recipe: the verification status and max |dlogit| against the stated
tolerance, top-1 agreement, KL, what the step reports (rank, strengths, the share of the direction
the norm-preserving edits leave) and the time. Learned artifacts come from bake's cache (the first
run learns them: a few minutes). Writes eval/variants.json.
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

import bake  # noqa: E402

RECIPES = ["smollm2-abliterate-kernel", "smollm2-abliterate-subspace", "smollm2-steer-attn",
           "smollm2-detox-meanshift"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="*", default=[str(ROOT / "recipes" / f"{n}.yaml") for n in RECIPES])
    args = ap.parse_args()
    rows = []
    for path in args.recipes:
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="bake-variants-") as tmp:
            report = bake.apply(path, output=Path(tmp) / "out", progress=False)
        v, step = report["verification"], report["steps"][0]
        m = v["metrics"]
        details = step.get("details", {})
        left = details.get("leftover", {})
        rows.append({
            "recipe": Path(path).name, "status": v["status"], "exact": v["exact"],
            "max_abs_logit": m["max_abs_logit"], "tolerance": v.get("tolerance", {}).get("max_abs_logit"),
            "top1_agreement": m["top1_agreement"], "kl_max": m["kl_max"],
            "summary": step["summary"], "config_changes": report["config_changes"],
            "rank": details.get("rank"), "singular_values": details.get("singular_values"),
            "leftover_max": max(left.values()) if left else None,
            "leftover_mean": sum(left.values()) / len(left) if left else None,
            "tensors_edited": len(report["edits"]), "seconds": round(time.time() - t0, 1),
        })
        r = rows[-1]
        print(f"{r['recipe']}: {r['status']} max|dlogit| {r['max_abs_logit']:.3g} (tolerance {r['tolerance']}), "
              f"top-1 {r['top1_agreement']:.3f}, KL max {r['kl_max']:.3g}, {r['tensors_edited']} tensors, "
              f"{r['seconds']} s\n    {r['summary']}", flush=True)
    out = {"command": "python eval/variants.py", "machine": platform.processor() or platform.machine(),
           "bake": bake.__version__, "rows": rows}
    (ROOT / "eval" / "variants.json").write_text(json.dumps(out, indent=2) + "\n")
    print("wrote eval/variants.json")


if __name__ == "__main__":
    main()
