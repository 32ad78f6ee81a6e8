"""Which model types bake supports, proven by baking: every causal-LM type of the installed transformers.

    .venv/bin/python eval/coverage.py [--types llama,qwen3_moe,...] [--onnx-only] [--kinds lineas] [--json ...]

(with --types, those rows of an existing JSON of the same transformers version are replaced;
--onnx-only runs only the ONNX trial: of the rows that have none yet, or of the --types given;
--kinds proves only those kinds' cells of the existing rows: a new kind's column)

For each type transformers registers for causal LM, a tiny random model of its default config is
classified (decoder-only or not, numerically), probed for its adapter (`bake.families`), and for
each kind the probe calls exact (or exact through a config flag), baked with `bake.apply` and
verified against the hooks in float64; `approximate` kinds are baked with `approximate: true` and
their measured deviation is shown. A status counts only when the bake verified. Each decoder-only
type also gets the ONNX trial `bake export onnx` runs before baking (a tiny model exported with
torch.onnx, its logits compared in onnxruntime): `onnx` is "" or the reason it fails. Prints the
Markdown table that docs/families.md carries (paste it between its coverage-table markers), the
counts, and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bake import api  # noqa: E402
from bake.errors import BakeError, first_line  # noqa: E402
from bake.evaluation import coverage
from bake.model import tiny  # noqa: E402

TOL = 1e-4  # max abs logit difference, float32 checkpoints compared in float64: bake's own tolerance


def prove(model_type: str, statuses: dict, tmp: Path, kinds=None) -> dict:
    """Bake and verify each kind the probe supports (of `kinds`, default all); returns kind -> cell text."""
    kinds = list(kinds or coverage.KINDS)
    statuses = {k: statuses[k] for k in kinds}
    if all(st == "refused" for st, _ in statuses.values()):
        return dict(statuses)
    model = tmp / "model"
    tiny.save(coverage.default_config(model_type), model)
    arts = coverage.artifacts(model, tmp)
    cells = {}
    for kind in kinds:
        st, why = statuses[kind]
        if st == "refused":
            cells[kind] = ("refused", why)
            continue
        iv = dict(arts[kind], **({"approximate": True} if st == "approximate" else {}))
        recipe = {"model": str(model), "interventions": [iv], "verify": {"generate_tokens": 4}}
        try:
            v = api.apply(recipe, output=tmp / f"out-{kind}", progress=False)["verification"]
        except BakeError as e:
            cells[kind] = ("failed", first_line(e)[:200])
            continue
        err = v["metrics"]["max_abs_logit"]
        if st == "approximate":
            cells[kind] = ("approximate", f"max |dlogit| {err:.2g}")
        elif v["status"] == "passed" and err <= TOL:
            cells[kind] = (st, why if st != "exact" else f"max |dlogit| {err:.1g}")
        else:
            cells[kind] = ("failed", f"verification {v['status']}: max |dlogit| {err:.2g}")
    return cells


def main() -> int:
    import resource

    # a config whose tiny instance is not tiny must fail as a MemoryError, not take the machine down
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", help="comma-separated model types (default: all)")
    ap.add_argument("--json", default=str(ROOT / "eval" / "coverage.json"))
    ap.add_argument("--onnx-only", action="store_true", help="only run the ONNX trial (rows without one, or --types)")
    ap.add_argument("--kinds", help="comma-separated kinds: prove only their cells, merged into the existing JSON "
                                    "(a new kind's column; no ONNX trial)")
    args = ap.parse_args()
    import transformers

    if args.onnx_only:
        return onnx_only(args)
    if args.kinds:
        return kinds_only(args)

    types = args.types.split(",") if args.types else coverage.causal_lm_types()
    rows, t0 = [], time.time()
    for j, mt in enumerate(types):
        t = time.time()
        row = coverage.status(mt)
        cells = {}
        if row.decoder and row.status:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    cells = prove(mt, row.status, Path(tmp))
                except Exception as e:  # noqa: BLE001 - a type whose tiny model cannot be saved or reloaded
                    cells = {k: ("failed", f"{type(e).__name__}: {first_line(e)[:160]}") for k in coverage.KINDS}
        rows.append({"model_type": mt, "decoder": row.decoder, "why": row.why, "cells": cells})
        if row.decoder is not False:
            rows[-1]["onnx"] = onnx_trial(mt)
        print(f"[{j + 1}/{len(types)}] {mt}: " + (", ".join(f"{k}={c[0]}" for k, c in cells.items())
                                                    or (row.why or "")), f"({time.time() - t:.1f}s)", flush=True)
    print(f"\n{len(types)} types in {time.time() - t0:.0f} s")
    return write(args, rows, bool(args.types))


def onnx_trial(model_type: str) -> str:
    from bake.exporters import onnx as export_onnx

    try:
        return export_onnx.trial(coverage.default_config(model_type))
    except Exception as e:  # noqa: BLE001 - e.g. a MemoryError under the address-space limit
        return f"{type(e).__name__}: {first_line(e)[:160]}"


def onnx_only(args) -> int:
    old = json.loads(Path(args.json).read_text())
    rows, t0 = old["rows"], time.time()
    want = set(args.types.split(",")) if args.types else None
    todo = [r for r in rows if r["decoder"] is not False and (r["model_type"] in want if want else "onnx" not in r)]
    for j, r in enumerate(todo):
        t = time.time()
        r["onnx"] = onnx_trial(r["model_type"])
        print(f"[{j + 1}/{len(todo)}] {r['model_type']}: onnx {'yes' if r['onnx'] == '' else r['onnx'][:120]} "
              f"({time.time() - t:.1f}s)", flush=True)
        save(args, rows)  # an interrupted run keeps what it tried
    print(f"\n{len(todo)} ONNX trials in {time.time() - t0:.0f} s")
    return write(args, rows, False)


def kinds_only(args) -> int:
    kinds = args.kinds.split(",")
    unknown = set(kinds) - set(coverage.KINDS)
    if unknown:
        raise SystemExit(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {', '.join(coverage.KINDS)}")
    old = json.loads(Path(args.json).read_text())
    rows, t0 = old["rows"], time.time()
    want = set(args.types.split(",")) if args.types else None
    todo = [r for r in rows if r["decoder"] and r["cells"] and (want is None or r["model_type"] in want)]
    for j, r in enumerate(todo):
        t = time.time()
        row = coverage.status(r["model_type"])
        with tempfile.TemporaryDirectory() as tmp:
            try:
                cells = prove(r["model_type"], row.status, Path(tmp), kinds)
            except Exception as e:  # noqa: BLE001 - as in main
                cells = {k: ("failed", f"{type(e).__name__}: {first_line(e)[:160]}") for k in kinds}
        r["cells"].update(cells)
        print(f"[{j + 1}/{len(todo)}] {r['model_type']}: " + ", ".join(f"{k}={c[0]}" for k, c in cells.items()),
              f"({time.time() - t:.1f}s)", flush=True)
    print(f"\n{len(todo)} types in {time.time() - t0:.0f} s")
    return write(args, rows, False)


def write(args, rows, merge: bool) -> int:
    import transformers

    if merge and Path(args.json).is_file():  # a partial run updates those rows of the full table
        old = json.loads(Path(args.json).read_text())
        if old["transformers"] == transformers.__version__:
            mine = {r["model_type"]: r for r in rows}
            rows = [mine.pop(r["model_type"], r) for r in old["rows"]] + list(mine.values())
    dec = [r for r in rows if r["decoder"] is not False]
    print(f"transformers {transformers.__version__}: {len(rows)} causal-LM types, {len(dec)} decoder-only "
          f"(or undecided), {len(rows) - len(dec)} not decoder-only\n")
    print(coverage.table(rows))
    save(args, rows)
    print(f"\nwritten: {args.json}\npaste the table above into docs/families.md, between its coverage-table markers"
          "\nreproduce: .venv/bin/python eval/coverage.py  (ONNX column only: --onnx-only)")
    return 0


def save(args, rows) -> None:
    import transformers

    tmp = Path(args.json).with_suffix(".tmp")
    tmp.write_text(json.dumps({"transformers": transformers.__version__, "rows": rows}, indent=1))
    tmp.replace(args.json)


if __name__ == "__main__":
    sys.exit(main())
