"""Fuzz bake's commands with many generated malformed inputs (the suite runs 3 fixed ones per target).

Each example is a fresh process on a tiny random Llama (tests/fuzzing.py): `bake apply` with a
spoiled recipe, config.json, shard index, artifact file, config sizes or header dtypes; `bake learn
aura` and `bake eval` with spoiled data files and counts; `bake push` with bad revisions, repo ids
and an endpoint holding credentials. The contract is checked for every input (exit 0 or 2 with one
line, no traceback, no secret printed, nothing left at the output, inputs unchanged); the first
violation stops the run and is printed with hypothesis's shrunk example.

    .venv/bin/python eval/fuzz_cli.py --examples 50            # per target
    .venv/bin/python eval/fuzz_cli.py --examples 20 --targets recipe artifact --seed 7
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import bake  # noqa: E402
import fuzzing  # noqa: E402
from tiny import COMMON, add_tokenizer, build  # noqa: E402

TARGETS = fuzzing.TARGETS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=25, help="examples per target")
    ap.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bake-fuzz-eval-"))
    model = add_tokenizer(build("llama", base / "model"))
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(0)), base / "v.pt")
    baked = base / "baked"  # what the push target uploads
    bake.apply(fuzzing.valid_recipe(model, base / "v.pt"), output=baked, progress=False)
    counts: dict[str, Counter] = {t: Counter() for t in args.targets}
    seconds: dict[str, float] = {}

    def one(target, draw):
        root, recipe, m, out = fuzzing.workspace(model, base / "v.pt", parent=base)
        try:
            counts[target][fuzzing.check(recipe, m, out, fuzzing.prepare(target, draw, recipe, m), target, baked)] += 1
        finally:
            shutil.rmtree(root, ignore_errors=True)

    failed = None
    for target in args.targets:
        t0 = time.time()

        @seed(args.seed)
        @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(data=fuzzing.st.data())
        def run(data):
            one(target, data.draw)

        try:
            run()
        except AssertionError as e:
            failed = f"{target}: {e}"
        seconds[target] = round(time.time() - t0, 1)
        if failed:
            break
    shutil.rmtree(base, ignore_errors=True)

    print(f"{'target':<10} {'examples':>8} {'exit 0':>7} {'exit 2':>7} {'seconds':>8}")
    for t, c in counts.items():
        if t in seconds:
            print(f"{t:<10} {sum(c.values()):>8} {c[0]:>7} {c[2]:>7} {seconds[t]:>8}")
    print("contract held for every example" if not failed else f"CONTRACT VIOLATED\n{failed}")
    print(f"reproduce: .venv/bin/python eval/fuzz_cli.py --examples {args.examples} --seed {args.seed} "
          f"--targets {' '.join(args.targets)}")
    if args.json:
        import datetime
        import os
        import platform

        Path(args.json).write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "hardware": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": f".venv/bin/python eval/fuzz_cli.py --examples {args.examples} --seed {args.seed} "
                       f"--targets {' '.join(args.targets)} --json {args.json}",
            "counts": {t: dict(c) for t, c in counts.items()}, "seconds": seconds, "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
