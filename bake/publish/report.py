"""The report of a baked folder (`bake_report.json`) as one typed object.

`bake apply` builds it, the verifier's result and each export's result are recorded into it, the
model card is rendered from it and `bake push` refuses by it; it is written once per change, never
re-read and patched. Its top-level fields are typed and checked when a folder's report is read
(a corrupt or foreign file gets one clear error); the sections other tools read too (the model,
each step, each edit) stay the JSON objects the file holds; the verification and each export are
typed results (bake/verification/result.py, bake/exporters/result.py) that the CLI and the card
both render. It reads like the dict it is stored as (`report["verification"]["status"]`), so
scripts written against the file keep working.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import BakeError
from ..exporters.result import ExportResult
from ..files.staging import replacing
from ..results import Record
from ..verification.result import Verification
from ..write.integrity import REPORT


class Report(Record):
    """bake_report.json: the plan's summary, the verification, each export, the file manifest."""

    model: dict[str, Any]
    steps: list[dict[str, Any]]
    edits: list[dict[str, Any]]
    verification: Verification
    dtype: str | None = None
    exact: bool | None = None
    config_changes: dict[str, Any] = {}
    bake_version: str = ""
    output: str = ""
    seconds: float | None = None
    exports: dict[str, ExportResult] = {}
    files: dict[str, str] | None = None  # the sha256 manifest (bake/write/integrity.py); None: an older bake

    # --- reading and writing ----------------------------------------------------------------------

    @classmethod
    def read(cls, folder: Path, required: bool = True) -> Report | None:
        """The folder's report (None when it has none and it is not `required`)."""
        path = Path(folder) / REPORT
        if not path.is_file():
            if required:
                raise BakeError(f"{folder}: no {REPORT}; is this a folder written by `bake apply`?")
            return None
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BakeError(f"{path}: corrupt report ({e}); re-bake the folder with `bake apply`") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            bad = sorted({str(err["loc"][0]) for err in e.errors() if err["loc"]}) or ["its top level"]
            raise BakeError(f"{path}: not a bake report (no valid {', '.join(bad)}); re-bake the folder "
                            "with `bake apply`") from None

    def write(self, folder: Path) -> None:
        """Replace the folder's report atomically."""
        with replacing(Path(folder) / REPORT) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # --- what the pipeline records ----------------------------------------------------------------

    def record_export(self, result: dict, written: dict[str, str]) -> None:
        """One entry per written file or folder; `written`: the sha256 of each file it wrote inside the
        folder, which replace the manifest's entries under its path."""
        result = ExportResult.model_validate(result.to_dict() if isinstance(result, ExportResult) else result)
        path = result.path
        self.exports = {**self.exports, path: result}
        if self.files is not None and written:
            kept = {f: h for f, h in self.files.items() if f != path and not f.startswith(path + "/")}
            self.files = {**kept, **written}

    def failures(self) -> list[str]:
        """What failed verification: the bake's, then each export's (empty when nothing failed)."""
        out = []
        if self.verification.status == "failed":
            out.append("verification failed: " + "; ".join(self.verification.failures))
        for path, e in self.exports.items():
            if e.status == "failed":
                out.append(f"{e.format} export {path} failed verification: " + "; ".join(e.failures))
        return out
