"""Malformed recipes, artifacts and models: each fails with a clear error and writes nothing.

Each case asserts the error type and a specific fragment of the message (the YAML path, or the
problem). Every failing `apply()` is also checked to leave no output folder and no hidden temp
sibling `.<name>.bake-tmp-*` behind. At the end: the CLI's exit code, a full disk, and bakes
killed (SIGKILL) or terminated (SIGTERM) half way.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

import bake
import bake.cli
import bake.recipe.schema
import bake.write.rewrite
from bake.errors import BakeError, NotBakeable, RecipeError

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

D, LAYERS, INTER = tiny.COMMON["hidden_size"], tiny.COMMON["num_hidden_layers"], tiny.COMMON["intermediate_size"]
UP = [f"model.layers.{i}.mlp.up_proj" for i in range(LAYERS)]
REPO = Path(__file__).resolve().parents[1]


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny.build("llama", tmp_path_factory.mktemp("models") / "llama")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    """Artifacts: good ones and broken ones, in every supported format."""
    d = tmp_path_factory.mktemp("artifacts")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(D, generator=g)
    torch.save(v, d / "v.pt")
    torch.save(torch.randn(D - 1, generator=g), d / "v31.pt")
    bad = v.clone()
    bad[3] = float("nan")
    save_file({"vector": bad}, str(d / "nan.safetensors"))
    r = torch.randn(D, generator=g).numpy()
    r_inf = r.copy()
    r_inf[0] = np.inf
    np.save(d / "inf.npy", r_inf)
    np.save(d / "zero.npy", np.zeros(D, dtype=np.float32))
    save_file({"vector": v, "direction": torch.randn(D, generator=g)}, str(d / "two.safetensors"))
    (d / "v.txt").write_text(" ".join(str(x) for x in v.tolist()))
    save_file({m: torch.full((INTER,), 0.5) for m in UP}, str(d / "alphas.safetensors"))
    save_file({m: torch.full((INTER - 1 if m == UP[0] else INTER,), 0.5) for m in UP},
              str(d / "alphas-short.safetensors"))
    save_file({m: torch.full((INTER,), 0.5) for m in UP[:2]}, str(d / "alphas-missing.safetensors"))
    save_file({"x": torch.zeros(D, dtype=torch.bool)}, str(d / "bool.safetensors"))
    (d / "truncated.safetensors").write_bytes((d / "two.safetensors").read_bytes()[:50])
    torch.save({"vector": v, "meta": PurePosixPath("x")}, d / "pickle.pt")
    return d


def leftovers(out: Path) -> list[str]:
    """The output folder and any hidden temp sibling of it that exist."""
    found = [p.name for p in out.parent.glob(f".{out.name}.bake-tmp-*")]
    return ([out.name] if out.exists() else []) + found


def fails(recipe, out: Path, exc, *fragments: str, **kw) -> str:
    """apply() raises `exc` naming every fragment, and leaves nothing behind."""
    with pytest.raises(exc) as ei:
        bake.apply(recipe, output=out, progress=False, **kw)
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message:\n{msg}"
    assert leftovers(out) == [], f"left behind: {leftovers(out)}"
    return msg


def steer(model: Path, vector: str, **iv) -> dict:
    return {"model": str(model), "interventions": [{"kind": "steer", "layers": [1], "vector": vector, **iv}]}


def load_fails(tmp_path: Path, text: str, *fragments: str) -> str:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as ei:
        bake.recipe.schema.load(p)
    msg = str(ei.value)
    assert str(p) in msg  # the error names the file
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message:\n{msg}"
    return msg


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


GOOD = "model: {model}\ninterventions:\n  - kind: steer\n    layers: [1]\n    vector: {vec}\n"


# --- recipe files: YAML and schema -----------------------------------------------------------


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        bake.recipe.schema.load(tmp_path / "nope.yaml")


def test_yaml_syntax_error(tmp_path):
    load_fails(tmp_path, "model: [unclosed\ninterventions: {\n", "not valid YAML")


def test_recipe_not_a_mapping(tmp_path):
    load_fails(tmp_path, "- model: x\n- interventions: []\n", "a recipe is a mapping", "got list")


def test_empty_recipe_file(tmp_path):
    load_fails(tmp_path, "", "a recipe is a mapping", "got NoneType")


def test_unknown_top_level_key(tmp_path, llama, art):
    load_fails(tmp_path, GOOD.format(model=llama, vec=art / "v.pt") + "modle: x\n", "modle: unknown key")


def test_unknown_key_inside_intervention(tmp_path, llama, art):
    text = GOOD.format(model=llama, vec=art / "v.pt") + "    layer: 2\n"
    msg = load_fails(tmp_path, text, "interventions[0].layer: unknown key")
    assert "interventions[0].steer" not in msg  # pydantic's union tag is not part of the YAML path


def test_unknown_key_in_verify_section(tmp_path, llama, art):
    text = GOOD.format(model=llama, vec=art / "v.pt") + "verify:\n  prompt: [hi]\n"
    load_fails(tmp_path, text, "verify.prompt: unknown key")


def test_unknown_kind(tmp_path):
    load_fails(tmp_path, "model: m\ninterventions:\n  - kind: boost\n    layers: [1]\n",
               "interventions[0]: unknown kind 'boost'", "expected aura, steer, ablate, lineas, sae_amplify or sae_calibrate")


def test_missing_kind(tmp_path):
    load_fails(tmp_path, "model: m\ninterventions:\n  - layers: [1]\n    vector: v.pt\n",
               "interventions[0]: missing `kind`")


def test_scale_wrong_type(tmp_path, llama, art):
    text = GOOD.format(model=llama, vec=art / "v.pt") + "    scale: big\n"
    load_fails(tmp_path, text, "interventions[0].scale:", "valid number", "'big'")


def test_second_intervention_is_named_by_index(tmp_path, llama, art):
    text = GOOD.format(model=llama, vec=art / "v.pt") + "  - kind: ablate\n    direction: 5\n"
    load_fails(tmp_path, text, "interventions[1].direction:", "expected a file path")


def test_layers_wrong_type(tmp_path, llama, art):
    text = f"model: {llama}\ninterventions:\n  - kind: steer\n    layers: [1, two]\n    vector: v.pt\n"
    load_fails(tmp_path, text, "interventions[0].layers[1]:", "valid integer")


def test_dtype_not_supported(tmp_path, llama, art):
    text = "dtype: float64\n" + GOOD.format(model=llama, vec=art / "v.pt")
    load_fails(tmp_path, text, "dtype:", "'float32', 'bfloat16' or 'float16'", "'float64'")


def test_empty_interventions(tmp_path, llama):
    load_fails(tmp_path, f"model: {llama}\ninterventions: []\n", "interventions:", "at least 1 item")


def test_interventions_missing(tmp_path, llama):
    load_fails(tmp_path, f"model: {llama}\n", "interventions: Field required")


def test_verify_tolerance_must_be_positive(tmp_path, llama, art):
    text = GOOD.format(model=llama, vec=art / "v.pt") + "verify:\n  max_abs_logit: -1\n"
    load_fails(tmp_path, text, "verify.max_abs_logit:", "greater than 0")


@pytest.mark.parametrize("scale", [".nan", ".inf", "-.inf"])
def test_non_finite_scale(tmp_path, llama, art, scale):
    p = tmp_path / "recipe.yaml"
    p.write_text(GOOD.format(model=llama, vec=art / "v.pt") + f"    scale: {scale}\n")
    with pytest.raises(BakeError, match=r"interventions\[0\]\.scale"):
        bake.plan(p)


def test_ablate_empty_layers(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [{"kind": "ablate", "layers": [],
                                                 "direction": str(art / "two.safetensors#direction")}]}
    with pytest.raises(BakeError, match=r"interventions\[0\]\.layers"):
        bake.plan(r)


def test_verify_folder_without_recipe(tmp_path, llama):
    with pytest.raises(BakeError, match="no recipe.yaml"):
        bake.verify(llama, progress=False)


def test_dict_recipe_is_validated_too(tmp_path, llama, art):
    out = tmp_path / "out"
    fails({"model": str(llama), "interventions": [{"kind": "steer", "layers": [1], "vector": str(art / "v.pt"),
                                                   "scale": "big"}]},
          out, RecipeError, "interventions[0].scale:")
    fails({"model": str(llama), "interventions": [], "dtype": "float8"}, out, RecipeError, "dtype:", "interventions:")


# --- semantic errors: layers, vectors, directions, alphas ------------------------------------


def test_layer_out_of_range(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [{"kind": "steer", "layers": [LAYERS], "vector": str(art / "v.pt")}]}
    fails(r, tmp_path / "out", BakeError, "interventions[0].layers[0]", f"layer {LAYERS} is out of range",
          f"{LAYERS} blocks")
    r["interventions"][0]["layers"] = [0, -1]
    fails(r, tmp_path / "out", BakeError, "interventions[0].layers[1]", "layer -1 is out of range")


def test_ablate_layer_out_of_range(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [{"kind": "ablate", "layers": [0, 99],
                                                 "direction": str(art / "two.safetensors#direction")}]}
    with pytest.raises(BakeError, match=r"interventions\[0\]\.layers\[1\]: layer 99"):
        bake.plan(r)


def test_duplicate_layer(tmp_path, llama, art):
    fails(steer(llama, str(art / "v.pt"), layers=[1, 2, 1]), tmp_path / "out", BakeError,
          "interventions[0].layers", "listed twice")


def test_steering_vector_wrong_shape(tmp_path, llama, art):
    fails(steer(llama, str(art / "v31.pt")), tmp_path / "out", BakeError,
          "interventions[0].vector", f"shape [{D - 1}]", f"expected [{D}]")


def test_steering_vector_per_block_wrong_rows(tmp_path, llama, art):
    torch.save(torch.randn(LAYERS + 1, D), tmp_path / "rows.pt")
    fails(steer(llama, str(tmp_path / "rows.pt")), tmp_path / "out", BakeError,
          "interventions[0].vector", f"shape [{LAYERS + 1}, {D}]", f"[{LAYERS}, {D}]")


def test_nan_in_vector(tmp_path, llama, art):
    fails(steer(llama, str(art / "nan.safetensors")), tmp_path / "out", BakeError,
          "interventions[0].vector", "1 non-finite value(s)")


def test_inf_in_direction(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [{"kind": "ablate", "direction": str(art / "inf.npy")}]}
    fails(r, tmp_path / "out", BakeError, "interventions[0].direction", "non-finite")


def test_zero_direction(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [
        {"kind": "steer", "layers": [0], "vector": str(art / "v.pt")},
        {"kind": "ablate", "direction": str(art / "zero.npy")}]}
    fails(r, tmp_path / "out", BakeError, "interventions[1].direction", "the vector is zero")


def test_direction_wrong_shape(tmp_path, llama, art):
    r = {"model": str(llama), "interventions": [{"kind": "ablate", "direction": str(art / "v31.pt")}]}
    fails(r, tmp_path / "out", BakeError, "interventions[0].direction", f"shape [{D - 1}]")


def test_missing_artifact_file(tmp_path, llama, art):
    fails(steer(llama, str(art / "nope.pt")), tmp_path / "out", BakeError,
          "interventions[0].vector", "no such file", "nope.pt")


def test_relative_artifact_resolved_from_recipe_folder(tmp_path, llama, art):
    """A relative artifact path is looked up next to the recipe file, not in the cwd."""
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "recipe.yaml"
    p.write_text(GOOD.format(model=llama, vec="v.pt"))
    shutil.copy(art / "v.pt", tmp_path / "v.pt")  # in the parent, not next to the recipe
    fails(p, tmp_path / "out", BakeError, "no such file", str(tmp_path / "sub" / "v.pt"))


def test_unsupported_artifact_suffix(tmp_path, llama, art):
    fails(steer(llama, str(art / "v.txt")), tmp_path / "out", BakeError,
          "interventions[0].vector", "unsupported file type '.txt'", ".safetensors")


def test_key_not_in_file(tmp_path, llama, art):
    fails(steer(llama, str(art / "two.safetensors") + "#nope"), tmp_path / "out", BakeError,
          "interventions[0].vector", "no tensor 'nope' in two.safetensors", "direction", "vector")


def test_several_tensors_without_key(tmp_path, llama, art):
    fails(steer(llama, str(art / "two.safetensors")), tmp_path / "out", BakeError,
          "interventions[0].vector", "holds 2 tensors", "two.safetensors#KEY")


def test_key_on_single_tensor_file(tmp_path, llama, art):
    fails(steer(llama, str(art / "v.pt") + "#vector"), tmp_path / "out", BakeError,
          "interventions[0].vector", "single tensor", "drop #vector")


def test_non_float_tensor(tmp_path, llama, art):
    fails(steer(llama, str(art / "bool.safetensors")), tmp_path / "out", BakeError,
          "interventions[0].vector", "floating-point", "torch.bool")


def test_truncated_safetensors(tmp_path, llama, art):
    fails(steer(llama, str(art / "truncated.safetensors") + "#vector"), tmp_path / "out", BakeError,
          "interventions[0].vector", "cannot read truncated.safetensors")


def test_pickle_with_objects_is_refused(tmp_path, llama, art):
    fails(steer(llama, str(art / "pickle.pt") + "#vector"), tmp_path / "out", BakeError,
          "interventions[0].vector", "cannot read pickle.pt")


def aura(model: Path, alphas: Path, modules="model.layers.*.mlp.up_proj") -> dict:
    return {"model": str(model), "interventions": [{"kind": "aura", "modules": modules, "alphas": str(alphas)}]}


def test_aura_glob_matches_nothing(tmp_path, llama, art):
    fails(aura(llama, art / "alphas.safetensors", ["model.layers.*.mlp.up_proj", "model.layers.*.mlp.upp_proj"]),
          tmp_path / "out", BakeError, "interventions[0].modules[1]", "'model.layers.*.mlp.upp_proj' matches no module")


def test_aura_glob_matches_non_linear(tmp_path, llama, art):
    fails(aura(llama, art / "alphas.safetensors", "model.layers.0.mlp"), tmp_path / "out", BakeError,
          "interventions[0].modules[0]", "not a Linear/Conv1D/Embedding")


def test_aura_alphas_wrong_length(tmp_path, llama, art):
    fails(aura(llama, art / "alphas-short.safetensors"), tmp_path / "out", BakeError,
          f"interventions[0].alphas[{UP[0]}]", f"{INTER - 1} alphas for {INTER} output units")


def test_aura_alphas_missing_a_module(tmp_path, llama, art):
    fails(aura(llama, art / "alphas-missing.safetensors"), tmp_path / "out", BakeError,
          "interventions[0].alphas", f"no alphas for module {UP[2]}")


def test_aura_alphas_single_tensor(tmp_path, llama, art):
    fails(aura(llama, art / "v.pt"), tmp_path / "out", BakeError,
          "interventions[0].alphas", "must map module names to vectors")


def test_aura_statedict_folder_without_files(tmp_path, llama):
    (tmp_path / "aura").mkdir()
    fails(aura(llama, tmp_path / "aura"), tmp_path / "out", BakeError,
          "interventions[0].alphas", "no ml-aura *.statedict files")


# --- models ----------------------------------------------------------------------------------


def test_model_folder_without_config(tmp_path, llama, art):
    m = tmp_path / "m"
    shutil.copytree(llama, m)
    (m / "config.json").unlink()
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", BakeError, "no config.json")


def test_model_folder_with_only_pytorch_bin(tmp_path, llama, art):
    m = tmp_path / "m"
    m.mkdir()
    shutil.copy(llama / "config.json", m / "config.json")
    torch.save({"model.embed_tokens.weight": torch.zeros(4, D)}, m / "pytorch_model.bin")
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", BakeError,
          "no safetensors weights", "found pytorch_model.bin", "convert to safetensors")


def test_unknown_model_family(tmp_path, llama, art):
    m = tmp_path / "m"
    shutil.copytree(llama, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "no_such_family"
    (m / "config.json").write_text(json.dumps(cfg))
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", BakeError,
          "unknown model type", "model_type='no_such_family'", "bake arch --table")


def test_quantized_checkpoint_is_refused_with_the_fix(tmp_path, llama, art):
    m = tmp_path / "m"
    shutil.copytree(llama, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": []}
    (m / "config.json").write_text(json.dumps(cfg))
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", BakeError,
          "quant_method='mxfp4'", "Dequantize it first")


def test_config_of_another_family(tmp_path, llama, art):
    """A Llama checkpoint whose config claims another (real) type: the tensors do not match it."""
    m = tmp_path / "m"
    shutil.copytree(llama, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "falcon_mamba"
    (m / "config.json").write_text(json.dumps(cfg))
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", BakeError,
          "do not match model_type='falcon_mamba'", "is not in it")


def test_model_path_does_not_exist(tmp_path, art):
    fails(steer(tmp_path / "no-such-model", str(art / "v.pt")), tmp_path / "out", BakeError,
          "no such folder or file")


def test_model_is_a_file_not_gguf(tmp_path, art):
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    fails(steer(tmp_path / "model.bin", str(art / "v.pt")), tmp_path / "out", BakeError, "a file that is not .gguf")


def test_unknown_builtin(tmp_path, art):
    r = {"model": "builtin:nope-7b", "interventions": [{"kind": "steer", "layers": [1], "vector": str(art / "v.pt")}]}
    fails(r, tmp_path / "out", BakeError, "unknown builtin model 'nope-7b'", "smollm2-135m-instruct")


def test_steer_refused_on_windowed_mistral(tmp_path, art):
    m = tiny.build("mistral-window", tmp_path / "mistral")
    fails(steer(m, str(art / "v.pt")), tmp_path / "out", NotBakeable,
          "interventions[0]: steer cannot be baked exactly", "sliding_window=16")


# --- output folder ---------------------------------------------------------------------------


def test_output_exists_and_not_empty(tmp_path, llama, art):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = tree_digest(out)
    with pytest.raises(BakeError) as ei:
        bake.apply(steer(llama, str(art / "v.pt")), output=out, progress=False)
    # the right fix the first time (issue 28): --force would not replace a folder bake did not write
    assert "was not written by bake apply" in str(ei.value) and "choose another path" in str(ei.value)
    assert tree_digest(out) == before
    assert list(tmp_path.glob(".out.bake-tmp-*")) == []


def test_output_is_an_existing_file(tmp_path, llama, art):
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(BakeError, match="exists and is not a folder"):
        bake.apply(steer(llama, str(art / "v.pt")), output=out, progress=False)
    assert out.read_text() == "a file"


def test_output_inside_input_model(tmp_path, llama, art):
    before = tree_digest(llama)
    for out in (llama / "baked", llama):
        with pytest.raises(BakeError) as ei:
            bake.apply(steer(llama, str(art / "v.pt")), output=out, progress=False, force=True)
        msg = str(ei.value)
        assert str(out) in msg and ("is inside the input model" in msg or "was not written by bake" in msg), msg
    assert tree_digest(llama) == before
    assert not (llama / "baked").exists()
    assert list(llama.glob(".baked.bake-tmp-*")) == [] and list(llama.parent.glob(f".{llama.name}.bake-tmp-*")) == []


def test_force_output_containing_the_input_model_keeps_the_model(tmp_path, art):
    parent = tmp_path / "work"
    model = tiny.build("llama", parent / "model")
    before = tree_digest(model)
    try:
        bake.apply(steer(model, str(art / "v.pt")), output=parent, progress=False, force=True)
    except BakeError:
        pass  # refusing is fine; deleting the input is not
    assert model.is_dir() and tree_digest(model) == before


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def keep_sigterm():
    """bake.cli.main installs a SIGTERM handler; give pytest its own back afterwards."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def test_cli_malformed_recipe_exit_2(tmp_path, llama, art, capsys, keep_sigterm):
    p = tmp_path / "recipe.yaml"
    p.write_text(GOOD.format(model=llama, vec=art / "v.pt") + "    scale: big\n")
    out = tmp_path / "out"
    assert bake.cli.main(["apply", str(p), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bake: error:")
    assert "interventions[0].scale:" in err
    assert leftovers(out) == []
    assert bake.cli.main(["plan", str(p)]) == 2
    assert "bake: error:" in capsys.readouterr().err


def test_cli_semantic_error_exit_2(tmp_path, llama, art, capsys, keep_sigterm):
    p = tmp_path / "recipe.yaml"
    p.write_text(GOOD.format(model=llama, vec=art / "v.pt").replace("[1]", "[9]"))
    out = tmp_path / "out"
    assert bake.cli.main(["apply", str(p), "-o", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert "bake: error: interventions[0].layers[0]: layer 9 is out of range" in captured.err
    assert "Traceback" not in captured.err
    assert leftovers(out) == []


def test_cli_yaml_error_exit_2(tmp_path, capsys, keep_sigterm):
    p = tmp_path / "recipe.yaml"
    p.write_text("model: [\n")
    assert bake.cli.main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert "bake: error:" in err and "not valid YAML" in err


# --- failures while writing ------------------------------------------------------------------


@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_disk_full(tmp_path, llama, art, monkeypatch, fail_on_call):
    """ENOSPC on the first shard, or on the second (a partial temp folder exists by then)."""
    assert len(list(llama.glob("*.safetensors"))) >= 2
    before = tree_digest(llama)
    real_save, calls = bake.write.rewrite.save_file, []

    def save_file_full(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) >= fail_on_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(bake.write.rewrite, "save_file", save_file_full)
    out = tmp_path / "out"
    msg = fails(steer(llama, str(art / "v.pt")), out, BakeError, "no space left")
    assert "nothing was written" in msg
    assert len(calls) == fail_on_call
    assert tree_digest(llama) == before


def test_other_oserror_while_writing(tmp_path, llama, art, monkeypatch):
    def save_file_denied(tensors, filename, metadata=None):
        raise PermissionError(errno.EACCES, "Permission denied", filename)

    monkeypatch.setattr(bake.write.rewrite, "save_file", save_file_denied)
    msg = fails(steer(llama, str(art / "v.pt")), tmp_path / "out", BakeError, "cannot write", "Permission denied")
    assert "nothing was written" in msg


def test_failure_replacing_existing_output_with_force(tmp_path, llama, art, monkeypatch):
    """--force over an earlier bake: a failing bake leaves the old output as it was."""
    out = tmp_path / "out"
    bake.apply(steer(llama, str(art / "v.pt")), output=out, progress=False)
    before = tree_digest(out)
    monkeypatch.setattr(bake.write.rewrite, "save_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(BakeError, match="no space left"):
        bake.apply(steer(llama, str(art / "v.pt"), scale=2.0), output=out, progress=False, force=True)
    assert tree_digest(out) == before
    assert list(tmp_path.glob(".out.bake-tmp-*")) == [] and list(tmp_path.glob(".out.bake-lock")) == []


# --- interrupted bakes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kill_recipe(tmp_path_factory) -> Path:
    """A recipe (relative paths) on a tiny sharded llama of its own.

    The temp folder lives from the first shard written until verification (two model loads,
    forward passes and greedy generation) has finished: seconds, far longer than the 5 ms poll.
    """
    d = tmp_path_factory.mktemp("kill")
    tiny.build("llama", d / "model")
    g = torch.Generator().manual_seed(1)
    torch.save(torch.randn(D, generator=g), d / "v.pt")
    torch.save(torch.randn(D, generator=g), d / "r.pt")
    p = d / "recipe.yaml"
    p.write_text(yaml.safe_dump({
        "model": "model",
        "interventions": [{"kind": "steer", "layers": [0, 2], "vector": "v.pt", "scale": 2.0},
                          {"kind": "ablate", "direction": "r.pt"}],
    }))
    return p


def start_bake(recipe: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bake", "apply", str(recipe), "-o", str(out), "-q"],
                            cwd=str(recipe.parent), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp = out.parent / f".{out.name}.bake-tmp-{proc.pid}"
    deadline = time.monotonic() + 60
    while not tmp.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode()
            pytest.fail(f"the bake ended (rc {proc.returncode}) before its temp folder was seen:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("no temp folder appeared within 60 s")
        time.sleep(0.005)
    return proc, tmp


def test_sigkill_mid_bake_then_rebake(tmp_path, kill_recipe):
    out = tmp_path / "baked"
    model = kill_recipe.parent / "model"
    before = tree_digest(model)
    proc, tmp = start_bake(kill_recipe, out)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stderr.close()
    assert not out.exists()
    assert tmp.exists()  # a kill -9 cannot clean up; the next bake must
    assert tree_digest(model) == before

    report = bake.apply(kill_recipe, output=out, progress=False)
    assert report["verification"]["status"] == "passed"
    assert out.is_dir() and (out / "config.json").is_file() and (out / "bake_report.json").is_file()
    assert not tmp.exists(), "the stale temp folder of the killed bake was not removed"
    assert list(tmp_path.glob(".baked.bake-tmp-*")) == []
    assert tree_digest(model) == before


def test_sigterm_mid_bake_cleans_up(tmp_path, kill_recipe):
    out = tmp_path / "baked"
    model = kill_recipe.parent / "model"
    before = tree_digest(model)
    proc, tmp = start_bake(kill_recipe, out)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    # 143 = the CLI's handler ran and unwound. (Rarely the SystemExit raised by the handler is turned into
    # another exception by a native extension, e.g. safetensors' get_tensor -> ValueError, rc 1: see
    # test_sigterm_converted_by_an_extension. The contract checked here holds either way.)
    assert rc != 0, f"the bake ignored SIGTERM and finished; stderr:\n{err[-2000:]}"
    assert rc > 0, f"killed by the default SIGTERM action (rc {rc}): the CLI's handler did not run"
    assert not out.exists()
    assert not tmp.exists(), "SIGTERM left the temp folder behind"
    assert list(tmp_path.glob(".baked.bake-tmp-*")) == []
    assert tree_digest(model) == before


# --- SIGTERM in-process: the handler's SystemExit must unwind apply() whatever code it lands in ----


def _sigterm_self():
    handler = signal.getsignal(signal.SIGTERM)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, None):  # never SIGTERM pytest itself without a handler
        raise AssertionError(f"bake.cli.main installed no SIGTERM handler (found {handler!r})")
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # Python runs the handler at the next bytecode boundary
        pass


def _cli_apply(llama, art, tmp_path) -> tuple[list[str], Path]:
    p = tmp_path / "recipe.yaml"
    p.write_text(GOOD.format(model=llama, vec=art / "v.pt"))
    out = tmp_path / "out"
    return ["apply", str(p), "-o", str(out), "-q"], out


def test_sigterm_while_writing_unwinds_and_cleans(tmp_path, llama, art, monkeypatch, keep_sigterm):
    before = tree_digest(llama)
    real_save, calls = bake.write.rewrite.save_file, []

    def save_then_term(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        calls.append(filename)
        if len(calls) == 2:  # after the second shard: a partial temp folder exists
            _sigterm_self()

    monkeypatch.setattr(bake.write.rewrite, "save_file", save_then_term)
    argv, out = _cli_apply(llama, art, tmp_path)
    with pytest.raises(SystemExit) as ei:
        bake.cli.main(argv)
    assert ei.value.code == 128 + signal.SIGTERM
    assert len(calls) == 2
    assert leftovers(out) == []
    assert tree_digest(llama) == before


def test_sigterm_converted_by_an_extension(tmp_path, llama, art, monkeypatch, keep_sigterm):
    def save_like_an_extension(tensors, filename, metadata=None):
        try:
            _sigterm_self()
        except BaseException as e:  # what PyO3 / C code does with an error raised inside its callback
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from e

    monkeypatch.setattr(bake.write.rewrite, "save_file", save_like_an_extension)
    argv, out = _cli_apply(llama, art, tmp_path)
    try:
        with pytest.raises(SystemExit) as ei:
            bake.cli.main(argv)
        assert ei.value.code == 128 + signal.SIGTERM
    finally:
        assert leftovers(out) == []  # the cleanup itself works in this case


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_during_finalizer_is_not_lost(tmp_path, llama, art, monkeypatch, keep_sigterm):
    real_save, calls = bake.write.rewrite.save_file, []

    class Finalized:
        def __del__(self):
            _sigterm_self()

    def save_with_gc(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 1:
            Finalized()  # collected at once: the handler runs inside __del__
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(bake.write.rewrite, "save_file", save_with_gc)
    argv, out = _cli_apply(llama, art, tmp_path)
    with pytest.raises(SystemExit) as ei:
        bake.cli.main(argv)
    assert ei.value.code == 128 + signal.SIGTERM
    assert leftovers(out) == []
