"""The folders are the pipeline's stages and the imports obey them: import-linter checks the layers
contract in pyproject.toml (each stage imports only the stages below it, function-level imports
included), so an upward import or a cycle between stages fails here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_obey_the_layers():
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout, res.stdout[-2000:]
