"""`bake tune` on a model that refuses: search, pick, bake, verify, export to GGUF, measure on held-out prompts.

    .venv/bin/python eval/tune_refusal.py [--trials 30] [--data ../shared/data/refusal/arditi2024]
        [--recipe recipes/refuser-abliterate-per-block.yaml]

1. The organism (eval/organisms.py: SmolLM2-135M-Instruct fine-tuned to refuse, on the *train* split).
2. `bake tune recipes/refuser-abliterate.yaml` with the *test* split of Arditi et al.'s harmful and
   harmless instructions as data: bake splits each in two, seeded; the trials see only the tuning half
   (16 prompts of each, a seeded sample), objectives refusal@128 and KL, constraints KL <= 0.1 over
   the reply and at the first token.
3. `--pick` of the front's trial with the fewest refusals: re-measured with hooks on the held-out half
   (100 prompts of each), written as a recipe with both figures.
4. `bake apply` of that recipe (bake + verification), `bake export gguf` (checked in llama.cpp), and
   `bake eval --suite refusal,quality` of the baked model on the held-out half (100 prompts of each,
   refusal at 32 and 128 tokens, KL at the first token and over the reply, perplexity).
Writes eval/tune_refusal.json (and the study's pareto.png beside it as tune_refusal.png); with another
--recipe, eval/tune_refusal_NAME.json and .png (NAME: the recipe's name after `refuser-abliterate-`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from bake import api  # noqa: E402

RECIPE = ROOT / "recipes" / "refuser-abliterate.yaml"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/refusal/arditi2024"))
    ap.add_argument("--fresh", action="store_true", help="start a new study (else an earlier one continues)")
    ap.add_argument("--recipe", default=str(RECIPE), help="a refuser-abliterate*.yaml recipe with a tune: block")
    args = ap.parse_args()
    recipe = Path(args.recipe).resolve()
    suffix = recipe.stem.removeprefix("refuser-abliterate").lstrip("-").replace("-", "_")
    name = "tune_refusal" + (f"_{suffix}" if suffix else "")
    work = ROOT / "out" / "eval-work" / name.replace("_", "-")
    import organisms

    t0 = time.time()
    organism = organisms.ensure()
    d = Path(args.data)
    data = {"harmful": str(d / "harmful_test.json"), "harmless": str(d / "harmless_test.json")}
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    study = work / "study"
    t1 = time.time()
    rep = api.tune(recipe, trials=args.trials, study_dir=study, data=data, progress=True)
    print(rep.terminal())
    t2 = time.time()
    rows = {r["number"]: r for r in rep["all"]}
    chosen = min(rep.front, key=lambda n: (rows[n]["metrics"]["refusal@128"], rows[n]["metrics"]["kl"]))
    picked = api.tune(recipe, pick=chosen, out=work / "tuned.yaml", study_dir=study, data=data, force=True)
    print(picked.terminal())
    t3 = time.time()
    baked = work / "tuned"
    res = api.apply(work / "tuned.yaml", output=baked, force=True, progress=True)
    gguf = api.export(baked, "gguf", progress=True, force=True)
    t4 = time.time()
    held = {k: str(study / "splits" / "heldout" / f"{k}.jsonl") for k in ("harmful", "harmless")}
    ev = api.evaluate(baked, suites="refusal,quality", options={"data": held, "limit": 100, "lengths": (32, 128)},
                      out=work / "eval", force=True)
    print(ev.terminal())
    t5 = time.time()
    m = ev["models"]
    ref = {role: m[role]["refusal"]["summary"] for role in ("base", "baked")}
    cmp = m["baked"]["refusal"]["vs base"]
    q = m["baked"]["quality"]["vs base"]
    out = {
        "date": time.strftime("%Y-%m-%d"), "hardware": f"{platform.machine()}, {_cpus()} CPU cores, no GPU",
        "command": f"python eval/tune_refusal.py --trials {args.trials}"
                   + (f" --recipe {recipe.relative_to(ROOT)}" if recipe != RECIPE else ""),
        "organism": json.loads((organism / "organism.json").read_text())["test"],
        "study": {"trials": rep.trials, "cost": rep.cost, "splits": rep.splits,
                  "front": [{"trial": n, "values": rows[n]["values"], "tuning": rows[n]["metrics"]} for n in rep.front]},
        "picked": {"trial": chosen, "values": picked.values, "tuning": picked.tuning, "heldout (hooks)": picked.heldout},
        "baked": {"verification": res["verification"]["status"],
                  "max_abs_logit": res["verification"]["metrics"]["max_abs_logit"],
                  "gguf": {"status": gguf["status"], **{k: gguf[k] for k in ("runtime", "metrics") if k in gguf}}},
        "heldout (baked, bake eval)": {
            "refusal at 128 tokens": {"organism": ref["base"]["refusal rate on harmful prompts"]["128"],
                                      "baked": ref["baked"]["refusal rate on harmful prompts"]["128"]},
            "refusal at 32 tokens": {"organism": ref["base"]["refusal rate on harmful prompts"]["32"],
                                     "baked": ref["baked"]["refusal rate on harmful prompts"]["32"]},
            "over-refusal at 128 tokens": {"organism": ref["base"]["over-refusal on harmless prompts"]["128"],
                                           "baked": ref["baked"]["over-refusal on harmless prompts"]["128"]},
            "KL first token": cmp["KL first token"], "KL over the reply": cmp["KL over the reply"],
            "perplexity change": q["perplexity change"]},
        "seconds": {"organism": round(t1 - t0, 1), "search": round(t2 - t1, 1), "pick": round(t3 - t2, 1),
                    "bake, verify, gguf": round(t4 - t3, 1), "held-out eval": round(t5 - t4, 1)},
    }
    (ROOT / "eval" / f"{name}.json").write_text(json.dumps(out, indent=1, default=str))
    if (study / "pareto.png").is_file():
        shutil.copy(study / "pareto.png", ROOT / "eval" / f"{name}.png")
    print(json.dumps(out["heldout (baked, bake eval)"], indent=1, default=str))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
