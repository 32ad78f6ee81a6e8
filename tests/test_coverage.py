"""The model types people use now, MoE included: tiny random models bake and verify for every kind
their derived status calls exact; every type transformers ships has a status or a reason."""

from __future__ import annotations

import pytest
import torch

import bake
from bake.evaluation import coverage
from bake.model import tiny

TOL = 1e-5  # the same tolerance as tests/test_families.py

REPRESENTATIVE = ["qwen3_moe", "qwen3_5", "qwen3_5_moe", "gemma4_text", "gpt_oss", "deepseek_v3", "glm4_moe",
                  "llama4_text", "ministral3", "phi3", "olmo2", "olmo3", "smollm3", "gemma2", "granitemoe", "lfm2",
                  "lfm2_moe", "granitemoehybrid", "gemma3n_text"]
# lfm2_moe, granitemoehybrid: the tiny tests of their entries in bake/families/overrides.py's DEFAULTS
MOE = {"qwen3_moe", "qwen3_5_moe", "gpt_oss", "deepseek_v3", "glm4_moe", "llama4_text", "granitemoe", "lfm2_moe",
       "granitemoehybrid"}


@pytest.mark.parametrize("model_type", REPRESENTATIVE)
def test_bakes_and_verifies_what_its_status_promises(tmp_path, model_type):
    row = coverage.status(model_type)
    assert row.decoder, row.why
    proven = _proven()[model_type]["cells"]  # the probe agrees with the table eval/coverage.py proved
    assert {k: st for k, (st, _) in row.status.items()} == {k: c[0] for k, c in proven.items()}
    model = tiny.save(coverage.default_config(model_type), tmp_path / "model")
    arts = coverage.artifacts(model, tmp_path)
    for kind, (st, why) in row.status.items():
        recipe = {"model": str(model), "interventions": [arts[kind]], "verify": {"generate_tokens": 4}}
        out = tmp_path / f"out-{kind}"
        if st == "refused":
            with pytest.raises(bake.NotBakeable, match="cannot be baked"):
                bake.apply(recipe, output=out, progress=False)
            assert not out.exists()
            continue
        if st == "approximate":
            recipe["interventions"] = [dict(arts[kind], approximate=True)]
        report = bake.apply(recipe, output=out, progress=False)
        v = report["verification"]
        if st == "approximate":
            assert v["status"] == "approximate" and v["metrics"]["max_abs_logit"] > 0
        else:
            assert v["status"] == "passed", (kind, v["failures"])
            assert v["metrics"]["max_abs_logit"] <= TOL and v["metrics"]["top1_agreement"] == 1.0
        assert report["model"]["moe"] == (model_type in MOE)


def test_moe_ablation_edits_every_expert_and_shared_expert(tmp_path):
    """deepseek_v3: per-expert down projections (split on disk) and the shared expert are all edited."""
    model = tiny.save(coverage.default_config("deepseek_v3"), tmp_path / "model")
    arts = coverage.artifacts(model, tmp_path)
    report = bake.apply({"model": str(model), "interventions": [arts["ablate"]]}, output=tmp_path / "out",
                        progress=False)
    edited = {e["tensor"] for e in report["edits"]}
    from bake.model.source import open_checkpoint

    keys = open_checkpoint(model).shapes
    experts = {k for k in keys if ".experts." in k and k.endswith("down_proj.weight")}
    shared = {k for k in keys if "shared_experts.down_proj" in k}
    assert experts and shared and experts | shared <= edited
    assert not any(".gate." in k or "gate_proj" in k or "up_proj" in k for k in edited)  # routers and inputs untouched


def test_gpt_oss_steers_through_expert_biases(tmp_path):
    model = tiny.save(coverage.default_config("gpt_oss"), tmp_path / "model")
    arts = coverage.artifacts(model, tmp_path)
    report = bake.apply({"model": str(model), "interventions": [arts["steer"]]}, output=tmp_path / "out",
                        progress=False)
    assert [e["tensor"] for e in report["edits"]] == ["model.layers.1.mlp.experts.down_proj_bias"]
    assert report["verification"]["status"] == "passed"


def _expert_alphas(model, tmp_path):
    from safetensors.torch import save_file

    from bake.families import resolve
    from bake.model.source import open_checkpoint

    ck = open_checkpoint(model)
    fam = resolve(ck.config, ck.shapes)
    m, (name, hidden) = next(iter(fam.experts.items()))
    shape = fam.params[name]
    a = torch.rand(shape[0], shape[({1, 2} - {hidden}).pop()], generator=torch.Generator().manual_seed(0))
    save_file({m: a.reshape(-1).contiguous()}, str(tmp_path / "alphas.safetensors"))
    return {"kind": "aura", "modules": m, "alphas": str(tmp_path / "alphas.safetensors")}, m


@pytest.mark.parametrize("model_type", ["qwen3_moe", "llama4_text"])
def test_aura_scales_units_inside_fused_experts(tmp_path, model_type):
    """qwen3_moe: experts fused in memory, one key per expert on disk, act_fn called per routed expert;
    llama4_text: one fused key on disk, all experts run at once."""
    from transformers import AutoModelForCausalLM

    model = tiny.save(coverage.default_config(model_type), tmp_path / "model")
    iv, m = _expert_alphas(model, tmp_path)
    report = bake.apply({"model": str(model), "interventions": [iv], "verify": {"generate_tokens": 4}},
                        output=tmp_path / "out", progress=False)
    edited = {e["tensor"] for e in report["edits"]}
    assert edited and all(k.startswith(m + ".") and "down_proj" in k for k in edited), edited
    v = report["verification"]
    assert v["status"] == "passed" and v["metrics"]["max_abs_logit"] <= TOL, v
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    base, baked = (AutoModelForCausalLM.from_pretrained(p, experts_implementation="eager")(ids).logits
                   for p in (model, tmp_path / "out"))
    assert (base - baked).abs().max() > 1e-3  # the units were scaled: the model changed


def test_aura_inside_experts_without_a_hook_point_is_refused(tmp_path):
    model = tiny.save(coverage.default_config("gpt_oss"), tmp_path / "model")
    iv, _ = _expert_alphas(model, tmp_path)
    with pytest.raises(bake.NotBakeable, match="no act_fn module"):
        bake.apply({"model": str(model), "interventions": [iv]}, output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_type_refused_by_hand_needs_no_tiny_model():
    """Gemma 4's drafters read their target's cache: refused with the reason, no tiny model built."""
    row = coverage.status("gemma4_assistant")
    assert row.decoder and {st for st, _ in row.status.values()} == {"refused"}
    assert all("drafter" in why and "bake the target model" in why for _, why in row.status.values())


def test_config_infinities_survive_the_bake(tmp_path):
    """transformers writes inf in config.json as {"__float__": "Infinity"} (Mamba-2's time_step_limit):
    bake reads it as transformers does and writes it back the same way."""
    import json

    from transformers import AutoConfig

    model = tiny.save(coverage.default_config("mamba2"), tmp_path / "model")
    assert {"__float__": "Infinity"} in json.loads((model / "config.json").read_text())["time_step_limit"]
    arts = coverage.artifacts(model, tmp_path)
    report = bake.apply({"model": str(model), "interventions": [arts["ablate"]], "verify": {"generate_tokens": 2}},
                        output=tmp_path / "out", progress=False)
    assert report["verification"]["status"] == "passed"
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["time_step_limit"] == [0.0, {"__float__": "Infinity"}]
    assert AutoConfig.from_pretrained(tmp_path / "out").time_step_limit[1] == float("inf")


def _proven() -> dict:
    import json
    from pathlib import Path

    return {r["model_type"]: r for r in json.loads(
        (Path(__file__).resolve().parents[1] / "eval" / "coverage.json").read_text())["rows"]}


def test_every_causal_lm_type_has_a_status_or_a_reason():
    """No type transformers ships is silently unknown: eval/coverage.py's table (docs/families.md's) has
    every one, each with a status and its reason per kind, or the reason it has none."""
    proven, seen = _proven(), 0
    for mt in coverage.causal_lm_types():
        assert mt in proven, f"{mt} is not in eval/coverage.json: rerun eval/coverage.py --types {mt}"
        row = proven[mt]
        if not row["cells"]:
            assert row["why"], mt
            continue
        seen += 1
        assert set(row["cells"]) == set(coverage.KINDS), mt
        for kind, (st, why) in row["cells"].items():
            assert st in ("exact", "exact via config", "approximate", "refused"), (mt, kind, st)
            assert why, (mt, kind)
    assert seen > 100


def test_serving_notes_say_who_serves_a_baked_checkpoint(tmp_path, monkeypatch):
    """Per runtime, from the exporters' own checks (ONNX: the trial's cached answer) and the hand-written
    runtime facts."""
    from bake.exporters import onnx as export_onnx
    from bake.exporters.serving import notes

    monkeypatch.setenv("BAKE_CACHE", str(tmp_path))
    llama = {**coverage.default_config("llama"), "architectures": ["LlamaForCausalLM"], "mlp_bias": True}
    assert dict((rt, ok) for rt, ok, _ in notes(llama))["ONNX Runtime"] == "untried"
    assert export_onnx.trial(llama) == ""
    rows = {rt: (ok, why) for rt, ok, why in notes(llama, {"mlp_bias": True})}
    assert rows["transformers"][0] == "yes" and rows["llama.cpp"][0] == "yes" and rows["ONNX Runtime"][0] == "yes"
    assert rows["vLLM"][0].startswith("yes") and "untested" in rows["vLLM"][0]
    assert rows["SGLang"][0] == "NO" and "dropped" in rows["SGLang"][1]  # it drops the steering bias silently
    moe = {**coverage.default_config("qwen3_5_moe_text"), "architectures": ["Qwen3_5MoeForCausalLM"]}
    assert "cannot trace it" in export_onnx.trial(moe)
    rows = {rt: (ok, why) for rt, ok, why in notes(moe)}
    assert rows["llama.cpp"][0] == "yes" and rows["ONNX Runtime"][0] == "no"
    assert rows["SGLang"][0].startswith("likely")  # no new tensors: the architecture's own layout
    unknown = {"model_type": "llama", "architectures": ["NoSuchForCausalLM"]}
    assert dict((rt, ok) for rt, ok, _ in notes(unknown))["llama.cpp"] == "no"
