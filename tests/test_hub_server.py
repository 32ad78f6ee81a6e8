"""The fake Hub in hub_server.py against plain huggingface_hub: repo, branch, one-commit folder upload
with a large file through LFS, then reading it back."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from hub_server import FakeHub


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as c

    # huggingface_hub reads these at import time: set the env (for subprocesses) and patch the module
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)  # else hf_xet uploads LFS files without asking
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with FakeHub() as h:
        yield h


def test_upload_folder_one_commit_with_lfs(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    big = os.urandom(2 * 1024 * 1024)
    (folder / "model.safetensors").write_bytes(big)
    (folder / ".tmp-partial").write_text("ignored")

    api = HfApi(endpoint=hub.url, token="hf_fake")
    url = api.create_repo("me/tiny", private=True, exist_ok=True)
    assert url.repo_id == "me/tiny"
    api.create_repo("me/tiny", private=True, exist_ok=True)  # 409, swallowed
    api.create_branch("me/tiny", branch="v1", exist_ok=True)
    api.create_branch("me/tiny", branch="v1", exist_ok=True)
    info = api.upload_folder(repo_id="me/tiny", folder_path=str(folder), revision="v1",
                             commit_message="bake: tiny", ignore_patterns=[".*"])

    repo = hub.repos["me/tiny"]
    assert repo["private"] is True
    v1 = [c for c in repo["commits"] if c["branch"] == "v1"]
    assert len(v1) == 1 and v1[0]["message"] == "bake: tiny" and v1[0]["oid"] == info.oid
    assert sorted(v1[0]["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert v1[0]["lfs"] == ["model.safetensors"]
    assert hub.lfs_uploads == [hashlib.sha256(big).hexdigest()]
    assert repo["branches"]["v1"]["model.safetensors"] == big
    assert sorted(repo["branches"]["main"]) == [".gitattributes"]  # the repo's initial commit
    assert not any("xet" in path for _, path in hub.requests)

    files = api.list_repo_files("me/tiny", revision="v1")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]

    cache = tmp_path / "cache"
    path = hf_hub_download("me/tiny", "model.safetensors", revision="v1", endpoint=hub.url,
                           token="hf_fake", cache_dir=cache)
    assert Path(path).read_bytes() == big
    path = api.hf_hub_download("me/tiny", "config.json", revision="v1", cache_dir=cache)
    assert json.loads(Path(path).read_text()) == {"hidden_size": 8}
    snap = snapshot_download("me/tiny", revision="v1", endpoint=hub.url, token="hf_fake", cache_dir=cache)
    assert Path(snap).name == info.oid and (Path(snap) / "README.md").is_file()

    # the same folder again: nothing changed, so the client makes no commit and uploads nothing
    api.upload_folder(repo_id="me/tiny", folder_path=str(folder), revision="v1", ignore_patterns=[".*"])
    assert len([c for c in repo["commits"] if c["branch"] == "v1"]) == 1
    assert len(hub.lfs_uploads) == 1
