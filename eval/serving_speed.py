"""Serving speed: tokens per second of the base, baked and hooked SmolLM2 in one run.

    .venv/bin/python eval/serving_speed.py [--recipe recipes/smollm2-demo.yaml] [--tokens 128] [--rounds 3]

Bakes the recipe into a temp folder (module-local checks only: the point here is speed), then
times greedy generation of `--tokens` new tokens (end of sequence suppressed) with plain
transformers, float32, batch 1 and 8 (the same chat prompt repeated, so no padding), for the base
model, the baked checkpoint and the base model with the recipe's hooks attached. Rounds
interleave the three models, and the median round is reported. The baked model runs the stock
architecture with changed weights (and at most a few added biases), so it should equal the base
within noise; the hooks cost a Python call per hooked module per step. Prints a table and writes
eval/serving_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bake import api  # noqa: E402
from bake.compile.hooks import hooked  # noqa: E402
from bake.model.loading import load_model, load_tokenizer  # noqa: E402
from bake.recipe import schema as recipe_mod  # noqa: E402


@torch.no_grad()
def generate(model, ids, n: int) -> float:
    t = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                   do_sample=False, pad_token_id=0)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes/smollm2-demo.yaml"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    loaded = recipe_mod.load(args.recipe)
    recipe = loaded.model_copy(update={"export": ["hf"]})  # the exported formats are not timed here
    recipe.base_dir = loaded.base_dir
    with tempfile.TemporaryDirectory() as tmp:
        plan = api.plan(recipe, progress=False)
        report = api.apply(recipe, output=Path(tmp) / "baked", progress=False, verify_mode="local")
        base = load_model(plan.checkpoint.path, trust_remote_code=False)
        baked = load_model(Path(tmp) / "baked", trust_remote_code=False)
        tok = load_tokenizer(plan.checkpoint.path, trust_remote_code=False)
        prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me about your day."}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        times: dict[tuple[str, int], list[float]] = {}
        for batch in (1, 8):
            ids = prompt.repeat(batch, 1)
            generate(base, ids, 4)  # warm-up
            for _ in range(args.rounds):
                times.setdefault(("base", batch), []).append(generate(base, ids, args.tokens))
                times.setdefault(("baked", batch), []).append(generate(baked, ids, args.tokens))
                with hooked(base, plan.hooks):
                    times.setdefault(("hooked", batch), []).append(generate(base, ids, args.tokens))
    shown = Path(args.recipe).resolve()
    shown = shown.relative_to(ROOT) if ROOT in shown.parents else shown
    out = {"recipe": str(shown), "tokens": args.tokens, "rounds": args.rounds,
                     "hooks": len(plan.hooks), "edits": len(report["edits"]),
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                     "command": "eval/serving_speed.py " + " ".join(sys.argv[1:]), "results": []}
    print(f"{'model':<8} {'batch':>5} {'tokens/s':>10} {'vs base':>8}  (median of {args.rounds} rounds, "
          f"{args.tokens} new tokens, float32, {len(plan.hooks)} hooks)")
    for batch in (1, 8):
        base_s = statistics.median(times["base", batch])
        for name in ("base", "baked", "hooked"):
            s = statistics.median(times[name, batch])
            tps = batch * args.tokens / s
            print(f"{name:<8} {batch:>5} {tps:>10.1f} {base_s / s:>8.3f}  (rounds: "
                  + ", ".join(f"{batch * args.tokens / x:.1f}" for x in times[name, batch]) + ")")
            out["results"].append({"model": name, "batch": batch, "tokens_per_s": tps, "relative_to_base": base_s / s,
                                   "rounds_s": times[name, batch]})
    (ROOT / "eval" / "serving_speed.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
