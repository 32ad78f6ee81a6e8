"""The shipped MoE recipe: a Qwen3.5-MoE-shaped random model bakes (AURA in the shared experts,
ablation of every routed and shared expert), verifies, and exports a GGUF that llama.cpp agrees with."""

from __future__ import annotations

from pathlib import Path

import pytest

import bake
from bake.model.source import open_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_moe_recipe_bakes_verifies_and_exports(tmp_path):
    report = bake.apply(ROOT / "recipes" / "random-moe.yaml", output=tmp_path / "moe", progress=False)
    v = report["verification"]
    assert v["status"] == "passed" and v["metrics"]["max_abs_logit"] <= 1e-4, v["failures"]
    assert report["model"]["moe"] is True
    src = open_checkpoint(Path(report["model"]["path"]))
    edited = {e["tensor"] for e in report["edits"]}
    experts = {k for k in src.shapes if ".mlp.experts." in k and "down_proj" in k}
    shared = {k for k in src.shapes if ".mlp.shared_expert.down_proj" in k}
    assert experts and shared and experts | shared <= edited  # every routed expert of every block, and shared ones
    assert not any(".mlp.gate." in k for k in edited)  # the routers are left alone
    assert any("shared_expert.up_proj" in k for k in edited)  # AURA inside the shared experts
    (gguf,) = [e for e in report["exports"].values() if e["format"] == "gguf"]
    assert gguf["status"] == "passed" and gguf["metrics"]["max_abs_logit_relative"] <= 5e-3, gguf.get("failures")
    assert "convert_hf_to_gguf.py" in gguf["converter"]
    card = (tmp_path / "moe" / "README.md").read_text()
    assert "## Serving" in card and "| llama.cpp | yes |" in card
