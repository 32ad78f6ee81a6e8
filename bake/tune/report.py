"""What `bake tune` prints and the card shows: the study (its front as a table) and a picked trial."""

from __future__ import annotations

from pathlib import Path

from ..results import Record
from .spec import constraint, metric


def _short(path: str) -> str:
    """A parameter's column name: its last key (`interventions[0].weights.kernel.peak` -> peak)."""
    parts = path.replace("]", "").replace("[", ".").split(".")
    return f"{parts[-2]}[{parts[-1]}]" if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _val(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(name: str, v) -> str:
    return "-" if v is None else metric(name).show(v)


class TuneReport(Record):
    recipe: str
    study: str
    storage: str
    folder: str
    objectives: list
    constraints: list
    trials: dict
    splits: dict
    front: list
    all: list
    cost: dict = {}

    def front_table(self) -> list[str]:
        rows = {r["number"]: r for r in self.all}
        metrics = list(dict.fromkeys([o["name"] for o in self.objectives]
                                     + [constraint(c).metric.spec for c in self.constraints]))
        params = list(next((r["values"] for r in self.all if r["values"]), {}))
        head = ["trial"] + [_short(p) for p in params] + metrics
        body = [[str(n)] + [_val(rows[n]["values"].get(p)) for p in params]
                + [_fmt(m, rows[n]["metrics"].get(m)) for m in metrics] for n in self.front]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        return ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in [head, *body]]

    def terminal(self) -> str:
        t = self.trials
        objs = ", ".join(f"{o['name']} ({o['direction']})" for o in self.objectives)
        lines = [f"bake tune {self.recipe}: study {self.study!r} in {self.storage}",
                 f"trials: {t['complete']} complete, {t['pruned']} pruned (cannot bake exactly), "
                 f"{t['failed or interrupted']} failed or interrupted; target {t['target']}",
                 f"objectives: {objs}" + (f"; constraints: {', '.join(self.constraints)}" if self.constraints else "")]
        for k, e in self.splits.items():
            lines.append(f"data {k}: {e['n']} items from {Path(e['source']).name} (sha256 {e['sha256'][:12]}) -> "
                         f"{e['tuning']['n']} tuning, {e['heldout']['n']} held out (never seen by the trials)")
        if self.cost:
            c = self.cost
            lines.append(f"cost: {c['seconds per trial']} s per trial = {c['trial / measurement']}x measuring the "
                         f"hooked model on the tuning split ({c['of which measuring the hooked model']} s)"
                         + (f"; the base, measured once: {c['base measured once (seconds)']} s"
                            if "base measured once (seconds)" in c else ""))
        lines.append("")
        if self.front:
            lines += ["Pareto front on the tuning split (feasible trials that no other beats on every objective):"]
            lines += ["  " + x for x in self.front_table()]
        else:
            lines.append("no feasible complete trial yet" + (" (every complete trial violates a constraint)"
                                                             if t["complete"] else ""))
        pruned = [r for r in self.all if r["state"] == "pruned"]
        reasons = {}
        for r in pruned:
            reasons.setdefault(r["pruned"], []).append(r["number"])
        for why, ns in reasons.items():
            lines.append(f"pruned {', '.join(map(str, ns[:8]))}{' ...' if len(ns) > 8 else ''}: {why}")
        lines += ["", f"report: {Path(self.folder) / 'tune_report.json'}" + (
            f"; plot: {self.get('plot')}" if self.get("plot") else "")]
        if self.front:
            lines.append(f"next: bake tune {self.recipe} --pick {self.front[0]} --out tuned.yaml   "
                         "(re-measures the trial on the held-out split and writes the recipe)")
        return "\n".join(lines)


class Picked(Record):
    recipe: str
    trial: int
    values: dict
    tuning: dict
    heldout: dict
    splits: dict
    next: str

    def terminal(self) -> str:
        lines = [f"trial {self.trial}: " + ", ".join(f"{_short(k)} = {_val(v)}" for k, v in self.values.items()), "",
                 "| metric | tuning split | held-out split (95% interval) |", "| --- | --- | --- |"]
        lines += held_rows(self.tuning, self.heldout)
        n = ", ".join(f"{k} {e['heldout']['measured']}" for k, e in self.splits.items())
        lines += ["", f"held out: {n} items the search never saw", f"wrote {self.recipe}", f"next: {self.next}"]
        return "\n".join(lines)


def held_rows(tuning: dict, heldout: dict) -> list[str]:
    rows = []
    for name, h in heldout.items():
        ci = f" [{_fmt(name, h['ci95'][0])}, {_fmt(name, h['ci95'][1])}]" if h.get("ci95") else ""
        rows.append(f"| {name} | {_fmt(name, tuning.get(name))} | {_fmt(name, h['value'])}{ci} |")
    return rows


def card_section(tuned: dict) -> list[str]:
    """The model card's account of a tuned recipe (its provenance.tuned)."""
    data = "; ".join(f"{k}: {e['tuning']['n']} tuning / {e['heldout']['n']} held out of {e['source']} "
                     f"(sha256 {e['sha256'][:12]})" for k, e in tuned["data"].items())
    vals = ", ".join(f"`{k}` = {_val(v)}" for k, v in tuned["values"].items())
    lines = ["## Tuning", "",
             f"The values {vals} were chosen by `bake tune` (trial {tuned['trial']} of study `{tuned['study']}`, "
             f"{tuned['trials finished']} trials, {tuned['sampler']}; objectives {', '.join(tuned['objectives'])}"
             + (f", constraints {', '.join(tuned['constraints'])}" if tuned["constraints"] else "")
             + f") on a tuning split of the data, and measured again, with the hooks, on the held-out split "
             f"that the search never saw. Data: {data}.", "",
             "| metric | tuning split | held-out split (95% interval) |", "| --- | --- | --- |"]
    return lines + held_rows(tuned["tuning"], tuned["heldout"])
