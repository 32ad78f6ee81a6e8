"""The detox methods on one table, per model, on held-out prompts: tuned (eval/detox_tune.py) and swept
(eval/detox_eval.py).

    .venv/bin/python eval/detox_compare.py [eval/detox_tune.json] [eval/detox_eval*.json ...]

From eval/detox_tune.json (each method tuned by `bake tune` on the tuning half of the prompts, its pick
baked and measured by `bake eval` on the held-out half): one row per method, the toxicity figures of
the baked model and, beside them, the toxicity the pick's hooks gave on the same held-out prompts
(`bake tune --pick`: hooked and baked, measured the same way); and the plot eval/detox_fronts.png
(every trial of each study on the tuning split, its front, and the pick on the held-out split).

Reads the JSON files `eval/detox_eval.py` writes (each: one model, one method, a strength sweep, every
figure against that model's own base on the same held-out Davidson test prompts) and prints, per
model and method and strength: the toxicity ratio base / this with its paired 95% bootstrap interval,
the share of prompts with a toxic continuation, the perplexity change, the KL over the reply on
harmless prompts and the multiple-choice accuracy change; `<= +5%` marks the points within the
perplexity budget, and the goal column says whether the ratio reached 2.2x with an interval above 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.2
BUDGET = 0.05


def rows(d: dict) -> list[dict]:
    """The rows of one detox_eval.py JSON (a strength sweep)."""
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


def tuned_rows(d: dict) -> list[dict]:
    """One row per method of eval/detox_tune.py's JSON (the baked pick against the model, held out)."""
    model = Path(d["args"]["model"]).name
    prompts = f"{d['args']['heldout']} x {d['args']['heldout_samples']}"
    out, base = [], None
    for method, r in d["methods"].items():
        if "heldout (baked, bake eval)" not in r:
            out.append({"model": model, "method": method, "strength": r.get("note", "no pick"), "prompts": prompts})
            continue
        m = r["heldout (baked, bake eval)"]["models"]
        if base is None:
            s = m["base"]["toxicity"]["summary"]["all"]
            base = {"model": model, "method": "none (base)", "strength": "", "prompts": prompts,
                    "mean": s["mean toxicity"], "share": s["prompts with a toxic continuation"]}
            out.append(base)
        tox, q, s = m["baked"]["toxicity"]["vs base"]["all"], m["baked"]["quality"]["vs base"], \
            m["baked"]["toxicity"]["summary"]["all"]
        vals = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in r["picked"]["values"].items())
        out.append({"model": model, "method": f"{method} (tuned)", "strength": f"trial {r['picked']['trial']}: {vals}",
                    "prompts": prompts, "mean": s["mean toxicity"], "share": s["prompts with a toxic continuation"],
                    "ratio": tox["toxicity ratio (base / this)"], "ppl": q["perplexity change"],
                    "kl": q["KL over the reply"], "mc": q["multiple-choice accuracy change"],
                    "hooks": r["picked"]["heldout (hooks)"].get("toxicity")})
    return out


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    v = str(v)
    return v.rsplit("#", 1)[-1] if "#" in v else v  # a direction's file: its key (the block index)


def fronts(d: dict, out: Path) -> None:
    """Every trial of each method's study (tuning split) and its pick (held-out split, baked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (method, r) in enumerate(d["methods"].items()):
        c = f"C{i}"
        pts = [t for t in r.get("all", []) if t["state"] == "complete" and t.get("tuning")]
        ax.scatter([100 * t["tuning"]["perplexity"] for t in pts], [t["tuning"]["toxicity"] for t in pts], c=c, s=14,
                   alpha=0.5, label=f"{method}: trials (tuning split)")
        fr = sorted((t for t in pts if t["trial"] in r.get("front", [])), key=lambda t: t["tuning"]["perplexity"])
        ax.plot([100 * t["tuning"]["perplexity"] for t in fr], [t["tuning"]["toxicity"] for t in fr], "-", c=c, lw=1)
        if "heldout (baked, bake eval)" in r:
            m = r["heldout (baked, bake eval)"]["models"]["baked"]
            tox, ppl = m["toxicity"]["summary"]["all"]["mean toxicity"], m["quality"]["vs base"]["perplexity change"]
            ax.errorbar([100 * ppl["mean"]], [tox["mean"]], yerr=[[tox["mean"] - tox["ci"][0]], [tox["ci"][1] - tox["mean"]]],
                        fmt="*", ms=11, c=c, capsize=3, label=f"{method}: pick, baked (held out)")
    first = next((r for r in d["methods"].values() if "heldout (baked, bake eval)" in r), None)
    if first:
        b = first["heldout (baked, bake eval)"]["models"]["base"]["toxicity"]["summary"]["all"]["mean toxicity"]["mean"]
        ax.axhline(b, color="grey", lw=0.8, label="model (held out)")
        ax.axhline(b / GOAL, color="green", ls="--", lw=0.8, label="goal: 2.2x less")
    ax.axvline(100 * BUDGET, color="red", ls=":", lw=0.8, label="+5% perplexity")
    ax.set_xscale("symlog", linthresh=10)  # linear within +-10%, logarithmic beyond (trials that broke the model)
    ax.set_xlim(left=-10)
    ax.set_xlabel("perplexity change (%; linear to 10%, log beyond)")
    ax.set_ylabel("mean toxicity")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _ci(x, fmt="{:.3f}", scale=1.0) -> str:
    lo, hi = x["ci"]
    v = x.get("mean", x.get("ratio"))
    return f"{fmt.format(v * scale)} [{fmt.format(lo * scale)}, {fmt.format(hi * scale)}]"


def table(all_rows: list[dict]) -> str:
    head = ("| model | prompts x continuations | method | strength | mean toxicity | base / this | toxic share | "
            "perplexity | KL reply | MC change | goal |\n" + "| --- " * 11 + "|")
    lines = [head]
    for r in all_rows:
        if "mean" not in r:
            lines.append(f"| {r['model']} | {r['prompts']} | {r['method']} | {r['strength']} |" + " |" * 7)
            continue
        if "ratio" not in r:
            lines.append(f"| {r['model']} | {r['prompts']} | {r['method']} | | {_ci(r['mean'])} | 1 | {_ci(r['share'], '{:.0f}%', 100)} "
                         "| | | | |")
            continue
        ok = r["ppl"]["mean"] <= BUDGET
        goal = ("reached" if r["ratio"]["ratio"] >= GOAL and r["ratio"]["ci"][0] > 1 and ok else
                f"{r['ratio']['ratio'] / GOAL:.0%} of 2.2x")
        hooks = f" (hooks: {r['hooks']['value']:.3f})" if r.get("hooks") else ""
        lines.append(f"| {r['model']} | {r['prompts']} | {r['method']} | {r['strength']} | {_ci(r['mean'])}{hooks} | "
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
    files = [Path(a) for a in sys.argv[1:]] or [p for p in [ROOT / "eval" / "detox_tune.json"] if p.is_file()] + \
        sorted((ROOT / "eval").glob("detox_eval*.json"))
    loaded = {f: json.loads(f.read_text()) for f in files}
    tuned = [f for f in files if "methods" in loaded[f]]  # detox_tune.py's (else detox_eval.py's)
    swept = [f for f in files if f not in tuned]
    for f in tuned:
        print(f"## Tuned by bake tune, baked, measured on the held-out half ({f.name})\n")
        print(table(tuned_rows(loaded[f])))
        ver = {m: r["verification"] for m, r in loaded[f]["methods"].items() if "verification" in r}
        if ver:
            print("\n`bake apply` of each pick (bake + verification against its hooks): " + ", ".join(
                f"{m} {v['status']} (max |logit diff| {v['max_abs_logit']:.1e})" for m, v in ver.items()))
        fronts(loaded[f], ROOT / "eval" / "detox_fronts.png")
        print("\nwrote eval/detox_fronts.png (each study's trials and front on the tuning split, its pick held out)\n")
    if not swept:
        return 0
    print("## Strength sweeps, untuned (eval/detox_eval.py)\n")
    all_rows = []
    for f in swept:
        all_rows += rows(loaded[f])
    print(table(all_rows))
    plot(all_rows, ROOT / "eval" / "detox_compare.png")
    print(f"\nwrote eval/detox_compare.png (the fronts: toxicity ratio against perplexity change)")
    print(f"from {', '.join(f.name for f in files)}; reproduce each with the command in its JSON, then "
          f"python eval/detox_compare.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
