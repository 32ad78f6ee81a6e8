"""`bake push`: upload a baked folder to the Hugging Face Hub in one commit.

Everything goes through huggingface_hub (`create_repo`, `create_branch`, `create_commit` with the
exact file list that `--dry-run` prints), so the
endpoint (`HF_ENDPOINT`), token (`HF_TOKEN` or `hf auth login`) and large-file path are the
library's own. The tests run it against a local server that speaks that part of the Hub API.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BakeError, first_line
from ..write import integrity
from .report import REPORT, Report
from ..files.staging import resolve_path
from . import card


def _files(folder: Path) -> list[dict]:
    """The files uploaded: everything in the folder but hidden files (an interrupted export's temp
    files, bake's marker and lock) and the model card (rendered fresh). A symlink is refused: it
    could publish a file from outside the folder."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or rel.as_posix() == "README.md":
            continue
        if p.is_symlink():
            raise BakeError(f"refusing to push {folder.name}: {rel} is a symlink (to {os.readlink(p)}); bake uploads "
                            "only regular files inside the folder")
        if p.is_file():
            out.append({"path": rel.as_posix(), "bytes": p.stat().st_size})
    return out


def check_repo_id(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise BakeError(f"--repo {repo!r} is not a valid Hub repo id ({first_line(e)}); use name or user/name "
                        "(letters, digits, '-', '_', '.'; at most 96 characters)") from None


def check_revision(revision: str | None) -> None:
    """A branch name the Hub (git) accepts: no `..`, no leading or trailing `/`, no control characters,
    spaces or `~^:?*[\\`, not ending in `.lock`."""
    if revision is None:
        return
    import re

    if (not revision or ".." in revision or revision.startswith(("/", "-", ".")) or revision.endswith(("/", ".lock", "."))
            or "//" in revision or "@{" in revision or re.search(r"[\x00-\x20~^:?*\[\\\x7f]", revision)):
        raise BakeError(f"--revision {revision!r} is not a valid branch name (no '..', spaces, '~^:?*[\\', "
                        "leading or trailing '/'); use a name such as v1 or experiments/steer")


def push(folder: str | Path, repo: str, private: bool = False, revision: str | None = None,
         dry_run: bool = False, force: bool = False, token: str | None = None,
         message: str | None = None) -> dict:
    """Upload `folder` to `repo` (created if needed; `revision` a branch, created from main if needed)
    in one commit. Refuses a folder whose bake_report.json records a failed verification, or whose
    files differ from the sha256 manifest bake wrote, unless `force`. The local card is rewritten
    only after the upload succeeded."""
    check_repo_id(repo)
    check_revision(revision)
    folder = resolve_path(folder, "folder")
    if not (folder / REPORT).is_file():
        raise BakeError(f"{folder}: no {REPORT}; `bake push` uploads folders written by `bake apply`")
    report = Report.read(folder)
    failures = report.failures()
    files_check = integrity.check(folder, report)
    if files_check["status"] != "intact":
        failures.append(f"files differ from what bake wrote ({integrity.describe(files_check)})")
    if failures and not force:
        raise BakeError(f"refusing to push {folder.name}: " + " | ".join(failures)
                        + ". Re-bake it with `bake apply`, or pass --force to publish it anyway")
    try:
        text = card.render(folder, repo, report)  # fresh from the report, so the card matches what is uploaded
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BakeError(f"{folder / REPORT}: the report lacks what the model card needs ({type(e).__name__}: {e}); "
                        "re-bake the folder with `bake apply`") from None
    files = _files(folder)
    listed = sorted(files + [{"path": "README.md", "bytes": len(text.encode())}], key=lambda f: f["path"])
    kinds = ", ".join(s.get("kind", "?") for s in report["steps"])
    message = message or f"bake {report.get('bake_version', '')}: {kinds} on {report['model'].get('spec', '')}"
    plan = {"repo": repo, "revision": revision or "main", "private": private, "message": message,
            "files": listed, "card": text, "forced": bool(failures)}
    if dry_run:
        return {**plan, "dry_run": True}

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    ops = [CommitOperationAdd(f["path"], str(folder / f["path"])) for f in files]
    ops.append(CommitOperationAdd("README.md", text.encode()))
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if private and not api.repo_info(repo).private:
            raise BakeError(f"{repo} already exists and is public; --private does not change an existing repo's "
                            "visibility (change it on the Hub, or push without --private)")
        if revision and revision != "main":
            api.create_branch(repo, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id=repo, operations=ops, revision=revision, commit_message=message)
    except BakeError:
        raise
    except HfHubHTTPError as e:
        raise BakeError(f"push to {repo} failed: {first_line(e)}") from None
    except Exception as e:  # no connection (the HTTP client's own errors), offline mode, a failed transfer
        raise BakeError(f"push to {repo} failed ({api.endpoint}): {type(e).__name__}: {e}") from None
    (folder / "README.md").write_text(text)  # the local card now matches the pushed one
    return {**plan, "dry_run": False, "url": str(url), "commit_url": commit.commit_url, "commit": commit.oid}
