"""`bake push`: upload a baked folder to the Hugging Face Hub in one commit.

Everything goes through huggingface_hub (`create_repo`, `create_branch`, `upload_folder`), so the
endpoint (`HF_ENDPOINT`), token (`HF_TOKEN` or `hf auth login`) and large-file path are the
library's own. The tests run it against a local server that speaks that part of the Hub API.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import card
from .errors import BakeError

IGNORE = [".*", "**/.*", "__pycache__/*"]  # temp files of an interrupted bake or export, hidden files


def _files(folder: Path) -> list[dict]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            out.append({"path": rel.as_posix(), "bytes": p.stat().st_size})
    return out


def _failures(report: dict) -> list[str]:
    out = []
    if report.get("verification", {}).get("status") == "failed":
        out.append("verification failed: " + "; ".join(report["verification"].get("failures", [])))
    for path, e in (report.get("exports") or {}).items():
        if e.get("status") == "failed":
            out.append(f"{e.get('format', '')} export {path} failed verification: " + "; ".join(e.get("failures", [])))
    return out


def push(folder: str | Path, repo: str, private: bool = False, revision: str | None = None,
         dry_run: bool = False, force: bool = False, token: str | None = None,
         message: str | None = None) -> dict:
    """Upload `folder` to `repo` (created if needed; `revision` a branch, created from main if needed).
    Refuses a folder whose bake_report.json records a failed verification unless `force`."""
    folder = Path(folder).resolve()
    report_path = folder / "bake_report.json"
    if not report_path.is_file():
        raise BakeError(f"{folder}: no bake_report.json; `bake push` uploads folders written by `bake apply`")
    report = json.loads(report_path.read_text())
    failures = _failures(report)
    if failures and not force:
        raise BakeError(f"refusing to push {folder.name}: " + " | ".join(failures)
                        + ". Fix the recipe, or pass --force to publish it anyway (the card shows the failure)")
    text = card.render(folder, repo)  # fresh from the report, so the card matches what is uploaded
    if not dry_run:
        (folder / "README.md").write_text(text)
    files = [f for f in _files(folder) if f["path"] != "README.md"]  # the card uploaded is `text`
    files = sorted(files + [{"path": "README.md", "bytes": len(text.encode())}], key=lambda f: f["path"])
    kinds = ", ".join(s["kind"] for s in report["steps"])
    message = message or f"bake {report.get('bake_version', '')}: {kinds} on {report['model']['spec']}"
    plan = {"repo": repo, "revision": revision or "main", "private": private, "message": message,
            "files": files, "card": text, "forced": bool(failures)}
    if dry_run:
        return {**plan, "dry_run": True}

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if private and not api.repo_info(repo).private:
            raise BakeError(f"{repo} already exists and is public; --private does not change an existing repo's "
                            "visibility (change it on the Hub, or push without --private)")
        if revision and revision != "main":
            api.create_branch(repo, branch=revision, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=str(folder), revision=revision,
                                   commit_message=message, ignore_patterns=IGNORE)
    except BakeError:
        raise
    except HfHubHTTPError as e:
        raise BakeError(f"push to {repo} failed: {str(e).splitlines()[0]}") from None
    except Exception as e:  # no connection (the HTTP client's own errors), offline mode, a failed transfer
        raise BakeError(f"push to {repo} failed ({api.endpoint}): {type(e).__name__}: {e}") from None
    return {**plan, "dry_run": False, "url": str(url), "commit_url": commit.commit_url, "commit": commit.oid}
