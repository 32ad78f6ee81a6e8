"""Module-local checks (`--verify local|full|streamed|auto`): each hooked module against its baked twin, one
module in memory at a time; they catch a tampered tensor without the end-to-end pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import bake
from bake.planner.builder import compile_plan
from bake.evaluation import coverage
from bake.model import tiny
from bake.model.source import open_checkpoint
from bake.recipe import schema as recipe_mod
from bake.verification import verifier


def _model(tmp_path, model_type):
    model = tiny.save(coverage.default_config(model_type), tmp_path / "model")
    return model, coverage.artifacts(model, tmp_path)


def _recipe(model, iv, **verify):
    return {"model": str(model), "interventions": [iv], "verify": {"generate_tokens": 2, **verify}}


@pytest.mark.parametrize("kind", ["aura", "steer", "ablate"])
def test_local_mode_checks_every_hooked_module(tmp_path, kind):
    model, arts = _model(tmp_path, "llama")
    report = bake.apply(_recipe(model, arts[kind]), output=tmp_path / "out", progress=False, verify_mode="local")
    v = report["verification"]
    assert v["mode"] == "local" and v["status"] == "passed" and v["metrics"] == {} and v["prompts"] == []
    loc = v["local"]
    assert loc["modules"] and not loc["unchecked"] and not loc["failures"]
    assert all(r["status"] == "passed" and r["max_rel"] <= loc["tolerance_rel"] for r in loc["modules"])
    plan = compile_plan(recipe_mod.parse(_recipe(model, arts[kind]), None, Path(".")), open_checkpoint(model))
    assert {h.module for h in plan.hooks} == {m for r in loc["modules"] for m in r["hooked_modules"]}  # all checked
    assert "module-local checks passed" in (tmp_path / "out" / "README.md").read_text()


def test_full_mode_replays_the_inputs_each_module_received(tmp_path):
    """qwen3_moe: attention and MoE blocks cannot be fed made-up inputs; the end-to-end pass records theirs."""
    model, arts = _model(tmp_path, "qwen3_moe")
    v = bake.apply(_recipe(model, arts["ablate"], mode="full"), output=tmp_path / "out", progress=False)["verification"]
    assert v["mode"] == "full" and v["status"] == "passed" and v["metrics"]["max_abs_logit"] <= 1e-5
    rows = {r["module"]: r for r in v["local"]["modules"]}
    assert rows["model.layers.0.mlp"]["inputs"] == "1 recorded"  # the sparse MoE block, routing included
    assert rows["model.layers.0.mlp.experts"]["inputs"] == "3 random"  # fused experts, random top-k routing
    assert rows["model.layers.0.self_attn"]["inputs"] == "1 recorded"
    assert all(r["status"] == "passed" for r in rows.values())


def test_auto_mode_streams_when_the_models_do_not_fit(tmp_path, monkeypatch):
    model, arts = _model(tmp_path, "llama")
    monkeypatch.setattr(verifier, "fits", lambda plan, dtype: False)
    v = bake.apply(_recipe(model, arts["ablate"]), output=tmp_path / "out", progress=False)["verification"]
    assert (v["mode"], v["mode_asked"], v["status"], v["compute_dtype"]) == ("streamed", "auto", "passed", "float64")
    assert v["local"]["status"] == "passed" and v["metrics"]["greedy_identical_prompts"] == "not run"


@pytest.mark.parametrize("what", ["folded", "copied"])
def test_local_check_catches_a_tampered_tensor(tmp_path, what):
    """A folded tensor (an o_proj) or an untied copy (gpt2's lm_head) changed after the bake fails the
    module-local checks alone."""
    model, arts = _model(tmp_path, "gpt2")
    rec = _recipe(model, arts["ablate"])
    bake.apply(rec, output=tmp_path / "out", progress=False, verify_mode="local")
    shard = tmp_path / "out" / "model.safetensors"
    tensors = load_file(str(shard))
    key = "transformer.h.1.attn.c_proj.weight" if what == "folded" else "lm_head.weight"
    tensors[key] = tensors[key].clone()
    tensors[key][3] += 0.05
    save_file(tensors, str(shard), metadata={"format": "pt"})
    plan = compile_plan(recipe_mod.parse(rec, None, Path(".")), open_checkpoint(model))
    v = verifier.verify(plan, tmp_path / "out", progress=False, mode="local")
    assert v["status"] == "failed"
    name = "transformer.h.1.attn.c_proj" if what == "folded" else "lm_head.weight"
    assert any(name in f for f in v["failures"]), v["failures"]
