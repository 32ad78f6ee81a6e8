"""Held out by construction: every data input a study reads is split once, seeded, into a tuning
part (the trials see only it) and a held-out part (`--pick` reports on it), written as files beside
the study with their sizes and sha256, so the report can show that they never overlap."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import BakeError
from ..files.staging import replacing, sha256_file



def _items(key: str, path: Path) -> list[dict]:
    """The input's examples as JSON objects (what the split files hold)."""
    from ..learn.data import json_lines, load

    if key == "mc":
        return json_lines(path)
    ds = load(path, need_labels=key == "toxicity")
    return [{"text": t, **({"label": int(lab)} if ds.labels is not None else {})}
            for t, lab in zip(ds.texts, ds.labels if ds.labels is not None else [None] * len(ds.texts))]


def halves(items: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(tuning, held-out): a seeded shuffle, stratified by label when the items have one; each part
    gets at least one item of each label group with two or more."""
    groups: dict = {}
    for it in items:
        groups.setdefault(it.get("label"), []).append(it)
    rng = random.Random(seed)
    tune, held = [], []
    for label in sorted(groups, key=str):
        g = groups[label][:]
        rng.shuffle(g)
        n_held = min(len(g) - 1, max(1, round(len(g) * holdout))) if len(g) > 1 else 0
        held += g[:n_held]
        tune += g[n_held:]
    return tune, held


def split(inputs: dict[str, Path], holdout: float, seed: int, folder: Path) -> dict:
    """Write folder/tuning/<input>.jsonl and folder/heldout/<input>.jsonl for each input; returns
    {input: {source, sha256, tuning: {path, n, sha256}, heldout: {...}}}."""
    out = {}
    for key, src in sorted(inputs.items()):
        raw, items, seen = _items(key, src), [], set()
        for x in raw:  # a repeated example would land in both parts: kept once
            k = json.dumps(x, sort_keys=True)
            if k not in seen:
                seen.add(k)
                items.append(x)
        if len(items) < 2:
            raise BakeError(f"tune data {key}={src}: {len(items)} example(s); a tuning and a held-out part need 2 or more")
        tune, held = halves(items, holdout, seed)
        entry = {"source": str(src), "sha256": sha256_file(src), "n": len(items), "repeats dropped": len(raw) - len(items)}
        for name, part in (("tuning", tune), ("heldout", held)):
            path = folder / name / f"{key}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path) as tmp:  # whole or not at all: workers on one study write the same files
                Path(tmp).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in part), encoding="utf-8")
            entry[name] = {"path": str(path), "n": len(part), "sha256": sha256_file(path)}
        out[key] = entry
    return out


def inputs_for(suites: list[str], given: dict[str, Path]) -> dict[str, Path]:
    """The data files the suites read: given ones, else bake eval's defaults."""
    from ..evaluation.suites import DATA, INPUT_FILES, READS

    keys = sorted({k for s in suites for k in READS[s]})
    return {k: Path(given[k]) if k in given else DATA / INPUT_FILES[k] for k in keys}
