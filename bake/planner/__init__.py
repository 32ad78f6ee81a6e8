"""The plan stage: a recipe becomes a `Plan` on one checkpoint, and nothing is written.

`builder.py` compiles a recipe into a plan through each kind's compile step (bake.kinds) and raises
every refusal there; `learned.py` first replaces the recipe's `{learn: {...}}` artifacts by the
files they learn (cached). `plan()` is the whole stage: resolve the model, learn, compile.
"""

from __future__ import annotations

from pathlib import Path

from .. import kinds
from ..compile.planning import Plan
from ..families.adapter import check_checkpoint
from ..model.source import resolve_model
from ..recipe import schema as recipe_mod
from ..recipe.schema import Recipe
from .builder import compile_plan
from .learned import materialize


def recipe_of(r: Recipe | str | Path | dict) -> Recipe:
    if isinstance(r, Recipe):
        return r
    if isinstance(r, dict):
        return recipe_mod.parse(r)
    return recipe_mod.load(r)


def plan(recipe: Recipe | str | Path | dict, progress: bool = True, trust_remote_code: bool = False,
         hooks_only: bool = False) -> Plan:
    """Resolve the model, learn inline artifacts, compile; writes nothing but caches
    (the dequantized GGUF, learned artifacts). Code shipped with a model runs only when
    `trust_remote_code` is given here: a recipe cannot ask for it. `hooks_only`: the plan of the
    recipe's hook realization (what `--hooks` runs), which may hold interventions no bake computes."""
    r = recipe_of(recipe).with_trust(trust_remote_code)
    ckpt = resolve_model(r.model, r.base_dir)
    check_checkpoint(ckpt.config, ckpt.shapes, r.trust_remote_code)  # config vs weights: before the recipe's sizes
    precheck(r, ckpt.config)
    return compile_plan(materialize(r, ckpt, progress), ckpt, hooks_only)


def precheck(r: Recipe, config: dict) -> None:
    """What each kind can check from the recipe, its files and config.json alone (a missing file, a
    vector of the wrong length), before the family is probed or anything is learned."""
    for i, iv in enumerate(r.interventions):
        kinds.get(iv.kind).precheck(iv, r, config, f"interventions[{i}]")
