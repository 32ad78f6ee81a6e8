"""Fuzzing the CLI with generated malformed recipes, configs, index files and artifacts (see
tests/fuzzing.py for the contract). A fixed (derandomized), bounded set of examples runs here, each
`bake apply` in a fresh process; `eval/fuzz_cli.py` runs as many random ones as asked."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import fuzzing
from tiny import COMMON, build

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fuzz")
    model = build("llama", d / "model")  # sharded, with an index
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(0)), d / "v.pt")
    return model, d / "v.pt"


def _workspace(model: Path, vector: Path):
    """A fresh folder per example: the recipe's folder (recipe + vector), a model copy, and the output path."""
    root = Path(tempfile.mkdtemp(prefix="bake-fuzz-"))
    (root / "recipe").mkdir()
    shutil.copy(vector, root / "recipe" / "v.pt")
    shutil.copytree(model, root / "model")
    (root / "outputs").mkdir()
    return root, root / "recipe" / "recipe.yaml", root / "model", root / "outputs" / "out"


def test_fuzz_recipes(inputs):
    model, vector = inputs

    @SETTINGS
    @given(data=fuzzing.st.data())
    def run(data):
        root, recipe, m, out = _workspace(model, vector)
        try:
            recipe.write_text(data.draw(fuzzing.recipe_texts(m, recipe.parent / "v.pt")))
            fuzzing.check(recipe, m, out, "recipe")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    run()


def test_fuzz_configs(inputs):
    model, vector = inputs

    @SETTINGS
    @given(edit=fuzzing.config_edits())
    def run(edit):
        root, recipe, m, out = _workspace(model, vector)
        try:
            edit(m)
            recipe.write_text(fuzzing.yaml.safe_dump(fuzzing.valid_recipe(m, recipe.parent / "v.pt")))
            fuzzing.check(recipe, m, out, edit.label)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    run()


def test_fuzz_index_files(inputs):
    model, vector = inputs

    @SETTINGS
    @given(edit=fuzzing.index_edits())
    def run(edit):
        root, recipe, m, out = _workspace(model, vector)
        try:
            edit(m)
            recipe.write_text(fuzzing.yaml.safe_dump(fuzzing.valid_recipe(m, recipe.parent / "v.pt")))
            fuzzing.check(recipe, m, out, edit.label)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    run()


def test_fuzz_artifacts(inputs):
    model, vector = inputs

    @SETTINGS
    @given(artifact=fuzzing.artifact_files())
    def run(artifact):
        suffix, blob = artifact
        root, recipe, m, out = _workspace(model, vector)
        try:
            (recipe.parent / f"a{suffix}").write_bytes(blob)
            recipe.write_text(fuzzing.yaml.safe_dump(fuzzing.valid_recipe(m, recipe.parent / f"a{suffix}")))
            fuzzing.check(recipe, m, out, f"artifact {suffix} ({len(blob)} bytes)")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    run()
