"""The README, docs/ and eval/README.md point somewhere real: every relative link reaches a file (and,
for `#anchor` links, a heading), and every `bake ...` command line in a code block parses with the
CLI's own parser (a command or option the CLI lacks fails here, naming the file and line)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest

from bake.cli import parser as cli_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "eval" / "README.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose_lines(text: str, blank_code: bool = True):
    """(line number, line) outside fenced code blocks, inline code spans blanked out unless told."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line) if blank_code else line


def code_blocks(text: str):
    """(line number, line) inside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield n, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(), blank_code=False):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.add(base if k == 0 else f"{base}-{k}")
    return out


def links(path: Path):
    """Targets of the markdown links and images outside code."""
    for _, line in prose_lines(path.read_text()):
        for rx in (LINK, IMAGE):
            for m in rx.finditer(line):
                yield m.group(1)


def test_slug_follows_github():
    assert slug("Set-up: the two commands") == "set-up-the-two-commands"
    assert slug("`out_of_core.py`") == "out_of_corepy"
    assert slug("Evaluation: `bake eval`") == "evaluation-bake-eval"
    assert slug("`approximate: neurons` on SmolLM2") == "approximate-neurons-on-smollm2"
    assert slug("Larger than memory, and across processes") == "larger-than-memory-and-across-processes"


def test_the_docs_exist():
    for path in DOCS:
        assert path.is_file(), f"{_rel(path)} is missing"
    assert (ROOT / "docs" / "README.md").is_file(), "docs/README.md is the index of the docs"


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_point_somewhere(path):
    bad = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / unquote(file_part)).resolve()
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                bad.append(f"{target}: an anchor into a file that is not markdown")
            elif unquote(anchor) not in anchors(dest):
                bad.append(f"{target}: no heading with anchor #{anchor} in {_rel(dest)}")
    assert not bad, f"{_rel(path)}: " + "; ".join(bad)


def bake_commands(path: Path):
    """(line number, command) for each `bake ...` / `.venv/bin/bake ...` line of a code block, with its
    backslash-continued lines joined (the comment is dropped by `split_command`). A line whose next word
    does not start like a command or an option is a program's output, not a command line."""
    lines = list(code_blocks(path.read_text()))
    i = 0
    while i < len(lines):
        n, line = lines[i]
        i += 1
        stripped = line.strip()
        if not (stripped.startswith("bake ") or stripped.startswith(".venv/bin/bake ")):
            continue
        if not re.match(r"[a-z-]", stripped.split(" ", 1)[1].lstrip()):  # program output: "bake (float64): ..."
            continue
        while stripped.endswith("\\") and i < len(lines):
            stripped = stripped[:-1] + " " + lines[i][1].strip()
            i += 1
        yield n, stripped


def split_command(command: str) -> list[str]:
    """shlex words of a command line, without a `# comment` (a `#` that starts a word; `file#key` stays)."""
    lex = shlex.shlex(command, posix=True, punctuation_chars=False)
    lex.whitespace_split = True
    lex.commenters = ""
    words = []
    for word in lex:
        if word.startswith("#"):
            break
        words.append(word)
    return words


def test_split_command_drops_comments_only():
    assert split_command('bake apply r.yaml   # bake "it"') == ["bake", "apply", "r.yaml"]
    assert split_command("bake learn steer --out a.safetensors#vector") == [
        "bake", "learn", "steer", "--out", "a.safetensors#vector"]


def parse_error(argv: list[str]) -> str | None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli_parser().parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {e.code}"
    return None


def test_parse_error_catches_unknown_options():
    assert parse_error(["apply", "r.yaml"]) is None
    assert "unrecognized arguments" in parse_error(["export", "onnx", "f", "--output", "x"])
    assert "invalid choice" in parse_error(["bakeit", "r.yaml"])


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_bake_command_lines_use_what_the_cli_has(path):
    bad = []
    for n, command in bake_commands(path):
        argv = split_command(command)[1:]  # drop `bake` / `.venv/bin/bake`
        why = parse_error(argv)
        if why:
            bad.append(f"{_rel(path)}:{n}: {command!r}: {why}")
    assert not bad, "\n".join(bad)


def test_the_docs_show_bake_commands():
    """The command check above has something to check: the README's quick start at least."""
    assert len(list(bake_commands(ROOT / "README.md"))) >= 8
