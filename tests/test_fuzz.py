"""Fuzzing the CLI with generated malformed recipes, configs, index files, artifacts, sizes and
dtypes (`bake apply`), data files and counts (`bake learn`, `bake eval`) and push arguments (see
tests/fuzzing.py for the contract). A fixed (derandomized), bounded set of examples runs here, each
command in a fresh process; `eval/fuzz_cli.py` runs as many random ones as asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import fuzzing
import bake
from tiny import COMMON, add_tokenizer, build


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("fuzz")
    model = add_tokenizer(build("llama", d / "model"))  # sharded, with an index
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(0)), d / "v.pt")
    bake.apply(fuzzing.valid_recipe(model, d / "v.pt"), output=d / "baked", progress=False)  # what push uploads
    return model, d / "v.pt", d / "baked"


@pytest.mark.parametrize("target", fuzzing.TARGETS)
def test_fuzz(inputs, target):
    model, vector, baked = inputs

    @settings(max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(data=fuzzing.st.data())
    def run(data):
        root, recipe, m, out = fuzzing.workspace(model, vector)
        try:
            fuzzing.check(recipe, m, out, fuzzing.prepare(target, data.draw, recipe, m), target, baked)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    run()
