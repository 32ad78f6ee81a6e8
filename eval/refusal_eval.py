"""Refusal direction on SmolLM2 from Arditi et al.'s splits: learn, choose, bake, measure.

    .venv/bin/python eval/refusal_eval.py [--data ../shared/data/refusal/arditi2024] [--train 64] [--val 32] [--test 100]

Learns difference-in-means candidates on `harmful_train`/`harmless_train`, chooses the layer and
position on `*_val` (lowest refusal score with KL <= 0.1 on harmless, last 20% of layers
excluded), bakes `ablate` with that direction into a checkpoint (verified against the hooks), and
reports on `harmful_test`: the share of greedy 32-token completions containing a refusal phrase,
for the original and for the baked model, and the KL of the baked model's next-token distribution
on `harmless_test`. Sizes are seeded samples of each split (0 = the whole split).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bake  # noqa: E402
from bake.learn import collect as learn  # noqa: E402
from bake.learn import data as data_mod  # noqa: E402
from bake.learn import learners, refusal
from bake.model.loading import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/refusal/arditi2024"))
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--layers", default=None, help="candidate layers, e.g. 4:24 (default: all but the last 20%%)")
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

        harmful_test = data_mod.load(d / "harmful_test.json", limit=args.test or None).texts
        harmless_test = data_mod.load(d / "harmless_test.json", limit=args.test or None).texts
        before, _ = refusal.refusal_rate(runner, harmful_test, progress=False)
        base_lp = refusal.last_logprobs(runner, [runner.chat(t) for t in harmless_test])
        runner.model = load_model(tmp / "baked", trust_remote_code=False)  # the baked checkpoint, plain transformers
        after, outs = refusal.refusal_rate(runner, harmful_test, progress=False)
        kl = refusal.kl(base_lp, refusal.last_logprobs(runner, [runner.chat(t) for t in harmless_test])).item()
    print(f"harmful_test ({len(harmful_test)} prompts): refusal rate {before:.1%} original -> {after:.1%} baked")
    print(f"harmless_test ({len(harmless_test)} prompts): KL(original || baked) at the first response token {kl:.4f}")
    print(f"example completion after ablation: {outs[0][:160]!r}")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
