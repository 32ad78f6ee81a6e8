"""One table of the detox methods measured by eval/detox_eval.py, per model, on held-out prompts.

    .venv/bin/python eval/detox_compare.py [eval/detox_eval*.json ...]

Reads the JSON files `eval/detox_eval.py` writes (each: one model, one method, a strength sweep, every
figure against that model's own base on the same held-out Davidson test prompts) and prints, per
model and method and strength: the toxicity ratio base / this with its paired 95% bootstrap interval,
the share of prompts with a toxic continuation, the perplexity change, the KL over the reply on
harmless prompts and the multiple-choice accuracy change; `<= +5%` marks the points within the
perplexity budget, and the goal column says whether the ratio reached 2.2x with an interval above 1.
What it does not do yet (issue 31, step 4): tune each method with `bake tune` on the training split,
and the toxicity-direction ablation and mean-shift steering rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.2
BUDGET = 0.05


def rows(path: Path) -> list[dict]:
    d = json.loads(path.read_text())
    args, models = dict(d["args"]), d["sweep"]["models"]
    args["model"] = Path(args.get("model", "builtin:smollm2-135m-instruct")).name  # a folder: its name
    method = args.get("method", "aura")
    prompts = f"{args['prompts']} x {args['samples']}"
    out = []
    for name, m in models.items():
        if name == "base":
            s = m["toxicity"]["summary"]["all"]
            out.append({"model": args["model"], "method": "none (base)", "strength": "", "prompts": prompts,
                        "mean": s["mean toxicity"], "share": s["prompts with a toxic continuation"]})
            continue
        tox, q = m["toxicity"]["vs base"]["all"], m["quality"]["vs base"]
        s = m["toxicity"]["summary"]["all"]
        out.append({"model": args["model"], "method": method, "strength": name.split("=")[-1], "prompts": prompts,
                    "mean": s["mean toxicity"], "share": s["prompts with a toxic continuation"],
                    "ratio": tox["toxicity ratio (base / this)"], "ppl": q["perplexity change"],
                    "kl": q["KL over the reply"], "mc": q["multiple-choice accuracy change"]})
    return out


def _ci(x, fmt="{:.3f}", scale=1.0) -> str:
    lo, hi = x["ci"]
    v = x.get("mean", x.get("ratio"))
    return f"{fmt.format(v * scale)} [{fmt.format(lo * scale)}, {fmt.format(hi * scale)}]"


def table(all_rows: list[dict]) -> str:
    head = ("| model | prompts x continuations | method | strength | mean toxicity | base / this | toxic share | "
            "perplexity | KL reply | MC change | goal |\n" + "| --- " * 11 + "|")
    lines = [head]
    for r in all_rows:
        if "ratio" not in r:
            lines.append(f"| {r['model']} | {r['prompts']} | {r['method']} | | {_ci(r['mean'])} | 1 | {_ci(r['share'], '{:.0f}%', 100)} "
                         "| | | | |")
            continue
        ok = r["ppl"]["mean"] <= BUDGET
        goal = ("reached" if r["ratio"]["ratio"] >= GOAL and r["ratio"]["ci"][0] > 1 and ok else
                f"{r['ratio']['ratio'] / GOAL:.0%} of 2.2x")
        lines.append(f"| {r['model']} | {r['prompts']} | {r['method']} | {r['strength']} | {_ci(r['mean'])} | "
                     f"{_ci(r['ratio'], '{:.2f}')}x | {_ci(r['share'], '{:.0f}%', 100)} | "
                     f"{_ci(r['ppl'], '{:+.1f}%', 100)}{'' if ok else ' (over +5%)'} | {r['kl']['mean']:.4f} | "
                     f"{r['mc']['mean']:+.2f} | {goal} |")
    return "\n".join(lines)


def plot(all_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict = {}
    for r in all_rows:
        if "ratio" in r:
            groups.setdefault((r["model"].split(":")[-1], r["method"]), []).append(r)
    for (model, method), rs in groups.items():
        x = [100 * r["ppl"]["mean"] for r in rs]
        y = [r["ratio"]["ratio"] for r in rs]
        err = [[r["ratio"]["ratio"] - r["ratio"]["ci"][0] for r in rs], [r["ratio"]["ci"][1] - r["ratio"]["ratio"]
                                                                         for r in rs]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{model}: {method}")
        for r, xi, yi in zip(rs, x, y):
            ax.annotate(r["strength"], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(1, color="grey", lw=0.8)
    ax.axhline(GOAL, color="green", ls="--", lw=0.8, label="goal 2.2x")
    ax.axvline(100 * BUDGET, color="red", ls=":", lw=0.8, label="+5% perplexity")
    ax.set_xlabel("perplexity change (%)")
    ax.set_ylabel("toxicity ratio base / this (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    files = [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "eval").glob("detox_eval*.json"))
    all_rows = []
    for f in files:
        all_rows += rows(f)
    print(table(all_rows))
    plot(all_rows, ROOT / "eval" / "detox_compare.png")
    print(f"\nwrote eval/detox_compare.png (the fronts: toxicity ratio against perplexity change)")
    print(f"from {', '.join(f.name for f in files)}; reproduce each with the command in its JSON, then "
          f"python eval/detox_compare.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
