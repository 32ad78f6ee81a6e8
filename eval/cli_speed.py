"""How long a newcomer waits: `bake plan` with a cold and a warm family-probe cache, and the greedy
part of verification done the old way (`model.generate` on both models, one prompt at a time)
against bake's (the hooked model decodes all prompts as one batch; the baked model follows its
tokens in one teacher-forced pass), on SmolLM2-135M-Instruct.

    .venv/bin/python eval/cli_speed.py [--json eval/cli_speed.json]

It needs the demo's baked folder (`make demo`, or `bake apply recipes/smollm2-demo.yaml`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BAKE = str(Path(sys.executable).parent / "bake")


def plan_times(recipe: Path) -> dict:
    """Seconds of `bake plan` in a fresh process, with the family probe's cache emptied first (cold),
    then again (warm). The demo's learned artifacts are cached either way: nothing is learned."""
    out = {}
    for label in ("cold", "warm"):
        t = time.perf_counter()
        subprocess.run([BAKE, "plan", str(recipe), "-q"], check=True, capture_output=True)
        out[label] = round(time.perf_counter() - t, 1)
    return out


def clear_probe_cache() -> int:
    from bake.model.source import cache_dir

    n = 0
    for f in (cache_dir() / "families").glob("*"):
        f.unlink()
        n += 1
    return n


def greedy_times(folder: Path) -> dict:
    from bake.compile.hooks import hooked
    from bake.model.loading import greedy, greedy_many, load_model, load_tokenizer, probe_inputs
    from bake.planner import plan
    from bake.recipe.schema import load
    from bake.verification.verifier import _follow

    p = plan(load(folder / "recipe.yaml"), progress=False)
    tok = load_tokenizer(folder, trust_remote_code=False)
    ref = load_model(p.checkpoint.path, trust_remote_code=False, dtype=torch.float64)
    baked = load_model(folder, trust_remote_code=False, dtype=torch.float64)
    inputs = [i for _, i in probe_inputs(tok, p.recipe.verify.prompts, ref.config.vocab_size)]
    n = p.recipe.verify.generate_tokens
    pad = tok.pad_token_id or 0

    def generate(model, ids):
        seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=pad)
        return seq[0, ids.shape[1]:].tolist()

    t = time.perf_counter()
    with hooked(ref, p.hooks):
        old_ref = [generate(ref, i) for i in inputs]
    old_baked = [generate(baked, i) for i in inputs]
    old = time.perf_counter() - t
    t = time.perf_counter()
    with hooked(ref, p.hooks):
        new_ref = greedy_many(ref, inputs, n, pad)
    choices = [_follow(baked, i, g)[2] for i, g in zip(inputs, new_ref)]
    new = time.perf_counter() - t
    with hooked(ref, p.hooks):
        single = [greedy(ref, i, n)[1] for i in inputs]
    return {"prompts": len(inputs), "tokens": n, "generate_both_seconds": round(old, 1),
            "batched_and_followed_seconds": round(new, 1),
            "tokens_identical_to_generate": new_ref == old_ref and single == old_ref,
            "baked_generate_equals_followed_choices": old_baked == choices}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(ROOT / "out" / "smollm2-demo"))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    folder = Path(args.folder)
    if not (folder / "recipe.yaml").is_file():
        raise SystemExit(f"{folder}: no baked folder; run `make demo` first")
    cleared = clear_probe_cache()
    res = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores",
           "plan_seconds": plan_times(ROOT / "recipes" / "smollm2-demo.yaml"), "probe_entries_cleared": cleared,
           "greedy": greedy_times(folder)}
    print(json.dumps(res, indent=2))
    print(f"\nreproduce: {Path(sys.executable).relative_to(ROOT) if ROOT in Path(sys.executable).parents else sys.executable} "
          f"eval/cli_speed.py")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
