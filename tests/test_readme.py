"""The README's exactness table is generated from the adapters, not hand-written."""

import re
from pathlib import Path

from bake.cli import exactness_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_exactness_table_matches_adapters():
    text = README.read_text()
    m = re.search(r"<!-- exactness-table:start -->\n(.*?)\n<!-- exactness-table:end -->", text, re.S)
    assert m, "README lost its exactness-table markers"
    assert m.group(1) == exactness_table(), "README table is stale: paste the output of `bake arch --table`"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()
