"""Every family x kind on tiny random models: exact bakes verify, refusals raise the documented error."""

from __future__ import annotations

import fnmatch
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import bake
from bake.families import resolve
from bake.model import config as arch
from bake.model.source import open_checkpoint
from tiny import TINY, build

TOL = 1e-5  # max abs logit difference, float32 checkpoints

# family -> kinds that must refuse (NotBakeable) without `approximate`
REFUSED = {
    "mistral-window": {"steer"},
    "qwen3": {"steer"},
    "gemma3": {"steer", "ablate"},
    "mixtral": {"steer"},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(name, root / name) for name in TINY}


def artifacts(model_dir, tmp, seed=1):
    """A steering vector, a direction and AURA alphas for the model's first MLP input projection."""
    ck = open_checkpoint(model_dir)
    fam = resolve(ck.config, ck.shapes)
    d = fam.d
    g = torch.Generator().manual_seed(seed)
    save_file({"v": torch.randn(d, generator=g)}, str(tmp / "v.safetensors"))
    save_file({"r": torch.randn(d, generator=g)}, str(tmp / "r.safetensors"))
    glob = "transformer.h.*.mlp.c_fc" if fam.name == "gpt2" else "model.layers.*.self_attn.q_proj"
    alphas = {}
    for m, cls in fam.modules.items():
        if fnmatch.fnmatchcase(m, glob):
            n = fam.params[m + ".weight"][1 if cls == "Conv1D" else 0]
            alphas[m] = torch.rand(n, generator=g) * 1.5
    save_file(alphas, str(tmp / "alphas.safetensors"))
    return {
        "aura": {"kind": "aura", "modules": [glob], "alphas": str(tmp / "alphas.safetensors")},
        "steer": {"kind": "steer", "layers": [1], "vector": str(tmp / "v.safetensors"), "scale": 3.0},
        "ablate": {"kind": "ablate", "direction": str(tmp / "r.safetensors"), "layers": "all"},
    }


def recipe(model_dir, interventions):
    return {"model": str(model_dir), "interventions": interventions, "verify": {"generate_tokens": 4}}


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("kind", ["aura", "steer", "ablate", "combined"])
def test_bake_matches_hooks(models, tmp_path, name, kind):
    arts = artifacts(models[name], tmp_path)
    ivs = [arts["steer"], arts["aura"], arts["ablate"]] if kind == "combined" else [arts[kind]]
    refused = REFUSED.get(name, set()) & {iv["kind"] for iv in ivs}
    out = tmp_path / "out"
    if refused:
        with pytest.raises(bake.NotBakeable, match="cannot be baked exactly"):
            bake.apply(recipe(models[name], ivs), output=out, progress=False)
        assert not out.exists()
        return
    report = bake.apply(recipe(models[name], ivs), output=out, progress=False)
    v = report["verification"]
    assert v["status"] == "passed", v["failures"]
    assert v["metrics"]["max_abs_logit"] <= TOL
    assert v["metrics"]["top1_agreement"] == 1.0
    assert v["metrics"]["first_divergent_hidden_state"] is None
    # the intervention really changed the model (the check is not vacuous)
    import torch as t

    from bake.model.loading import load_model
    ids = t.arange(5).unsqueeze(0)
    with t.no_grad():
        before = load_model(models[name], trust_remote_code=False)(ids).logits
        after = load_model(out, trust_remote_code=False)(ids).logits
    assert (before - after).abs().max() > 1e-3


def test_float32_compute_also_within_tolerance(models, tmp_path):
    arts = artifacts(models["llama"], tmp_path)
    r = recipe(models["llama"], [arts["steer"], arts["aura"], arts["ablate"]])
    r["verify"]["compute_dtype"] = "float32"
    v = bake.apply(r, output=tmp_path / "out", progress=False)["verification"]
    assert v["compute_dtype"] == "float32" and v["metrics"]["max_abs_logit"] <= TOL


def test_untouched_tensors_copied_bit_exact_and_sharding_kept(models, tmp_path):
    src = models["llama"]  # tied, sharded
    arts = artifacts(src, tmp_path)
    out = tmp_path / "out"
    report = bake.apply(recipe(src, [arts["aura"]]), output=out, progress=False)
    src_index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    out_index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(src_index.values()) == set(out_index.values())
    edited = {e["tensor"] for e in report["edits"]}
    for f in set(src_index.values()):
        a, b = load_file(str(src / f)), load_file(str(out / f))
        for k in a:
            if k not in edited:
                assert torch.equal(a[k], b[k]), k
            else:
                assert not torch.equal(a[k], b[k]), k


def test_ablate_unties_tied_embeddings(models, tmp_path):
    src = models["llama"]
    arts = artifacts(src, tmp_path)
    out = tmp_path / "out"
    bake.apply(recipe(src, [arts["ablate"]]), output=out, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    tensors = {}
    for f in out.glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    orig = {}
    for f in src.glob("*.safetensors"):
        orig.update(load_file(str(f)))
    assert torch.equal(tensors["lm_head.weight"], orig["model.embed_tokens.weight"])
    r = load_file(str(tmp_path / "r.safetensors"))["r"].double()
    r = r / r.norm()
    assert (tensors["model.embed_tokens.weight"].double() @ r).abs().max() < 1e-5


def test_steer_enables_llama_mlp_bias_with_explicit_zeros(models, tmp_path):
    src = models["llama-untied"]
    arts = artifacts(src, tmp_path)
    out = tmp_path / "out"
    report = bake.apply(recipe(src, [arts["steer"]]), output=out, progress=False)
    assert report["config_changes"]["mlp_bias"] is True
    t = load_file(str(out / "model.safetensors"))
    n = arch.num_layers(json.loads((src / "config.json").read_text()))
    for i in range(n):
        for p in ("gate_proj", "up_proj"):
            assert torch.count_nonzero(t[f"model.layers.{i}.mlp.{p}.bias"]) == 0
    v = load_file(str(tmp_path / "v.safetensors"))["v"]
    assert torch.allclose(t["model.layers.1.mlp.down_proj.bias"], 3.0 * v)
    assert torch.count_nonzero(t["model.layers.0.mlp.down_proj.bias"]) == 0


@pytest.mark.parametrize("name,model_type", [("mistral", "llama"), ("qwen2", "llama")])
def test_steer_redeclares_family(models, tmp_path, name, model_type):
    arts = artifacts(models[name], tmp_path)
    out = tmp_path / "out"
    bake.apply(recipe(models[name], [arts["steer"]]), output=out, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == model_type and cfg["architectures"] == ["LlamaForCausalLM"]


def test_composition_order(models, tmp_path):
    """steer then ablate: the bias is (I - r r^T) v; ablate then steer: the bias stays v."""
    src = models["llama-untied"]
    arts = artifacts(src, tmp_path)
    r = load_file(str(tmp_path / "r.safetensors"))["r"].double()
    r = r / r.norm()
    v = 3.0 * load_file(str(tmp_path / "v.safetensors"))["v"].double()
    for order, expected in [((arts["steer"], arts["ablate"]), v - (v @ r) * r), ((arts["ablate"], arts["steer"]), v)]:
        out = tmp_path / f"out-{order[0]['kind']}"
        report = bake.apply(recipe(src, list(order)), output=out, progress=False)
        assert report["verification"]["status"] == "passed"
        b = load_file(str(out / "model.safetensors"))["model.layers.1.mlp.down_proj.bias"].double()
        assert torch.allclose(b, expected, atol=1e-6)


def test_gemma3_approximate_ablation_reports_deviation(models, tmp_path):
    src = models["gemma3"]
    arts = artifacts(src, tmp_path)
    iv = dict(arts["ablate"], approximate=True)
    report = bake.apply(recipe(src, [arts["aura"], iv]), output=tmp_path / "out", progress=False)
    v = report["verification"]
    assert v["status"] == "approximate" and v["exact"] is False
    assert v["metrics"]["max_abs_logit"] > 0  # a measured deviation, never "equivalent"
    steps = {s["kind"]: s["exact"] for s in report["steps"]}
    assert steps == {"aura": True, "ablate": False}


def test_gemma3_steer_refused_even_when_approximate(models, tmp_path):
    arts = artifacts(models["gemma3"], tmp_path)
    with pytest.raises(bake.NotBakeable, match="approximate: true` does not help"):
        bake.plan(recipe(models["gemma3"], [dict(arts["steer"], approximate=True)]))


def test_loads_in_a_fresh_process_without_bake(models, tmp_path):
    import subprocess
    import sys

    arts = artifacts(models["gpt2"], tmp_path)
    out = tmp_path / "out"
    bake.apply(recipe(models["gpt2"], [arts["steer"], arts["ablate"]]), output=out, progress=False)
    code = ("import sys, torch; from transformers import AutoModelForCausalLM;"
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r});"
            "print(m(torch.arange(4)[None]).logits.shape);"
            "assert 'bake' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "torch.Size([1, 4, 97])" in res.stdout
