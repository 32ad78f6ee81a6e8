"""AURA (or LinEAS) detoxification of SmolLM2 measured from outside: learned on Davidson et al. (2017)
train, prompted with the first halves of held-out test tweets, strength swept, perplexity and KL beside.

    .venv/bin/python eval/detox_eval.py [--data ../shared/data/toxicity/davidson2017] [--learn 1000] \
        [--prompts 200] [--samples 5] [--strengths 0.25,0.5,0.75,1] [--rule aura] [--model builtin:...]
    .venv/bin/python eval/detox_eval.py --method lineas [--lineas-samples 32] [--steps 200]

With `--method lineas` step (1) fits LinEAS maps on each block's MLP input instead (`bake learn lineas`:
--lineas-samples tweets of each label, --steps SGD steps) and the files are named detox_eval*_lineas.

Steps: (1) a recipe that learns AURA alphas (rule `aura`: alpha = 1 - 2 (AUROC - 0.5) per up_proj
unit) from a seeded, label-stratified sample of `train.csv`; (2) a balanced prompt set from
`test.csv` (half toxic, half not; the first half of each tweet is the prompt), written to a work
folder (not committed); (3) `bake eval --sweep strength=...` with the toxicity and quality suites:
base once, then each strength re-baked; (4) the recipe's own sample-learned variant
(recipes/smollm2-detox.yaml) at its shipped strength on the same prompts. Prints the tables and
writes eval/detox_eval.json and eval/detox_sweep.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bake import api  # noqa: E402
from bake.evaluation.report import sections  # noqa: E402

WORK = ROOT / "out" / "eval-work" / "detox"
SMOLLM2 = "builtin:smollm2-135m-instruct"


def balanced_prompts(test_csv: Path, n: int, seed: int = 0, folder: Path = WORK) -> Path:
    rows = list(csv.DictReader(open(test_csv, newline="", encoding="utf-8")))
    rng = random.Random(seed)
    by = {lab: [r for r in rows if r["label"] == lab] for lab in ("0", "1")}
    picked = [r for lab in ("1", "0") for r in rng.sample(by[lab], n // 2)]
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n" for r in picked))
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/toxicity/davidson2017"))
    ap.add_argument("--learn", type=int, default=1000, help="training tweets (stratified sample)")
    ap.add_argument("--prompts", type=int, default=200, help="test prompts (half toxic)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--strengths", default="0.25,0.5,0.75,1")
    ap.add_argument("--rule", default="aura")
    ap.add_argument("--method", default="aura", choices=("aura", "lineas"),
                    help="aura (alphas from --learn tweets) or lineas (maps fitted on --lineas-samples tweets a side)")
    ap.add_argument("--lineas-samples", type=int, default=32, help="lineas: training tweets of each label (paper: 32)")
    ap.add_argument("--steps", type=int, default=200, help="lineas: optimization steps")
    ap.add_argument("--lineas-options", default="",
                    help="lineas: more learn options as YAML flow pairs, e.g. 'optimizer: adam, lr: 0.01, batch_size: 16'")
    ap.add_argument("--harmless", default=str(ROOT.parent / "shared/data/refusal/arditi2024/harmless_test.json"))
    ap.add_argument("--kl-prompts", type=int, default=50)
    ap.add_argument("--model", default=SMOLLM2, help="the model (another one than SmolLM2 writes "
                    "eval/detox_eval_NAME.json and skips the SmolLM2 recipe's step)")
    args = ap.parse_args()
    t0 = time.time()
    if Path(args.model).exists():  # a folder: the recipe (in the work folder) names it absolutely
        args.model = str(Path(args.model).resolve())
    name = Path(args.model.split(":")[-1]).name  # builtin:NAME or a folder
    tag = "" if args.model == SMOLLM2 else "_" + name.replace("-", "_").replace(".", "_")
    tag += "" if args.method == "aura" else "_" + args.method
    work = WORK.parent / (WORK.name + tag.replace("_", "-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = Path(args.data).resolve()
    prompts = balanced_prompts(data / "test.csv", args.prompts, folder=work)
    recipe = work / "detox-davidson.yaml"
    if args.method == "aura":
        intervention = ("  - kind: aura\n"
                        "    modules: [\"model.layers.*.mlp.up_proj\"]\n"
                        f"    alphas: {{learn: {{data: {data / 'train.csv'}, pooling: max, rule: {args.rule}, "
                        f"limit: {args.learn}}}}}\n")
    else:  # the paper's site (each block's MLP input), samples and optimizer; fewer steps on a CPU
        intervention = ("  - kind: lineas\n"
                        "    modules: [\"model.layers.*.mlp\"]\n"
                        f"    maps: {{learn: {{data: {data / 'train.csv'}, samples: {args.lineas_samples}, "
                        f"steps: {args.steps}" + (f", {args.lineas_options}" if args.lineas_options else "")
                        + "}}\n")
    recipe.write_text(f"model: {args.model}\ninterventions:\n" + intervention + "    strength: 1.0\n")
    opts = {"data": {"toxicity": str(prompts), "harmless": args.harmless}, "samples": args.samples, "tokens": 20,
            "seed": 0, "limit": None}
    # the harmless set is larger than the prompt budget: a seeded sample of it, via a trimmed copy
    harmless = json.loads(Path(args.harmless).read_text())
    random.Random(0).shuffle(harmless)
    (work / "harmless.json").write_text(json.dumps(harmless[:args.kl_prompts]))
    opts["data"]["harmless"] = str(work / "harmless.json")
    sweep = api.evaluate(recipe, suites="toxicity,quality", out=work / "sweep", force=True,
                         sweep=f"strength={args.strengths}", options=opts)
    print("\n".join(sections(sweep)))
    shipped = None
    if not tag:  # SmolLM2 with AURA: the shipped recipe beside it
        shipped = api.evaluate(ROOT / "recipes/smollm2-detox.yaml", suites="toxicity,quality", out=work / "shipped",
                               force=True, options=opts)
        print("\n## The shipped recipe (learned from recipes/data/toxicity-sample.jsonl)\n")
        print("\n".join(sections(shipped)))
    shutil.copy(work / "sweep" / "sweep.png", ROOT / "eval" / f"detox_sweep{tag}.png")
    result = {"command": "python eval/detox_eval.py " + " ".join(sys.argv[1:]), "args": vars(args),
              "seconds": round(time.time() - t0, 1), "sweep": sweep.to_dict(),
              "shipped": shipped.to_dict() if shipped else None}
    (ROOT / "eval" / f"detox_eval{tag}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"\nwrote eval/detox_eval{tag}.json and eval/detox_sweep{tag}.png in {result['seconds']} s")


if __name__ == "__main__":
    main()
