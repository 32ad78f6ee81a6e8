"""An export format is one unit: a toy format declared in this one file (its options, its runtime's
check, its card lines and serving row) runs through `bake export`, a recipe's `export:` and the
model card with nothing else touched (issue 28, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bake
from bake.cli import main
from bake.exporters import base
from tiny import COMMON, add_tokenizer, build


class ToyExporter(base.Exporter):
    """Writes the baked model's config and one logit, and checks the logit against PyTorch."""

    name, folder = "toy", False
    help = "a toy format: the config and the first logit of a probe, in one JSON file"

    def arguments(self, sp):
        sp.add_argument("--token", type=int, default=1, help="the token whose logit is written")

    def given(self, args):
        return {"token": args.token}

    def options(self, folder, report, token=1, **given):
        return {"token": token}

    def default_output(self, folder, name, opts):
        return folder / f"{name}.toy.json"

    def write(self, folder, out, opts, progress, name, trust_remote_code):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            logit = model(input_ids=torch.tensor([[opts["token"]]])).logits[0, -1, 0].item()
        out.write_text(json.dumps({"config": json.loads((folder / "config.json").read_text()), "logit": logit}))
        return {"token": opts["token"]}

    def verify(self, folder, out, opts, written, progress, prompts, trust_remote_code):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            want = model(input_ids=torch.tensor([[written["token"]]])).logits[0, -1, 0].item()
        got = json.loads(Path(out).read_text())["logit"]
        ok = abs(got - want) <= 1e-6
        return {"status": "passed" if ok else "failed", "metrics": {"max_abs_logit": abs(got - want)},
                "failures": [] if ok else ["logit differs"], "runtime": "json", "against": "baked PyTorch"}

    def card_use(self, entry):
        return [f"Toy (`{entry['path']}`): read it with `json.load`."]

    def serving(self, config, config_changes):
        return [("toy runtime", "yes", "it reads any config")]


@pytest.fixture
def toy():
    base.register(ToyExporter)
    try:
        yield
    finally:
        del base.EXPORTERS["toy"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("plug")
    m = add_tokenizer(build("llama", d / "model"))
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(1)), d / "v.pt")
    return d


def test_a_toy_format_in_one_file_runs_through_export_apply_and_the_card(toy, model, tmp_path, capsys):
    recipe = {"model": str(model / "model"), "verify": {"generate_tokens": 2}, "export": ["hf", "toy"],
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(model / "v.pt")}]}
    rep = bake.apply(recipe, output=tmp_path / "baked", progress=False)  # a recipe's `export:` takes it
    assert rep["exports"]["baked.toy.json"]["status"] == "passed"
    card = (tmp_path / "baked" / "README.md").read_text()
    assert "Toy (`baked.toy.json`): read it with `json.load`." in card  # its card lines
    assert "| toy runtime | yes | it reads any config |" in card  # its serving row
    assert "- toy" in card.split("---")[1]  # and its tag
    assert main(["export", "toy", str(tmp_path / "baked"), "--token", "3", "--out", str(tmp_path / "t.json"),
                 "-q"]) == 0  # `bake export toy` with its own option
    assert "toy export: PASSED" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the option is the toy format's own
        main(["export", "onnx", str(tmp_path / "baked"), "--token", "3"])


def test_an_unregistered_format_is_refused_by_the_recipe_and_the_cli(model, tmp_path, capsys):
    recipe = {"model": str(model / "model"), "export": ["hf", "toy"],
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(model / "v.pt")}]}
    with pytest.raises(bake.RecipeError, match="unknown export format 'toy'; expected one of hf, onnx, gguf"):
        bake.plan(recipe, progress=False)
    with pytest.raises(SystemExit):
        main(["export", "toy", str(tmp_path)])
