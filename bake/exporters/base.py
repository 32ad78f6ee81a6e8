"""The interface every export format implements, and where `bake` finds them.

`bake apply` (with `export: [...]` in the recipe) and `bake export` call only these methods:
`check` before anything is baked, `options` and `default_output` to settle what to write, then
`write` and `verify` inside bake's staging (`bake/files/staging.py`), which picks the temp path,
protects the folder and what `reads` names, and renames the result into place. An exporter also
owns its options (`arguments` for `bake export NAME`, `from_recipe` for a recipe's keys), its
lines in the model card (`card_use`) and its runtime's serving notes (`serving`).

Adding a format is one module with an `Exporter` subclass decorated with `@register`: the
recipe's `export:` values, `bake export`'s sub-commands, the card and the serving table read the
registry. The built-in formats (ONNX, GGUF) are modules here, imported when the registry is first
read; a plug-in registers itself when its module is imported.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

from ..errors import BakeError

BUILTIN = ("onnx", "gguf")  # modules of bake.exporters, imported when the registry is first read


class Exporter:
    name: ClassVar[str]
    folder: ClassVar[bool]  # writes a folder (True) or one file
    help: ClassVar[str] = ""  # `bake export NAME`'s one line

    def arguments(self, sp) -> None:
        """This format's own options of `bake export NAME` (besides FOLDER, --out and --force)."""

    def given(self, args) -> dict:
        """The user's settings of one `bake export NAME`, from those options (passed to `check` and `options`)."""
        return {}

    def from_recipe(self, recipe) -> dict:
        """The same settings, from a recipe that lists this format in `export:`."""
        return {}

    def card_use(self, entry: dict) -> list[str]:
        """Lines of the model card's "Use" section for an export recorded as `entry` (inside the folder)."""
        return []

    def serving(self, config: dict, config_changes: dict) -> list[tuple[str, str, str]]:
        """(runtime, serves it?, why) rows of the card's serving table for this format's runtime."""
        return []

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


EXPORTERS: dict[str, Exporter] = {}


def register(cls: type[Exporter]) -> type[Exporter]:
    """Register an export format (a class decorator). A name registered twice is a programming error."""
    if cls.name in EXPORTERS or cls.name == "hf":
        raise RuntimeError(f"export format {cls.name!r} is registered twice")
    EXPORTERS[cls.name] = cls()
    return cls


def formats() -> tuple[str, ...]:
    """The registered formats: the built-in ones, then plug-ins, in registration order."""
    for name in BUILTIN:
        if name not in EXPORTERS:
            importlib.import_module(f"{__package__}.{name}")
    return BUILTIN + tuple(n for n in EXPORTERS if n not in BUILTIN)  # (whatever order they were imported in)


def get(fmt: str) -> Exporter:
    if fmt not in formats():
        raise BakeError(f"unknown export format {fmt!r}; expected {' or '.join(formats())}")
    return EXPORTERS[fmt]
