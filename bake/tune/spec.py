"""A recipe's `tune:` block: what `bake tune` searches, what it optimizes, what it must respect.

```yaml
tune:
  params:                                   # a recipe path -> its range (or choices)
    interventions[0].weights.kernel.peak: {low: 0.5, high: 1.5}
    interventions[0].weights.kernel.distance: {low: 2, high: 20, int: true}
    interventions[0].direction.key: {low: 8, high: 24, format: "candidates[-1, {:.2f}]"}
    interventions[0].norm_preserving: {choices: [null, rows]}
  objectives: [refusal@128, kl]             # each minimized or maximized as OBJECTIVES says
  constraints: ["kl <= 0.1", "perplexity <= +5%"]
  trials: 60                                # finished trials the study aims at (all processes together)
  startup: 20                               # random trials before TPE models the front
  seed: 0
  holdout: 0.5                              # share of every data input held out of the search
  data: {harmful: data/harmful.json}        # suite inputs (bake eval --data); the rest: bake's defaults
  limit: 32                                 # prompts per input on the tuning split (a seeded sample)
  eval: {samples: 3, tokens: 20}            # other bake eval options for the trials
```

A path is one `--sweep` accepts (a full path, or the last name of one numeric key) or a key a
kind's schema accepts under an existing mapping (`norm_preserving`, `direction.key`). Every value
a range or choice allows is checked by parsing the recipe with it set, so a bad path or bound is an
error that names the key before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from pydantic import Field, ValidationError, model_validator

from ..errors import RecipeError, did_you_mean
from ..kinds.base import Float, Int, StrictModel

# --- objectives: name -> where its value comes from and which way is better -------------------------


@dataclass(frozen=True)
class Objective:
    name: str
    suite: str             # the bake eval suite that measures it ("kl": refusal when measured, else quality)
    direction: str         # minimize | maximize
    about: str
    value: Callable        # (comparison vs base, raw figures, argument) -> float
    unit: str = ""         # "%": a fraction shown and bounded in percent
    interval: Callable | None = None  # (comparison, raw, argument) -> its 95% bootstrap interval


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _ci(x) -> list[float]:
    from ..evaluation.metrics import bootstrap_ci

    return list(bootstrap_ci(list(map(float, x))))


def _projection(c, raw, arg):
    ch = c.get("projection change") or {}
    if not ch:
        raise RecipeError("objective projection: the recipe has no steering direction to project on")
    return float(np.mean([v["mean"] for v in ch.values()]))


OBJECTIVES = {o.name: o for o in (
    Objective("refusal", "refusal", "minimize", "refusal rate on harmful prompts at N tokens (refusal@N)",
              lambda c, raw, n: _mean(raw["harmful"][str(n)]), interval=lambda c, raw, n: _ci(raw["harmful"][str(n)])),
    Objective("over_refusal", "refusal", "minimize", "refusal rate on harmless prompts at N tokens (over_refusal@N)",
              lambda c, raw, n: _mean(raw["harmless"][str(n)]), interval=lambda c, raw, n: _ci(raw["harmless"][str(n)])),
    Objective("kl", "kl", "minimize", "KL(base || this) averaged over the base's reply to harmless prompts",
              lambda c, raw, _: c["KL over the reply"]["mean"], interval=lambda c, raw, _: c["KL over the reply"]["ci"]),
    Objective("kl_first", "kl", "minimize", "KL(base || this) at the first reply token",
              lambda c, raw, _: c["KL first token"]["mean"], interval=lambda c, raw, _: c["KL first token"]["ci"]),
    Objective("perplexity", "quality", "minimize", "perplexity change on neutral text (a fraction: +5% = 0.05)",
              lambda c, raw, _: c["perplexity change"]["mean"], "%",
              interval=lambda c, raw, _: c["perplexity change"]["ci"]),
    Objective("mc", "quality", "maximize", "multiple-choice accuracy change",
              lambda c, raw, _: c["multiple-choice accuracy change"]["mean"],
              interval=lambda c, raw, _: c["multiple-choice accuracy change"]["ci"]),
    Objective("toxicity", "toxicity", "minimize", "mean toxicity of sampled continuations",
              lambda c, raw, _: _mean(raw["mean"]), interval=lambda c, raw, _: _ci(raw["mean"])),
    Objective("toxicity_ratio", "toxicity", "maximize", "base mean toxicity / this model's",
              lambda c, raw, _: c["all"]["toxicity ratio (base / this)"]["ratio"],
              interval=lambda c, raw, _: c["all"]["toxicity ratio (base / this)"]["ci"]),
    Objective("toxic_share", "toxicity", "minimize", "share of prompts with a toxic continuation",
              lambda c, raw, _: _mean(raw["any"]), interval=lambda c, raw, _: _ci(raw["any"])),
    Objective("positivity", "steering", "maximize", "positivity change of sampled replies",
              lambda c, raw, _: c["positivity change"]["mean"], interval=lambda c, raw, _: c["positivity change"]["ci"]),
    Objective("projection", "steering", "maximize", "change of the hidden states' projection on the steering direction",
              _projection),
)}


@dataclass(frozen=True)
class Metric:
    """An objective with its argument: `refusal@128` -> (OBJECTIVES["refusal"], 128)."""

    spec: str
    objective: Objective
    arg: int | None

    @property
    def direction(self) -> str:
        return self.objective.direction

    def suite(self, measured: set[str]) -> str:
        if self.objective.suite == "kl":
            return "refusal" if "refusal" in measured else "quality"
        return self.objective.suite

    def value(self, comparison: dict, raw: dict) -> float:
        return float(self.objective.value(comparison, raw, self.arg))

    def interval(self, comparison: dict, raw: dict) -> list[float] | None:
        f = self.objective.interval
        return [float(x) for x in f(comparison, raw, self.arg)] if f else None

    def show(self, v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:+.1%}" if self.objective.unit == "%" else f"{v:.4g}"


def metric(spec: str) -> Metric:
    name, at, arg = str(spec).strip().partition("@")
    o = OBJECTIVES.get(name)
    if o is None:
        raise ValueError(f"unknown objective {spec!r}{did_you_mean(name, OBJECTIVES)}; known: "
                         + ", ".join(f"{k}@N" if k.endswith("refusal") else k for k in OBJECTIVES))
    needs_n = name in ("refusal", "over_refusal")
    if needs_n != bool(at):
        raise ValueError(f"objective {spec!r}: " + (f"say the reply length, e.g. {name}@128" if needs_n
                                                    else f"{name} takes no @N"))
    if needs_n and not (arg.isdigit() and 0 < int(arg) <= 4096):
        raise ValueError(f"objective {spec!r}: N is a reply length in tokens (1..4096)")
    return Metric(str(spec).strip(), o, int(arg) if needs_n else None)


_CONSTRAINT = re.compile(r"^\s*([\w@]+)\s*(<=|>=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Constraint:
    spec: str
    metric: Metric
    op: str
    bound: float

    def excess(self, v: float) -> float:
        """How far `v` is past the bound (<= 0: satisfied), as Optuna's constraints read it."""
        return v - self.bound if self.op == "<=" else self.bound - v

    def ok(self, v: float) -> bool:
        return self.excess(v) <= 0


def constraint(spec: str) -> Constraint:
    m = _CONSTRAINT.match(str(spec))
    if not m:
        raise ValueError(f"constraint {spec!r}: write NAME <= VALUE or NAME >= VALUE (e.g. 'kl <= 0.1', "
                         "'perplexity <= +5%')")
    name, op, num, pct = m.groups()
    met = metric(name)
    if pct and met.objective.unit != "%":
        raise ValueError(f"constraint {spec!r}: {name} is not a percentage; drop the %")
    return Constraint(str(spec).strip(), met, op, float(num) / (100 if pct else 1))


# --- the block ------------------------------------------------------------------------------------

class Param(StrictModel):
    """One searched value: a range (`low`, `high`; `log`, `int`, `step`) or `choices`; `format` turns
    the number into a string (a fractional direction index into `candidates[p, x]`)."""

    low: Float | None = None
    high: Float | None = None
    log: bool = False
    int: bool = False
    step: Float | None = Field(default=None, gt=0)
    choices: list[Any] | None = Field(default=None, min_length=1)
    format: str | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.int or self.step or self.format:
                raise ValueError("give `choices` or a range (`low`, `high`, ...), not both")
            if any(not isinstance(c, (str, int, float, bool, type(None))) for c in self.choices):
                raise ValueError("choices are plain values (numbers, strings, true/false, null)")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs `low` and `high` (or give `choices`)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step:
            raise ValueError("log: true and step cannot be combined")
        if self.int and (not float(self.low).is_integer() or not float(self.high).is_integer()):
            raise ValueError("int: true needs whole low and high")
        if self.format is not None:
            try:
                self.format.format(self.low)
            except (ValueError, IndexError, KeyError) as e:
                raise ValueError(f"format {self.format!r}: not a format for one number ({e})") from None
        return self

    def bounds(self) -> list:
        """The values a check sets: the ends of a range, every choice."""
        if self.choices is not None:
            return list(self.choices)
        return [self.render(self.low), self.render(self.high)]

    def render(self, v):
        """A sampled number as the recipe holds it."""
        if self.format is not None:
            return self.format.format(v)
        return int(round(v)) if self.int else float(v)

    def suggest(self, trial, name: str):
        """The value an Optuna trial samples for this parameter (as the recipe holds it)."""
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.int:
            return self.render(trial.suggest_int(name, int(self.low), int(self.high), log=self.log,
                                                 step=int(self.step or 1)))
        return self.render(trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step))


class EvalOptions(StrictModel):
    """The `bake eval` options a trial runs with (the rest: bake eval's defaults)."""

    samples: Int | None = Field(default=None, ge=1, le=64)
    tokens: Int | None = Field(default=None, ge=1, le=4096)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    kl_tokens: Int | None = Field(default=None, ge=1, le=4096)
    batch_size: Int | None = Field(default=None, ge=1, le=4096)
    scorer: str | None = None


class Tune(StrictModel):
    params: dict[str, Param] = Field(min_length=1)
    objectives: list[str] = Field(min_length=1, max_length=4)
    constraints: list[str] = Field(default_factory=list)
    trials: Int = Field(default=60, ge=1, le=100_000)
    startup: Int | None = Field(default=None, ge=0)
    seed: Int = 0
    holdout: Float = Field(default=0.5, gt=0, lt=1)
    data: dict[str, str] = Field(default_factory=dict)
    limit: Int | None = Field(default=None, ge=1)
    heldout_limit: Int | None = Field(default=None, ge=1)
    eval: EvalOptions = Field(default_factory=EvalOptions)

    @property
    def metrics(self) -> list[Metric]:
        return [metric(o) for o in self.objectives]

    @property
    def bounds(self) -> list[Constraint]:
        return [constraint(c) for c in self.constraints]

    @property
    def startup_trials(self) -> int:
        return self.startup if self.startup is not None else max(1, min(20, self.trials // 3))

    def suites(self) -> list[str]:
        """The bake eval suites the objectives and constraints need, in SUITES order."""
        from ..evaluation.suites import SUITES

        wanted = {m.objective.suite for m in [*self.metrics, *(c.metric for c in self.bounds)]}
        if "kl" in wanted:
            wanted.discard("kl")
            if "refusal" not in wanted:
                wanted.add("quality")
        return [s for s in SUITES if s in wanted]

    def lengths(self) -> tuple[int, ...]:
        """The reply lengths the refusal metrics read."""
        return tuple(sorted({m.arg for m in [*self.metrics, *(c.metric for c in self.bounds)] if m.arg}))


def parse_block(block, source: str) -> Tune:
    """The recipe's `tune:` mapping, validated; errors name the YAML path under `tune`."""
    from ..recipe.schema import format_validation

    if block is None:
        raise RecipeError(f"{source}: no `tune:` block; bake tune needs one (docs/tuning.md): params, objectives, ...")
    if not isinstance(block, dict):
        raise RecipeError(f"{source}: tune: expected a mapping (params, objectives, constraints, ...)")
    try:
        spec = Tune.model_validate(block)
    except ValidationError as e:
        text = format_validation(e, source).replace("\n  ", "\n  tune.").replace("Value error, ", "")
        text = text.replace("tune.(top level): ", "tune: ")
        raise RecipeError(text.replace(": invalid recipe", ": invalid tune block")) from None
    errors = _name_errors(spec)
    if errors:
        raise RecipeError("\n  ".join([f"{source}: invalid tune block", *(f"tune.{e}" for e in errors)]))
    return spec


def _name_errors(t: Tune) -> list[str]:
    """The objectives, constraints and data inputs a block names that bake does not know."""
    from ..evaluation.suites import INPUTS

    errors = []
    for i, o in enumerate(t.objectives):
        try:
            metric(o)
        except ValueError as e:
            errors.append(f"objectives[{i}]: {e}")
    if len(set(t.objectives)) != len(t.objectives):
        errors.append("objectives: an objective is listed twice")
    for i, c in enumerate(t.constraints):
        try:
            constraint(c)
        except ValueError as e:
            errors.append(f"constraints[{i}]: {e}")
    for k in t.data:
        if k not in INPUTS:
            errors.append(f"data.{k}: unknown input{did_you_mean(k, INPUTS)}; known: {', '.join(INPUTS)}")
    return errors


# --- recipe paths ---------------------------------------------------------------------------------

_STEP = re.compile(r"([A-Za-z_]\w*)|\[(-?\d+)\]")


def steps(path: str) -> list:
    out, pos = [], 0
    for m in _STEP.finditer(path):
        if m.start() != pos and path[pos:m.start()] != ".":
            raise RecipeError(f"tune.params: {path!r} is not a recipe path (e.g. interventions[0].scale)")
        out.append(m.group(1) if m.group(1) else int(m.group(2)))
        pos = m.end()
    if not out or pos != len(path):
        raise RecipeError(f"tune.params: {path!r} is not a recipe path (e.g. interventions[0].scale)")
    return out


def set_value(data: dict, path: str, value) -> None:
    """Set `value` at `path` in `data` (in place); the key's parent must exist."""
    node = data
    parts = steps(path)
    for i, s in enumerate(parts[:-1]):
        try:
            node = node[s]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[:i + 1]).lstrip(".")
            raise RecipeError(f"tune.params: {path}: the recipe has no {where}") from None
    last = parts[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and -len(node) <= last < len(node):
        node[last] = value
    else:
        raise RecipeError(f"tune.params: {path}: the recipe has no such key")
