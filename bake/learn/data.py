"""Text data for learning: CSV, JSONL, JSON lists, plain text, or a Hub dataset id[:split].

Hub ids (and local dataset folders, which is how that path is tested) are loaded with the
optional `datasets` package (`pip install bake[data]`).

`load(spec)` returns texts and, when the data has labels, 0/1 labels. Column names are
configurable; two common layouts have names: `jigsaw` (comment_text, toxic >= 0.5) and `davidson`
(tweet, class: 0 hate speech and 1 offensive -> 1, 2 neither -> 0).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import BakeError

TEXT_COLUMNS = ("text", "comment_text", "tweet", "instruction", "prompt", "sentence", "content")
LABEL_COLUMNS = ("label", "toxic", "labels", "target")
LAYOUTS = {
    "jigsaw": ("comment_text", "toxic", lambda v: int(float(v) >= 0.5)),
    "davidson": ("tweet", "class", lambda v: int(int(float(v)) in (0, 1))),
}


@dataclass
class Dataset:
    texts: list[str]
    labels: list[int] | None
    source: str

    def of(self, label: int) -> list[str]:
        """The texts with this label."""
        return [t for t, y in zip(self.texts, self.labels or []) if y == label]


MAX_ITEM_CHARS = 1_000_000  # one example (a line, a CSV field): far beyond any context window
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".arrow")


def lines(path: Path, keep_ends: bool = False):
    """(line number, line) of a UTF-8 text file, read in bounded pieces: a line longer than
    MAX_ITEM_CHARS is refused when its first MAX_ITEM_CHARS characters are read, never read whole."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            n = 0
            while True:
                line = f.readline(MAX_ITEM_CHARS + 1)
                if not line:
                    return
                n += 1
                if len(line) > MAX_ITEM_CHARS and not line.endswith("\n"):
                    raise BakeError(f"{path}: line {n} is longer than {MAX_ITEM_CHARS:,} characters; one example a "
                                    "line is expected (is this a data file?)")
                yield n, line if keep_ends else line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise BakeError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded); save it as UTF-8") from None
    except OSError as e:
        raise BakeError(f"{path}: cannot read the data file: {e.strerror or e}") from None


def json_lines(path: Path) -> list:
    """The objects of a JSONL file, one a line; a malformed line is an error naming it."""
    rows = []
    for n, line in lines(path):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BakeError(f"{path}: line {n} is not valid JSON ({e.msg}, column {e.colno})") from None
    return rows


def _rows(path: Path) -> list:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        try:  # bounded lines, checked encoding; quoted fields may span lines
            csv.field_size_limit(MAX_ITEM_CHARS)
            return list(csv.DictReader((line for _, line in lines(path, keep_ends=True)),
                                       delimiter="\t" if suffix == ".tsv" else ","))
        except csv.Error as e:
            raise BakeError(f"{path}: malformed {suffix[1:].upper()} ({e})") from None
    if suffix == ".jsonl":
        return json_lines(path)
    if suffix == ".json":
        try:
            data = json.loads("".join(line for _, line in lines(path, keep_ends=True)))
        except json.JSONDecodeError as e:
            raise BakeError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
        if not isinstance(data, list):
            raise BakeError(f"{path}: a JSON data file is a list of strings or of objects")
        return data
    if suffix in (".txt", ""):
        return [line for _, line in lines(path) if line.strip()]
    raise BakeError(f"{path}: unsupported data file {suffix!r}; use .csv, .tsv, .jsonl, .json or .txt")


def _hub_rows(spec: str) -> list:
    try:
        import datasets  # optional: only for Hub dataset ids
    except ImportError:
        raise BakeError(f"data {spec!r} is not a local file; loading a Hub dataset needs `pip install datasets`") from None
    name, _, split = spec.partition(":")
    try:
        return list(datasets.load_dataset(name, split=split or "train"))
    except Exception as e:
        raise BakeError(f"data {spec!r}: cannot load from the Hub ({type(e).__name__}: {e})") from None


def _pick(row: dict, names, given: str | None, what: str, source: str) -> str:
    if given is not None:
        if given not in row:
            raise BakeError(f"{source}: no {what} column {given!r}; columns: {', '.join(row)}")
        return given
    for n in names:
        if n in row:
            return n
    raise BakeError(f"{source}: cannot find a {what} column (tried {', '.join(names)}); "
                    f"name it with --{what}-column; columns: {', '.join(row)}")


def load(spec: str | Path, text_column: str | None = None, label_column: str | None = None,
         layout: str | None = None, need_labels: bool = False, limit: int | None = None,
         seed: int = 0) -> Dataset:
    """Read texts (and labels). `limit` keeps a seeded sample, stratified by label when there are labels."""
    path = Path(spec)
    if limit is not None and limit < 1:
        raise BakeError(f"--limit {limit}: give at least 1 example")
    if path.is_dir() and not any(p.suffix.lower() in DATA_SUFFIXES or p.name == "dataset_info.json"
                                 for p in path.rglob("*") if p.is_file()):
        raise BakeError(f"data {spec}: a folder with no data files in it ({', '.join(DATA_SUFFIXES)}); give a data "
                        "file, or a folder holding a dataset")
    # a file is read here; a Hub dataset id (or a local dataset folder) goes through `datasets`
    rows = _rows(path) if path.is_file() else _hub_rows(str(spec))
    source = str(spec)
    if not rows:
        raise BakeError(f"{source}: no examples")
    convert = lambda v: int(float(v))  # noqa: E731
    if layout is not None:
        if layout not in LAYOUTS:
            raise BakeError(f"unknown data layout {layout!r}; known: {', '.join(LAYOUTS)}")
        text_column, label_column, convert = (text_column or LAYOUTS[layout][0], label_column or LAYOUTS[layout][1],
                                              LAYOUTS[layout][2])
    if isinstance(rows[0], str):
        texts, labels = [str(r) for r in rows], None
    else:
        tcol = _pick(rows[0], TEXT_COLUMNS, text_column, "text", source)
        lcol = None
        if need_labels or label_column is not None:
            lcol = _pick(rows[0], LABEL_COLUMNS, label_column, "label", source)
        texts = [str(r[tcol]) for r in rows]
        labels = None
        if lcol is not None:
            try:
                labels = [convert(r[lcol]) for r in rows]
            except (TypeError, ValueError) as e:
                raise BakeError(f"{source}: label column {lcol!r} has a value that is not a number: {e}") from None
            bad = sorted({lab for lab in labels if lab not in (0, 1)})
            if bad:
                raise BakeError(f"{source}: labels must be 0/1 (got {bad[:5]}); for Davidson's `class` use --layout davidson")
    if need_labels and labels is None:
        raise BakeError(f"{source}: labels are needed (a CSV/JSONL with a label column)")
    if limit is not None and limit < len(texts):
        rng = random.Random(seed)
        if labels is None:
            keep = sorted(rng.sample(range(len(texts)), limit))
        else:  # stratified: keep the class ratio
            keep = []
            for cls in (0, 1):
                idx = [i for i, lab in enumerate(labels) if lab == cls]
                keep += rng.sample(idx, round(limit * len(idx) / len(labels)))
            keep.sort()
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep] if labels is not None else None
    return Dataset(texts, labels, source)
