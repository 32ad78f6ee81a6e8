"""The sha256 manifest of a baked folder, which says whether its files are still the ones bake wrote.

`bake_report.json` holds `files: {relative path: sha256}` for every file bake wrote into the folder
(exports included), except the report itself and the model card `README.md` (re-rendered from the
report by every export and push). `bake verify`, `bake export` and `bake push` check the manifest
first and name every file that changed, went missing or was added. It protects against accidents
(an edited config, a replaced shard, a stray file), not against someone who also rewrites the
report: it is a checksum list, not a signature.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BakeError
from ..model.source import sha256_file

REPORT = "bake_report.json"  # the report of a baked folder (bake/publish/report.py), with the manifest
UNLISTED = {REPORT, "README.md"}


def _listed(folder: Path, under: Path | None = None):
    root = under or folder
    if root.is_file():
        yield root
        return
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or (len(rel.parts) == 1 and rel.name in UNLISTED):
            continue
        if p.is_file() or p.is_symlink():
            yield p


def manifest(folder: Path, under: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} of the files in `folder` (or only those at or under `under`)."""
    out = {}
    for p in _listed(folder, under):
        rel = p.relative_to(folder).as_posix()
        out[rel] = sha256_file(p) if p.is_file() and not p.is_symlink() else "symlink:" + os.readlink(p)
    return out


def check(folder: Path, report) -> dict:
    """Compare the folder with its manifest: {"status": "intact" | "changed" | "unchecked", ...}."""
    expected = report.get("files")
    if not isinstance(expected, dict):
        return {"status": "unchecked", "reason": "the report has no file manifest (baked by an older bake)"}
    found = manifest(folder)
    changed = sorted(f for f in expected if f in found and found[f] != expected[f])
    missing = sorted(f for f in expected if f not in found)
    added = sorted(f for f in found if f not in expected)
    status = "changed" if changed or missing or added else "intact"
    return {"status": status, "files": len(expected), "changed": changed, "missing": missing, "added": added}


def describe(result: dict) -> str:
    """One line naming what differs from the manifest."""
    if result["status"] == "unchecked":
        return result["reason"]
    parts = [f"{k}: {', '.join(result[k][:8])}{' ...' if len(result[k]) > 8 else ''}"
             for k in ("changed", "missing", "added") if result[k]]
    return "; ".join(parts) if parts else f"all {result['files']} files match"


def require_unchanged(folder: Path, report, action: str) -> dict:
    """Raise when files differ from the manifest (a folder without one passes); returns the check."""
    result = check(folder, report)
    if result["status"] == "changed":
        raise BakeError(f"refusing to {action} {folder.name}: its files differ from what bake wrote "
                        f"({describe(result)}); re-bake it with `bake apply`")
    return result
