"""The data a tuned bake is evaluated on: a recipe that `bake tune --pick` resolved (or the folder
baked from it) names, in `provenance.tuned.data`, the files its study split and the sha256 of each
part. `bake eval` measures such a model on the held-out part the trials never saw, found beside
the study (out/tune/STUDY/splits/heldout/INPUT.jsonl, as `bake tune` writes it) and recognised by
its hash, and refuses a data file whose prompts the trials saw."""

from __future__ import annotations

from pathlib import Path

from ..errors import BakeError
from ..files.staging import sha256_file
from .suites import DATA, INPUT_FILES, READS

STUDIES = Path("out") / "tune"  # where `bake tune` keeps a study by default (relative to where it ran)


def tuned_block(recipe_path: Path) -> dict | None:
    """The recipe's `provenance.tuned` block, or None (no recipe, or one that was not tuned)."""
    import yaml

    if not recipe_path.is_file():
        return None
    try:
        data = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # bake eval's own loading reports a broken recipe
    tuned = ((data or {}).get("provenance") or {}).get("tuned") if isinstance(data, dict) else None
    return tuned if isinstance(tuned, dict) and isinstance(tuned.get("data"), dict) else None


def resolve(tuned: dict, suites: list[str], given: dict[str, str], studies: Path = STUDIES) -> tuple[dict, dict]:
    """({input: held-out file} to measure on, {input: where its data comes from, in words}) for the
    inputs the suites read that the study split. A file given with --data, or the default one, that
    holds prompts the trials saw (the study's whole source or its tuning part, by sha256) is refused."""
    study, found, about = tuned.get("study", "?"), {}, {}
    reads = sorted({k for s in suites for k in READS.get(s, ())} & set(tuned["data"]))
    for key in reads:
        e = tuned["data"][key]
        seen = {e.get("sha256"), (e.get("tuning") or {}).get("sha256")} - {None}
        held = (e.get("heldout") or {}).get("sha256")
        if key in given:
            path = Path(given[key])
            if path.is_file() and sha256_file(path) in seen:
                raise BakeError(f"--data {key}={path}: study {study} tuned this model's parameters on (part of) this "
                                f"file; measure on its held-out part ({studies / study / 'splits/heldout' / key}.jsonl)")
            about[key] = f"{path} (given with --data)"
            continue
        cand = studies / study / "splits" / "heldout" / f"{key}.jsonl"
        if held and cand.is_file() and sha256_file(cand) == held:
            found[key] = str(cand)
            about[key] = (f"{cand}: the held-out part of study {study} ({e['heldout'].get('n', '?')} items of "
                          f"{e.get('source', '?')}), never seen by its trials")
            continue
        default = DATA / INPUT_FILES[key]
        if sha256_file(default) in seen:
            raise BakeError(f"{key}: study {study} tuned this model on bake eval's default {key} prompts, and its "
                            f"held-out part is not at {cand}; give it with --data {key}=PATH (bake tune wrote it "
                            "to STUDY_DIR/splits/heldout/) so the figures are not measured on tuning prompts")
        about[key] = f"bake eval's default {INPUT_FILES[key]} (study {study} tuned on another file, {e.get('source', '?')})"
    return found, about
