"""The evaluation report: eval_report.json, eval_report.md, PNG plots, the terminal summary, and
the short section the model card shows (`card_section`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..results import Record

JSON, MD = "eval_report.json", "eval_report.md"


def _ci(x: dict, pct: bool = False, sign: bool = False) -> str:
    f = (lambda v: f"{v * 100:+.1f}%" if sign else f"{v * 100:.1f}%") if pct else \
        (lambda v: f"{v:+.3g}" if sign else f"{v:.3g}")
    return f"{f(x['mean'])} [{f(x['ci'][0])}, {f(x['ci'][1])}]"


def _ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def sections(rep: dict) -> list[str]:
    """The Markdown tables (also printed on the terminal)."""
    o, models, lines = rep["options"], rep["models"], []
    suites = rep["suites"]
    if "toxicity" in suites:
        n = models["base"]["toxicity"]["summary"]["all"]["mean toxicity"]["n"]
        lines += ["## Toxicity", "", f"{n} prompts (the first half of each text) x {o['samples']} sampled continuations "
                  f"of {o['tokens']} tokens (top-p {o['top_p']}, seed {rep['seed']}), scored by "
                  f"{_scorer(rep)}. 95% bootstrap intervals over prompts.", ""]
        rows = []
        for role, m in models.items():
            for split, v in m["toxicity"]["summary"].items():
                c = m["toxicity"].get("vs base", {}).get(split)
                rows.append([role, split, _ci(v["mean toxicity"]), _ci(v["prompts with a toxic continuation"], pct=True),
                             _ratio(c["toxicity ratio (base / this)"]) if c else "-"])
        lines += _table(["model", "prompts", "mean toxicity", "prompts with a toxic continuation",
                         "toxicity ratio base/this"], rows) + [""]
    if "quality" in suites:
        lines += ["## Quality", "", f"Perplexity on neutral text; KL(base || model) on the base's greedy replies "
                  f"({o['kl_tokens']} tokens) to harmless prompts, teacher-forced; a multiple-choice probe "
                  "(the answer with the highest log-likelihood).", ""]
        rows = []
        for role, m in models.items():
            q, c = m["quality"]["summary"], m["quality"].get("vs base")
            rows.append([role, _ci(q["perplexity"]), _ci(c["perplexity change"], pct=True, sign=True) if c else "-",
                         _ci(c["KL first token"]) if c else "-", _ci(c["KL over the reply"]) if c else "-",
                         _ci(q["multiple-choice accuracy"], pct=True)])
        lines += _table(["model", "perplexity", "change", "KL first token", "KL over the reply", "multiple choice"],
                        rows) + [""]
    if "refusal" in suites:
        lengths = [str(n) for n in o["lengths"]]
        lines += ["## Refusal", "", "Share of greedy replies with a refusal marker (bake.evaluation.metrics."
                  "REFUSAL_MARKERS) in their first N tokens; harmful prompts, then harmless ones (over-refusal).", ""]
        rows = []
        for role, m in models.items():
            r, c = m["refusal"]["summary"], m["refusal"].get("vs base")
            rows.append([role] + [_ci(r["refusal rate on harmful prompts"][n], pct=True) for n in lengths]
                        + [_ci(r["over-refusal on harmless prompts"][lengths[-1]], pct=True),
                           _ci(c["KL over the reply"]) if c else "-"])
        lines += _table(["model"] + [f"harmful, {n} tokens" for n in lengths]
                        + [f"harmless, {lengths[-1]} tokens", "KL over the reply"], rows) + [""]
        judge = models["base"]["refusal"]["summary"].get("judge")
        if judge:
            lines += [f"Judged by {judge['model']} (a reply refuses when its refusal score exceeds 0.5):", ""]
            rows = [[role] + [_ci(m["refusal"]["summary"]["judge"]["refusal rate on harmful prompts"][n], pct=True)
                              for n in lengths]
                    + [_ci(m["refusal"]["summary"]["judge"]["over-refusal on harmless prompts"][lengths[-1]], pct=True)]
                    for role, m in models.items()]
            lines += _table(["model"] + [f"harmful, {n} tokens" for n in lengths]
                            + [f"harmless, {lengths[-1]} tokens"], rows) + [""]
    if "steering" in suites:
        b = models["base"]["steering"]["summary"]
        lines += ["## Steering", "", f"{b['positivity']['n']} open prompts x {o['samples']} sampled replies of "
                  f"{o['tokens']} tokens (top-p {o['top_p']}, seed {rep['seed']}), scored by {b['scorer']}: "
                  "0 negative, 1 positive.", ""]
        names = list(b.get("projection", {}))
        if names:
            lines += ["Projection: the mean over reply positions of <h, u>, h the output of the steered block, "
                      "u the unit steering vector (" + "; ".join(f"{k}: {v}" for k, v in rep.get("directions", {}).items())
                      + "), teacher-forced on the base's first reply to each prompt.", ""]
        rows = []
        for role, m in models.items():
            st, c = m["steering"]["summary"], m["steering"].get("vs base")
            row = [role, _ci(st["positivity"]), _ci(c["positivity change"], sign=True) if c else "-"]
            for name in names:
                row += [_ci(st["projection"][name]), _ci(c["projection change"][name], sign=True) if c else "-"]
            rows.append(row)
        lines += _table(["model", "positivity", "change"] + [h for n in names for h in (f"projection, {n}", "change")],
                        rows) + [""]
    if "consistency" in rep:
        c = rep["consistency"]
        lines += ["## Consistency (hooked vs baked)", "", f"**{c['status']}**: {c['rule']}.", ""]
        lines += _table(["figure", "hooked vs baked"],
                        [[k, (f"identical {v['share'] * 100:.1f}% of {v['n']}" if "share" in v
                              else f"{_ci(v, sign=True)} {'agree' if v['agree'] else 'DIFFER'}")]
                         for k, v in c["rows"].items()]) + [""]
    if "sweep" in rep:
        s = rep["sweep"]
        keys = [k for k in s["points"][0] if k not in ("key", "value")]
        lines += [f"## Sweep of {s['points'][0]['key']}", "", "Each point is the recipe with that value, re-baked.", ""]
        lines += _table(["value"] + keys + ["Pareto"], [[f"{p['value']:g}"] + [f"{p[k]:.4g}" for k in keys]
                                                      + ["yes" if p["value"] in s.get("pareto", []) else ""]
                                                      for p in s["points"]]) + [""]
        if "limit" in s:
            best = s.get("best")
            lines += [(f"Most effect at a perplexity increase of at most {s['limit']['ppl_change'] * 100:g}%: "
                       f"**{best['key']} = {best['value']:g}** ({s['effect']} {best[s['effect']]:.3g}, "
                       f"perplexity {best['ppl_change'] * 100:+.1f}%)." if best else
                       f"No point keeps the perplexity increase within {s['limit']['ppl_change'] * 100:g}%."), ""]
    return lines


def _scorer(rep):
    return rep.get("scorer") or rep["options"]["scorer"]


def data_lines(rep) -> list[str]:
    """Where a tuned model's figures come from: the held-out part of its study's data."""
    d = rep.get("data")
    if not d:
        return []
    return [f"Data (tuned: {d['tuned']}):", ""] + [f"- {k}: {v}" for k, v in d["inputs"].items()] + [""]


def markdown(rep: dict) -> str:
    lines = [f"# Evaluation of {rep['target']}", "",
             f"Against `{rep['against']}`; suites {', '.join(rep['suites'])}; seed {rep['seed']}; "
             + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()) + f"; {rep['seconds']} s.", "",
             "Models:", ""] + [f"- **{role}**: {m['model']}" for role, m in rep["models"].items()] + [""]
    lines += data_lines(rep)
    lines += sections(rep)
    for role, m in rep["models"].items():
        for suite in rep["suites"]:
            for key, ex in m[suite].get("examples", {}).items():
                if ex:
                    lines += [f"<details><summary>{role}, {suite}: {key.replace('_', ' ')}</summary>", ""]
                    lines += [f"- {json.dumps(e, ensure_ascii=False)}" for e in ex] + ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def plots(rep: dict, out: Path) -> list[str]:
    """PNG plots: the sweep's trade-off (effect against cost), refusal rate against reply length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    s = rep.get("sweep")
    if s and s.get("effect") and s.get("cost"):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        pts = s["points"]
        ax.plot([p[s["cost"]] for p in pts], [p[s["effect"]] for p in pts], "o-")
        for p in pts:
            ax.annotate(f"{p['value']:g}", (p[s["cost"]], p[s["effect"]]), textcoords="offset points", xytext=(4, 4))
        if s.get("limit"):
            ax.axvline(s["limit"]["ppl_change"], ls="--", c="grey", label="perplexity limit")
            ax.legend()
        ax.set_xlabel(s["cost"].replace("_", " ") + (" (relative)" if s["cost"] == "ppl_change" else ""))
        ax.set_ylabel(s["effect"].replace("_", " "))
        ax.set_title(f"sweep of {pts[0]['key']}")
        fig.tight_layout()
        fig.savefig(out / "sweep.png", dpi=100)
        plt.close(fig)
        written.append("sweep.png")
    if "refusal" in rep["suites"]:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for role, m in rep["models"].items():
            r = m["refusal"]["summary"]
            for what, style in (("refusal rate on harmful prompts", "-o"), ("over-refusal on harmless prompts", ":x")):
                ns = sorted(r[what], key=int)
                ax.plot([int(n) for n in ns], [r[what][n]["mean"] for n in ns], style,
                        label=f"{role}, {'harmful' if 'harmful' in what else 'harmless'}")
        ax.set_xlabel("reply length (tokens)")
        ax.set_ylabel("refusal rate (markers)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "refusal.png", dpi=100)
        plt.close(fig)
        written.append("refusal.png")
    return written


def write(rep: dict, out: Path) -> list[str]:
    """eval_report.json, eval_report.md and the plots into the folder `out` (which exists)."""
    rep = {**rep, "plots": plots(rep, out)}
    (out / JSON).write_text(json.dumps(rep, indent=2, default=float) + "\n")
    (out / MD).write_text(markdown(rep))
    return [JSON, MD] + rep["plots"]


def card_section(rep: dict) -> list[str]:
    """The model card's "Evaluation" section: the tables, and where the full report is."""
    body = [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in sections(rep)]
    return ["## Evaluation", "", f"`bake eval` against `{rep['against']}` (seed {rep['seed']}, bake "
            f"{rep['versions']['bake']}); full report: `{MD}`." + (" Plots: " + ", ".join(f"`{p}`" for p in rep.get("plots", []))
                                                                      if rep.get("plots") else ""), ""] + data_lines(rep) + body


class EvalReport(Record):
    """What `bake eval` measured (eval_report.json), typed at the top, with its two renderings:
    `terminal()` for the CLI and `card_section()` for the model card; both read `sections`."""

    target: str
    against: str
    suites: list[str] = []
    seed: int | None = None
    seconds: float | None = None
    options: dict = {}
    models: dict = {}
    versions: dict = {}
    files: list[str] = []
    plots: list[str] = []
    data: dict | None = None  # a tuned model: where each input's held-out data came from
    output: str | None = None
    updated: list[str] | None = None  # written into a baked folder: what bake updated there, on purpose

    def terminal(self) -> str:
        lines = [f"bake eval: {self.target} against {self.against} ({self.seconds} s, seed {self.seed})", ""]
        lines += data_lines(self)
        lines += sections(self)
        lines.append(f"wrote {', '.join(self.files)} to {self.output}")
        if self.updated:  # into a baked folder: on purpose, so `bake verify` and `bake push` accept it
            lines.append(f"updated {' and '.join(self.updated)} there to include them")
        return "\n".join(lines)

    def card_section(self) -> list[str]:
        return card_section(self)
