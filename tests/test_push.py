"""`bake push` end to end against a local server speaking the Hub API subset huggingface_hub uses
(tests/hub_server.py), through the CLI with HF_ENDPOINT, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import bake
from bake.publish.card import front_matter
from hub_server import FakeHub
from tiny import build


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("push")
    src = build("llama", tmp / "src")
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    g = torch.Generator().manual_seed(0)
    save_file({"v": torch.randn(32, generator=g)}, str(tmp / "v.safetensors"))
    save_file({"r": torch.randn(32, generator=g)}, str(tmp / "r.safetensors"))
    recipe = {"model": str(src), "verify": {"generate_tokens": 4}, "interventions": [
        {"kind": "steer", "layers": [1], "vector": str(tmp / "v.safetensors")},
        {"kind": "ablate", "direction": str(tmp / "r.safetensors"), "layers": "all"}]}
    out = tmp / "tiny-steered"
    bake.apply(recipe, output=out, progress=False)
    return out


def bake_cli(*args, hub=None, endpoint=None):
    """`bake ...` in a fresh process, pointed at the local Hub (which speaks LFS, not Xet)."""
    env = {**os.environ, **(hub.client_env() if hub else {"HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_XET": "1"})}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, "-m", "bake", *args], capture_output=True, text=True, env=env)


def test_card_metadata_and_tables(baked):
    card = (baked / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0"  # inherited from the base's card
    assert "base_model" not in meta  # a local folder has no Hub id to point at
    assert meta["tags"][0] == "bake" and {"steering", "abliteration"} <= set(meta["tags"])
    report = json.loads((baked / "bake_report.json").read_text())
    for e in report["edits"]:
        assert f"| `{e['tensor']}` |" in card
    assert "`mlp_bias: true`" in card and "`tie_word_embeddings: false`" in card
    assert "| Hugging Face (safetensors) |" in card and "passed" in card
    assert "kind: steer" in card  # the recipe


def test_push_uploads_one_commit(baked):
    with FakeHub() as hub:
        res = bake_cli("push", str(baked), "--repo-id", "alice/tiny-steered", "--private", "--revision", "v1",
                       hub=hub)
        assert res.returncode == 0, res.stderr
        assert "pushed to alice/tiny-steered@v1" in res.stdout
        repo = hub.repos["alice/tiny-steered"]
        assert repo["private"] is True
        commits = [c for c in repo["commits"] if c["branch"] == "v1"]
        assert len(commits) == 1
        files = set(repo["branches"]["v1"]) - {".gitattributes"}  # the Hub's initial commit
        local = {p.relative_to(baked).as_posix() for p in baked.rglob("*") if p.is_file() and not p.name.startswith(".")}
        assert (baked / ".bake-output").is_file()  # bake's local marker (what --force may replace) is not uploaded
        assert files == local and "README.md" in files and "bake_report.json" in files
        shards = sorted(f for f in files if f.endswith(".safetensors"))
        assert len(shards) > 1 and set(shards) <= set(commits[0]["lfs"])  # large files go the library's LFS way
        for f in shards:
            assert repo["branches"]["v1"][f] == (baked / f).read_bytes()
        card = repo["branches"]["v1"]["README.md"].decode()
        assert "bake" in front_matter(card)["tags"]
        assert 'from_pretrained("alice/tiny-steered")' in card  # the published card loads the repo


def test_push_dry_run_prints_files_and_card(baked):
    with FakeHub() as hub:
        res = bake_cli("push", str(baked), "--repo-id", "alice/x", "--dry-run", hub=hub)
        assert res.returncode == 0, res.stderr
        assert "dry run: would push to alice/x@main" in res.stdout
        assert "model.safetensors" in res.stdout and "bake_report.json" in res.stdout
        assert "base_model_relation" not in res.stdout.split("model card (README.md):")[0]
        assert "## Edited tensors" in res.stdout
        assert hub.repos == {}  # nothing uploaded


def test_push_refuses_failed_verification(baked, tmp_path):
    import shutil

    failed = tmp_path / "failed"
    shutil.copytree(baked, failed)
    report = json.loads((failed / "bake_report.json").read_text())
    report["verification"]["status"] = "failed"
    report["verification"]["failures"] = ["max abs logit difference 0.3 > tolerance 0.0001"]
    (failed / "bake_report.json").write_text(json.dumps(report))
    with FakeHub() as hub:
        res = bake_cli("push", str(failed), "--repo-id", "alice/bad", hub=hub)
        assert res.returncode == 2 and "refusing to push" in res.stderr and "--force" in res.stderr
        assert hub.repos == {}
        res = bake_cli("push", str(failed), "--repo-id", "alice/bad", "--force", hub=hub)
        assert res.returncode == 0, res.stderr
        assert "[--force: verification failed]" in res.stdout
        assert "failed" in hub.repos["alice/bad"]["branches"]["main"]["README.md"].decode()


def test_push_errors_are_readable(baked, tmp_path):
    res = bake_cli("push", str(tmp_path), "--repo-id", "alice/x")
    assert res.returncode == 2 and "no bake_report.json" in res.stderr
    res = bake_cli("push", str(baked), "--repo-id", "alice/x", endpoint="http://127.0.0.1:9")  # nothing listens
    assert res.returncode == 2 and "push to alice/x failed" in res.stderr
    assert "Traceback" not in res.stderr


def test_card_for_builtin_names_hub_base(tmp_path):
    """The builtin SmolLM2's card points at its Hub model and inherits the GGUF's license."""
    from bake.model.source import resolve_model
    from bake.publish.card import base_info

    info = base_info(resolve_model("builtin:smollm2-135m-instruct"))
    assert info == {"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"}


def test_push_private_to_existing_public_repo_refuses(baked):
    with FakeHub() as hub:
        assert bake_cli("push", str(baked), "--repo-id", "alice/pub", hub=hub).returncode == 0
        res = bake_cli("push", str(baked), "--repo-id", "alice/pub", "--private", hub=hub)
        assert res.returncode == 2 and "already exists and is public" in res.stderr
        assert len([c for c in hub.repos["alice/pub"]["commits"] if c["message"].startswith("bake")]) == 1
