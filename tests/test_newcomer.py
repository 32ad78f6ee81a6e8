"""A CLI a newcomer trusts (issue 28, item 7): the friction points met by a new user, each through
the CLI as the issue gives it."""

from __future__ import annotations

import pytest
import torch

import bake
from bake.cli import format_plan, main
from tiny import COMMON, add_tokenizer, build

D = COMMON["hidden_size"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("newcomer")
    model = add_tokenizer(build("llama", d / "model"))
    torch.save(torch.randn(D, generator=torch.Generator().manual_seed(3)), d / "v.pt")
    recipe = {"model": str(model), "verify": {"generate_tokens": 2},
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(d / "v.pt"), "scale": 2.0}]}
    bake.apply(recipe, output=d / "B", progress=False)
    return d


def test_generate_on_a_folder_refuses_base_instead_of_ignoring_it(ws, capsys):
    assert main(["generate", str(ws / "B"), "hello", "--base", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--base" in err and "recipe" in err and len(err.strip().splitlines()) == 1, err


def test_a_yaml_syntax_error_is_one_line_naming_the_file(ws, capsys):
    bad = ws / "bad.yaml"
    bad.write_text("model: x\ninterventions:\n  - kind: steer\n   layers: [1]\n")
    assert main(["plan", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 4" in err and "unicode string" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_plan_wording_counts_in_the_singular_and_kl_is_never_negative(ws):
    recipe = {"model": str(ws / "model"),
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(ws / "v.pt"), "scale": 2.0}]}
    summary = bake.api.plan_summary(bake.plan(recipe, progress=False))
    text = format_plan(summary, tensors=False)
    assert "[1 tensors]" not in text and "[1 tensor]" in text, text
    from bake.verification.verifier import compare

    same = torch.randn(1, 4, 7, dtype=torch.float64)
    m = compare((same, [], []), (same + 1e-17, [], []))
    assert m["kl_mean"] >= 0 and m["kl_max"] >= 0


def test_a_folder_bake_did_not_write_gets_the_right_fix_the_first_time(ws, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    recipe = {"model": str(ws / "model"),
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(ws / "v.pt")}]}
    with pytest.raises(bake.BakeError) as e:  # not "pass --force", which would then be refused too
        bake.apply(recipe, output=mine, progress=False)
    assert "was not written by bake apply" in str(e.value) and "pass --force" not in str(e.value)


def test_a_typo_of_a_local_folder_says_so_offline(ws, monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    from bake.model.source import resolve_model

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(bake.BakeError, match="tiny-qwen-3.*no local folder.*fetched offline"):
        resolve_model("tiny-qwen-3")
