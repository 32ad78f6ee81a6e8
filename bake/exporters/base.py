"""The interface every export format implements, and where `bake` finds them.

`bake apply` (with `export: [...]` in the recipe) and `bake export` call only these methods:
`check` before anything is baked, `options` and `default_output` to settle what to write, then
`write` and `verify` inside bake's staging (`bake/files/staging.py`), which picks the temp path,
protects the folder and what `reads` names, and renames the result into place. Adding a format
is one module in `bake/exporters/` whose `EXPORTER` is an `Exporter`, plus its name in `FORMATS`
(modules load when used: ONNX pulls in torch.onnx and onnxruntime).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

from ..errors import BakeError

FORMATS = ("onnx", "gguf")  # each the name of its module here


class Exporter:
    name: ClassVar[str]
    folder: ClassVar[bool]  # writes a folder (True) or one file

    def check(self, config: dict, model: Path, origin: dict, **given) -> None:
        """Raise NotBakeable, before baking, when the baked model (`config`, baked from the checkpoint
        at `model`, which came from `origin`) cannot be exported with the user's settings `given`."""

    def options(self, folder: Path, report, **given) -> dict:
        """The settings of one export of a baked folder, from the user's (`given`) and its report."""
        return {}

    def default_output(self, folder: Path, name: str, opts: dict) -> Path:
        raise NotImplementedError

    def reads(self, opts: dict) -> list[Path]:
        """What the export reads besides the folder: no output may replace it."""
        return []

    def write(self, folder: Path, out: Path, opts: dict, progress: bool, name: str, trust_remote_code: bool) -> dict:
        """Write the export of `folder` to `out` (a temp path: an empty folder, or a file to create);
        returns what to record about it."""
        raise NotImplementedError

    def verify(self, folder: Path, out: Path, opts: dict, written: dict, progress: bool, prompts: list[str] | None,
               trust_remote_code: bool) -> dict:
        """Run `out` in its own runtime against the baked PyTorch model: {"status", "metrics",
        "failures", ...}. `written`: what `write` returned."""
        raise NotImplementedError


def get(fmt: str) -> Exporter:
    if fmt not in FORMATS:
        raise BakeError(f"unknown export format {fmt!r}; expected {' or '.join(FORMATS)}")
    return importlib.import_module(f"{__package__}.{fmt}").EXPORTER
