"""Do learned AURA alphas depend on how the texts are batched? SmolLM2 on a Davidson sample.

    .venv/bin/python eval/learn_batching.py [--data ../shared/data/toxicity/davidson2017/labeled_data.csv] [--limit 96]

For each compute dtype (float64, bake's default, and float32), the up_proj responses of every
block are collected with batch sizes 1, 8 and 32 and right or left padding; the alphas
(alpha = 1 - 2 (AUROC - 0.5)) of each run are compared with those of one text at a time, right
padded. Prints the max |alpha difference| and the seconds of each run, and writes the rows as
JSON (eval/learn_batching.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bake.learn import collect as learn  # noqa: E402
from bake.learn import data as data_mod  # noqa: E402

RUNS = [(1, "right"), (8, "right"), (32, "right"), (32, "left")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/toxicity/davidson2017/labeled_data.csv"))
    ap.add_argument("--limit", type=int, default=96)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--json", default=str(ROOT / "eval" / "learn_batching.json"))
    args = ap.parse_args()
    ds = data_mod.load(args.data, layout="davidson", need_labels=True, limit=args.limit)
    runner = learn.Runner(args.model)
    mods = runner.modules(["model.layers.*.mlp.up_proj"])
    rows = []
    print(f"{args.model}: {len(ds.texts)} texts ({sum(ds.labels)} toxic), {len(mods)} up_proj modules, "
          f"{torch.get_num_threads()} threads\n")
    print(f"{'dtype':8} {'batch':>5} {'padding':8} {'seconds':>8}  max |alpha - alpha(batch 1)|")
    for dtype in ("float64", "float32"):
        ref = None
        for bs, side in RUNS:
            runner.tok.padding_side = side
            t = time.time()
            resp = runner.responses(ds.texts, mods, "max", 128, bs, progress=False, dtype=getattr(torch, dtype))
            sec = time.time() - t
            alphas = learn.aura_alphas(resp, ds.labels)[0]
            ref = ref or alphas
            diff = max((alphas[m] - ref[m]).abs().max().item() for m in mods)
            rows.append({"dtype": dtype, "batch_size": bs, "padding": side, "seconds": round(sec, 1),
                         "max_alpha_diff": diff})
            print(f"{dtype:8} {bs:>5} {side:8} {sec:>8.1f}  {diff:.2e}", flush=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "texts": len(ds.texts), "rows": rows}, indent=1))
    print(f"\nwritten: {args.json}\nreproduce: .venv/bin/python eval/learn_batching.py --limit {args.limit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
