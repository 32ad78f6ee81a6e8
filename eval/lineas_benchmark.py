"""LinEAS learning: time per step and peak memory on SmolLM2-135M-Instruct, by batch size.

    .venv/bin/python eval/lineas_benchmark.py [--batches 8,16,32] [--steps 3] [--data ...davidson2017/train.csv]

Each configuration runs `bake learn lineas` in its own process (so the peak RSS is its own) for
--steps steps on the default site (each block's MLP input, 30 maps of 576 units); the model's
weights stay frozen, the maps take the gradient, and every step is one forward and one backward
pass through the whole model. Prints the table and writes eval/lineas_benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,16,32")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/toxicity/davidson2017/train.csv"))
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    args = ap.parse_args()
    rows = []
    for bs in [int(b) for b in args.batches.split(",")]:
        out = ROOT / "out" / "eval-work" / "lineas-benchmark" / f"b{bs}.safetensors"
        code = ("import json, sys; from bake.learn.learners import learn_lineas; "
                f"r = learn_lineas({args.model!r}, {args.data!r}, {str(out)!r}, samples={bs}, batch_size={bs}, "
                f"steps={args.steps}, progress=False); print(json.dumps(r))")
        t = time.time()
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            print(res.stderr[-2000:])
            return 1
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({"batch": bs, "seconds_per_step": r["seconds_per_step"], "peak_rss_mb": r["peak_rss_mb"],
                     "seconds_total": round(time.time() - t, 1), "modules": r["modules"], "units": r["units"]})
        print(f"batch {bs:>3}: {r['seconds_per_step']:.2f} s/step, peak RSS {r['peak_rss_mb']} MB", flush=True)
    import torch

    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}", "model": args.model, "steps": args.steps, "rows": rows,
              "command": "python eval/lineas_benchmark.py " + " ".join(sys.argv[1:])}
    (ROOT / "eval" / "lineas_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| texts per step (each side) | s per step | peak RSS (MB) |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['seconds_per_step']:.2f} | {r['peak_rss_mb']} |")
    print(f"\nwrote eval/lineas_benchmark.json; reproduce: {result['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
