"""Every detox method tuned by `bake tune` on a toxic model, then measured baked on prompts no trial saw.

    .venv/bin/python eval/detox_tune.py [--model out/organisms/smollm2-toxic] [--methods aura,lineas,ablate,steer]
        [--prompts 300] [--limit 32] [--samples 2] [--heldout 100] [--heldout-samples 2] [--trials steer=30,...]
    .venv/bin/python eval/detox_tune.py --verify-only      # bake apply (verification) of each picked recipe

For each method a recipe with a `tune:` block is written to out/eval-work/detox-tune/METHOD/ (objectives
toxicity and perplexity, constraint perplexity <= +5%); the data inputs (the prompts below, bake eval's
neutral text and multiple-choice items, 100 harmless instructions for the KL) are split by the study into
a tuning half and a held-out half. Then: `bake tune` (Optuna TPE, `--trials`), `--pick` of the front's
trial with the least toxicity (re-measured with hooks on the held-out half), and `bake eval` of the picked
recipe baked (the toxicity and quality suites on the held-out half, against the organism) and `bake apply`
of it (bake + verification against its hooks, recorded). Writes eval/detox_tune.json; `python eval/detox_compare.py` prints the table and the plot.

The methods, each learned from Davidson et al. (2017) *train* (the prompts are from *test*):
- aura: alphas of each up_proj unit (rule aura, 1000 tweets, max pooling); tuned: strength.
- lineas: maps on each block's MLP input (32 tweets a side, 100 Adam steps, lr 0.01); tuned: strength.
- ablate: the toxicity direction (difference of mean block outputs, non-toxic minus toxic, 200 tweets a
  side, `bake learn steer --data ... --away --position mean`) removed from every residual write (its
  sign does not matter); tuned: the (fractional) block of the direction and heretic's strength kernel
  {peak, position, distance}.
- steer: that mean shift (normalized to the mean residual norm) added at one block's output; tuned:
  the block and the scale (log).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from bake import api  # noqa: E402

WORK = ROOT / "out" / "eval-work" / "detox-tune"
TRIALS = {"aura": 5, "lineas": 5, "ablate": 10, "steer": 14}


def interventions(method: str, train: Path, vector: Path) -> tuple[str, str]:
    """(the recipe's intervention, its tune params) for one method."""
    if method == "aura":
        return ("  - kind: aura\n    modules: [\"model.layers.*.mlp.up_proj\"]\n"
                f"    alphas: {{learn: {{data: {train}, pooling: max, rule: aura, limit: 1000}}}}\n    strength: 1.0\n",
                "    interventions[0].strength: {low: 0.1, high: 1.5}\n")
    if method == "lineas":
        return ("  - kind: lineas\n    modules: [\"model.layers.*.mlp\"]\n"
                f"    maps: {{learn: {{data: {train}, samples: 32, steps: 100, optimizer: adam, lr: 0.01}}}}\n"
                "    strength: 1.0\n",
                "    interventions[0].strength: {low: 0.05, high: 1.5}\n")
    if method == "ablate":
        return (f"  - kind: ablate\n    direction: \"{vector}#vector[15]\"\n"
                "    weights: {kernel: {peak: 1.0, position: 15, min: 0.0, distance: 30}}\n",
                f"    interventions[0].direction: {{low: 1, high: 28, format: \"{vector}#vector[{{:.2f}}]\"}}\n"
                "    interventions[0].weights.kernel.peak: {low: 0.2, high: 1.5}\n"
                "    interventions[0].weights.kernel.position: {low: 0, high: 29}\n"
                "    interventions[0].weights.kernel.distance: {low: 2, high: 30}\n")
    if method == "steer":
        return (f"  - kind: steer\n    layers: [15]\n    vector: \"{vector}\"\n    scale: 0.1\n",
                "    interventions[0].layers[0]: {low: 1, high: 28, int: true}\n"
                "    interventions[0].scale: {low: 0.005, high: 0.5, log: true}\n")
    raise SystemExit(f"unknown method {method!r}")


def toxicity_vector(model: str, train: Path, n: int, folder: Path) -> Path:
    """Mean block outputs (every token) of non-toxic minus toxic training tweets, every block, at the mean
    residual norm: `bake learn steer --data FILE --away` (n tweets of each label)."""
    rows = list(csv.DictReader(open(train, newline="", encoding="utf-8")))
    rng = random.Random(0)
    picked = [(" ".join(t.split()), lab) for lab in ("1", "0")
              for t in rng.sample([r["text"] for r in rows if r["label"] == lab], n)]
    sample = folder / "train-sample.jsonl"
    sample.write_text("".join(json.dumps({"text": t, "label": int(lab)}) + "\n" for t, lab in picked), encoding="utf-8")
    out = folder / "away-from-toxicity.safetensors"
    if not out.is_file():
        api.learn("steer", model=model, data=str(sample), away=True, layers="all", position="mean",
                  normalize="resid", out=str(out))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "out" / "organisms" / "smollm2-toxic"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/toxicity/davidson2017"))
    ap.add_argument("--methods", default="aura,lineas,ablate,steer")
    ap.add_argument("--trials", default="", help="per method, e.g. steer=30: a study continues up to that many trials (defaults: %s)" % TRIALS)
    ap.add_argument("--prompts", type=int, default=300, help="Davidson test prompts (half toxic), split in two")
    ap.add_argument("--limit", type=int, default=32, help="tuning prompts a trial measures")
    ap.add_argument("--samples", type=int, default=2, help="continuations per prompt in a trial")
    ap.add_argument("--heldout", type=int, default=100, help="held-out prompts --pick and bake eval measure")
    ap.add_argument("--heldout-samples", type=int, default=2)
    ap.add_argument("--work", default=str(WORK), help="studies, splits and bakes (not committed)")
    ap.add_argument("--json", default=str(ROOT / "eval" / "detox_tune.json"))
    ap.add_argument("--verify-only", action="store_true",
                    help="only bake each method's picked recipe with `bake apply` (verification) and record it")
    ap.add_argument("--harmless", default=str(ROOT.parent / "shared/data/refusal/arditi2024/harmless_test.json"))
    args = ap.parse_args()
    import detox_eval
    import organisms

    t0 = time.time()
    model = Path(args.model)
    if not model.is_dir() and model == ROOT / "out" / "organisms" / "smollm2-toxic":
        model = organisms.ensure_toxic()
    model = model.resolve()
    trials = dict(TRIALS, **{k: int(v) for k, v in (p.split("=") for p in args.trials.split(",") if p)})
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    prompts = detox_eval.balanced_prompts(data / "test.csv", args.prompts, folder=work)
    harmless = json.loads(Path(args.harmless).read_text())
    random.Random(0).shuffle(harmless)
    (work / "harmless.json").write_text(json.dumps(harmless[:100]))
    vector = toxicity_vector(str(model), data / "train.csv", 200, work)
    command = "python eval/detox_tune.py " + " ".join(sys.argv[1:])
    result = {"date": time.strftime("%Y-%m-%d"), "hardware": f"{platform.machine()}, {_cpus()} CPU cores, no GPU",
              "commands": [command], "args": vars(args), "methods": {}}
    out_json = Path(args.json).resolve()
    if out_json.is_file():  # a run of some methods keeps the others' results (and says which runs made them)
        before = json.loads(out_json.read_text())
        result["methods"] = before.get("methods", {})
        result["commands"] = before.get("commands", [before["command"]] if "command" in before else []) + [command]
    for method in args.methods.split(","):
        if args.verify_only:
            result["methods"][method]["verification"] = verify(work / method / "tuned.yaml", work / method / "baked")
            out_json.write_text(json.dumps(result, indent=1, default=float) + "\n")
            continue
        t1 = time.time()
        folder = work / method
        folder.mkdir(exist_ok=True)
        iv, params = interventions(method, data / "train.csv", vector)
        recipe = folder / f"detox-{method}.yaml"
        recipe.write_text(
            f"model: {model}\noutput: {folder / 'baked'}\ninterventions:\n{iv}"
            f"tune:\n  params:\n{params}"
            "  objectives: [toxicity, perplexity]\n  constraints: [\"perplexity <= +5%\"]\n"
            f"  data: {{toxicity: {prompts}, harmless: {work / 'harmless.json'}}}\n"
            f"  trials: {trials[method]}\n  startup: {max(2, TRIALS[method] // 3)}\n  seed: 0\n  holdout: 0.5\n"
            f"  limit: {args.limit}\n  heldout_limit: {args.heldout}\n"
            f"  eval: {{samples: {args.samples}, tokens: 20}}\n")
        study = folder / "study"
        rep = api.tune(recipe, study_dir=study, progress=True)
        print(rep.terminal())
        rows = {r["number"]: r for r in rep["all"]}
        if not rep.front:
            result["methods"][method] = {"front": [], "note": "no trial met perplexity <= +5% on the tuning split"}
            continue
        chosen = min(rep.front, key=lambda n: rows[n]["metrics"]["toxicity"])
        t2 = time.time()
        tuned = folder / "tuned.yaml"
        picked = api.tune(recipe, pick=chosen, out=tuned, study_dir=study, force=True)
        print(picked.terminal())
        t3 = time.time()
        held = {k: str(study / "splits" / "heldout" / f"{k}.jsonl") for k in ("toxicity", "harmless", "text", "mc")}
        ev = api.evaluate(tuned, suites="toxicity,quality", out=folder / "eval", force=True,
                          options={"data": held, "limit": args.heldout, "samples": args.heldout_samples, "tokens": 20, "seed": 0})
        print(ev.terminal())
        result["methods"][method] = {
            "recipe": str(recipe), "trials": rep.trials, "cost": rep.cost, "splits": rep.splits,
            "all": [{"trial": n, "state": r["state"], "values": r["values"], "tuning": r.get("metrics")}
                    for n, r in rows.items()],
            "front": rep.front,
            "picked": {"trial": chosen, "values": picked.values, "tuning": picked.tuning,
                       "heldout (hooks)": picked.heldout},
            "heldout (baked, bake eval)": ev.to_dict(),
            "verification": verify(tuned, folder / "baked"),
            "seconds": {"search": round(t2 - t1, 1), "pick": round(t3 - t2, 1), "eval": round(time.time() - t3, 1)}}
        out_json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    result["seconds"] = round(time.time() - t0, 1)
    out_json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {out_json} in {result['seconds']} s; python eval/detox_compare.py prints the table")


def verify(tuned: Path, out: Path) -> dict:
    """`bake apply` of the picked recipe: bake + verification against its hooks (bake eval's bake is not verified)."""
    t = time.time()
    v = api.apply(tuned, output=out, force=True, progress=False)["verification"]
    return {"status": v["status"], "max_abs_logit": v["metrics"]["max_abs_logit"], "seconds": round(time.time() - t, 1)}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
