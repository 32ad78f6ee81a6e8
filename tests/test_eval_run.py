"""`bake eval` end to end on tiny random models: the report files, the card section, consistency of
hooked and baked, sweep bookkeeping, aura strength, the offline scorer and the errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import bake
from bake import api
from bake.cli import main
from bake.errors import BakeError
from bake.evaluation import suites
from tiny import COMMON, build, steered

# short runs: 2 samples x 6 tokens per toxicity prompt, replies read at 4 and 8 tokens
FAST = ["--samples", "2", "--tokens", "6", "--lengths", "4,8", "--limit", "6", "-q"]
OPTS = {"samples": 2, "tokens": 6, "lengths": (4, 8), "limit": 6, "kl_tokens": 8}


@pytest.fixture(scope="module")
def steer(tmp_path_factory):
    """A tiny llama, a steer recipe on it and its bake."""
    d = tmp_path_factory.mktemp("eval")
    src, recipe = steered(d)
    return d, src, recipe


def test_first_half_and_scorer_on_hand_made_texts():
    assert suites.first_half("one two three four five six") == "one two three"
    assert suites.first_half("one two three four five") == "one two"
    from bake.evaluation.scorers import toxicity

    score, about = toxicity("profanity-check")
    assert "alt-profanity-check" in about
    s = score(["you are a fucking idiot and a piece of shit", "the weather is lovely and the tea is warm"])
    assert s[0] > 0.8 > 0.2 > s[1]
    with pytest.raises(BakeError, match="scorer"):
        toxicity("no-such-scorer")
    from bake.evaluation.scorers import sentiment

    pos, _ = sentiment()
    s = pos(["What a wonderful, happy, lovely day!", "This is awful, I hate it, everything is terrible."])
    assert s[0] > 0.8 and s[1] < 0.2


def test_eval_of_a_baked_folder_writes_report_card_and_hooked_agrees_with_baked(steer, capsys):
    from bake.write import integrity
    from bake.publish.report import Report

    d, _, _ = steer
    folder = d / "baked"
    assert main(["eval", str(folder), "--suite", "toxicity,quality,refusal,steering,consistency", *FAST]) == 0
    out = capsys.readouterr().out
    for title in ("Toxicity", "Quality", "Refusal", "Steering", "Consistency (hooked vs baked)"):
        assert f"## {title}" in out
    rep = json.loads((folder / "eval_report.json").read_text())
    assert rep["seed"] == 0 and rep["versions"]["torch"] == torch.__version__
    assert set(rep["models"]) == {"base", "hooked", "baked"}
    # the bake is exact, so hooked and baked sample the same tokens: every reply identical, every difference 0
    c = rep["consistency"]
    assert c["status"] == "agree"
    shares = [r["share"] for k, r in c["rows"].items() if "identical" in k]
    assert shares and all(s == 1.0 for s in shares)
    assert all(r["mean"] == 0 for k, r in c["rows"].items() if "identical" not in k)
    # the steer acts: KL to the base is positive, and the base against itself would be 0
    assert rep["models"]["baked"]["quality"]["vs base"]["KL over the reply"]["mean"] > 0
    assert 0 <= rep["models"]["base"]["steering"]["summary"]["positivity"]["mean"] <= 1
    # the projection on the steering direction at block 1's output moves by exactly scale * |v| at every
    # position (teacher-forced on the same tokens; nothing before block 1 changed), and the report says so
    v = torch.load(d / "v.pt")
    moved = rep["models"]["baked"]["steering"]["vs base"]["projection change"]["block 1"]
    assert moved["mean"] == pytest.approx(2.0 * float(v.norm()), rel=1e-4)
    assert moved["ci"][1] - moved["ci"][0] < 1e-3 * moved["mean"]
    assert "projection, block 1" in out and "|v| = " in out
    # the folder's manifest, report and card know the new files; the folder still passes its integrity check
    report = Report.read(folder)
    assert {"eval_report.json", "eval_report.md"} <= set(report.files)
    assert integrity.check(folder, report)["status"] != "changed"
    assert "## Evaluation" in (folder / "README.md").read_text()
    assert (folder / "refusal.png").is_file()


def test_sweep_rebakes_each_point_and_picks_the_best_under_the_perplexity_limit(steer):
    d, _, recipe = steer
    rep = api.evaluate(recipe, suites="toxicity,quality", sweep="scale=0,4", out=d / "sweep", options=OPTS,
                            progress=False)
    pts = {p["value"]: p for p in rep["sweep"]["points"]}
    assert set(pts) == {0.0, 4.0} and all(p["key"] == "interventions[0].scale" for p in pts.values())
    # scale 0 is the base model again: the same samples, no perplexity change, no KL
    assert pts[0.0]["toxicity_ratio"] == pytest.approx(1.0) and pts[0.0]["ppl_change"] == pytest.approx(0, abs=1e-6)
    assert pts[0.0]["kl_reply"] == pytest.approx(0, abs=1e-6) and pts[4.0]["kl_reply"] > 1e-3
    best = rep["sweep"]["best"]
    ok = [p for p in pts.values() if p["ppl_change"] <= 0.05]
    assert best == max(ok, key=lambda p: p["toxicity_ratio"])
    assert set(rep["sweep"]["pareto"]) <= {0.0, 4.0} and rep["sweep"]["pareto"]
    assert (d / "sweep" / "sweep.png").is_file() and (d / "sweep" / "eval_report.md").is_file()


def test_aura_strength_scales_the_damping(tmp_path):
    """strength s: alpha -> 1 - s (1 - alpha). 0 leaves the model as it was; 0.5 halves each damping."""
    from safetensors.torch import load_file, save_file

    def weight(folder):
        name = "model.layers.0.mlp.up_proj.weight"
        return next(t[name] for f in sorted(folder.glob("*.safetensors")) if name in (t := load_file(f)))

    src = build("llama", tmp_path / "src")
    n = COMMON["intermediate_size"]
    alpha = torch.linspace(0.2, 1.0, n)
    save_file({"model.layers.0.mlp.up_proj": alpha}, tmp_path / "a.safetensors")
    w0 = weight(src)
    for s, expect in ((0.0, torch.ones(n)), (0.5, 1 - 0.5 * (1 - alpha)), (1.0, alpha)):
        recipe = tmp_path / f"r{s}.yaml"
        recipe.write_text(yaml.safe_dump({"model": str(src), "interventions": [
            {"kind": "aura", "modules": ["model.layers.0.mlp.up_proj"], "alphas": str(tmp_path / "a.safetensors"),
             "strength": s}]}))
        bake.apply(recipe, output=tmp_path / f"b{s}", progress=False)
        w = weight(tmp_path / f"b{s}")
        assert torch.allclose(w, w0 * expect[:, None], atol=1e-6)
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("strength: 1.0", "strength: -1"))
    with pytest.raises(BakeError, match="strength"):
        bake.apply(bad, output=tmp_path / "bad", progress=False)


def test_eval_errors(steer, capsys):
    d, src, recipe = steer
    cases = [(["eval", str(d / "baked"), "--data", "prompts=x.json"], "unknown input; known: toxicity"),
             (["eval", str(d / "baked"), "--data", "toxicity=nope.jsonl"], "no such file"),
             (["eval", str(d / "baked"), "--suite", "speed"], "speed"),
             (["eval", str(src), "--sweep", "scale=0,1"], "needs a recipe"),
             (["eval", str(recipe), "--sweep", "gain=0,1", "--out", str(d / "e")], "no numeric key 'gain'"),
             (["eval", str(d / "baked"), "--suite", "consistency"], "add one"),
             (["eval", str(d / "baked"), "--suite", "refusal", "--judge", "some/judge"], "hf:<Hub id or folder>")]
    for args, msg in cases:
        assert main([*args, "-q"]) == 2, args
        assert msg in capsys.readouterr().err, args
    assert not (d / "e").exists()  # nothing written for a refused run


def _classifier(folder, labels, bias):
    """A tiny BERT text classifier whose verdict is its classifier bias (the weights are zero)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "can", "not"]))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    cfg = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    model.save_pretrained(folder)
    return folder


def test_refusal_judge_reads_a_classifier_by_folder_beside_the_markers(steer, tmp_path, capsys):
    d, _, _ = steer
    always = _classifier(tmp_path / "always", ["NORMAL", "REJECTION"], [-5.0, 5.0])
    rep = api.evaluate(d / "baked", suites="refusal", out=tmp_path / "r", progress=False,
                       options={**OPTS, "judge": f"hf:{always}"})
    judged = rep["models"]["baked"]["refusal"]["summary"]["judge"]
    assert judged["model"] == f"transformers classifier {always}"
    for what in ("refusal rate on harmful prompts", "over-refusal on harmless prompts"):
        assert all(v["mean"] == 1.0 for v in judged[what].values())  # a judge that always says "rejection"
    assert "Judged by transformers classifier" in (tmp_path / "r" / "eval_report.md").read_text()
    # a classifier without a refusal label is refused with the labels it has
    unlabelled = _classifier(tmp_path / "plain", ["LABEL_0", "LABEL_1"], [0.0, 0.0])
    assert main(["eval", str(d / "baked"), "--suite", "refusal", "--judge", f"hf:{unlabelled}",
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "no refusal label among LABEL_0, LABEL_1" in capsys.readouterr().err
