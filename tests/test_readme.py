"""The coverage table in docs/families.md is eval/coverage.py's output (proven by baking), not hand-written;
the README names the two set-up commands."""

import json
import re
from pathlib import Path

import transformers

from bake.evaluation import coverage

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FAMILIES = ROOT / "docs" / "families.md"
COVERAGE = ROOT / "eval" / "coverage.json"


def rows():
    data = json.loads(COVERAGE.read_text())
    assert data["transformers"] == transformers.__version__, (
        "eval/coverage.json was made with another transformers: rerun .venv/bin/python eval/coverage.py")
    return data["rows"]


def test_families_coverage_table_is_the_coverage_scripts_output():
    text = FAMILIES.read_text()
    m = re.search(r"<!-- coverage-table:start -->\n(.*?)\n<!-- coverage-table:end -->", text, re.S)
    assert m, "docs/families.md lost its coverage-table markers"
    assert m.group(1) == coverage.table(rows()), (
        "docs/families.md's table is stale: paste eval/coverage.py's table between its markers")


def test_coverage_covers_every_causal_lm_type_and_no_bake_failed():
    got = {r["model_type"]: r for r in rows()}
    assert set(got) == set(coverage.causal_lm_types())
    failed = [(mt, k, c[1]) for mt, r in got.items() for k, c in r["cells"].items() if c[0] == "failed"]
    assert not failed, failed


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()
