"""Refusal direction on SmolLM2 from Arditi et al.'s splits: learn, choose, bake, measure.

    .venv/bin/python eval/refusal_eval.py [--data ../shared/data/refusal/arditi2024] [--train 64] [--val 32] [--test 100]

Learns difference-in-means candidates on `harmful_train`/`harmless_train`, chooses the layer and
position on `*_val` (lowest refusal score with KL <= 0.1 on harmless, last 20% of layers
excluded), bakes `ablate` with that direction into a checkpoint (verified against the hooks), and
measures it with `bake eval --suite refusal,quality` on the test splits: the refusal rate by
refusal markers on `harmful_test` at several reply lengths (greedy), over-refusal on
`harmless_test`, KL to the original on harmless prompts (first token and over the reply), and
perplexity. Sizes are seeded samples of each split (0 = the whole split). Writes
eval/refusal_eval.json and eval/refusal_eval.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bake  # noqa: E402
from bake import api  # noqa: E402
from bake.evaluation.report import sections  # noqa: E402
from bake.learn import collect as learn  # noqa: E402
from bake.learn import learners  # noqa: E402

WORK = ROOT / "out" / "eval-work" / "refusal"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/refusal/arditi2024"))
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--layers", default=None, help="candidate layers, e.g. 4:24 (default: all but the last 20%%)")
    ap.add_argument("--lengths", default="16,32,64,128", help="reply lengths the refusal rate is read at")
    args = ap.parse_args()
    d = Path(args.data)
    t0 = time.time()
    runner = learn.Runner("builtin:smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        direction = tmp / "refusal.safetensors"
        res = learners.learn_refusal(
            runner.ckpt, d / "harmful_train.json", d / "harmless_train.json", direction,
            harmful_val=d / "harmful_val.json", harmless_val=d / "harmless_val.json",
            limit=args.train or None, val_limit=args.val or None, layers=args.layers, runner=runner, progress=False)
        print(f"{'pos':>4} {'layer':>5} {'refusal':>9} {'KL':>8} kept")
        for row in res["candidates"]:
            print(f"{row['position']:>4} {row['layer']:>5} {row['refusal_score']:>9.3f} {row['kl_harmless']:>8.4f} "
                  f"{'yes' if row['kept'] else 'no'}")
        c = res["chosen"]
        print(f"chosen: layer {c['layer']}, position {c['position']} (of the post-instruction tokens); "
              f"val refusal score {c['baseline_refusal_score']:.3f} -> {c['refusal_score']:.3f}, "
              f"val harmless KL {c['kl_harmless']:.4f}")

        report = bake.apply({"model": "builtin:smollm2-135m-instruct", "verify": {"generate_tokens": 8},
                             "interventions": [{"kind": "ablate", "direction": f"{direction}#direction"}]},
                            output=tmp / "baked", progress=False)
        v = report["verification"]
        print(f"baked: verification {v['status']}, max |logit diff| vs hooks {v['metrics']['max_abs_logit']:.2e}")

        rep = api.evaluate(tmp / "baked", suites="refusal,quality", out=WORK, force=True,
                           options={"data": {"harmful": str(d / "harmful_test.json"),
                                             "harmless": str(d / "harmless_test.json")},
                                    "limit": args.test or None, "lengths": tuple(map(int, args.lengths.split(",")))})
    print("\n".join(sections(rep)))
    shutil.copy(WORK / "refusal.png", ROOT / "eval" / "refusal_eval.png")
    result = {"command": "python eval/refusal_eval.py " + " ".join(sys.argv[1:]), "args": vars(args),
              "chosen": c, "verification": v["status"], "max_abs_logit": v["metrics"]["max_abs_logit"],
              "seconds": round(time.time() - t0, 1), "eval": rep.to_dict()}
    (ROOT / "eval" / "refusal_eval.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote eval/refusal_eval.json and eval/refusal_eval.png in {result['seconds']} s")


if __name__ == "__main__":
    main()
