"""bake/evaluation on hand-made inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bake.errors import BakeError
from bake.evaluation import metrics, sweep


def test_bootstrap_of_a_constant_is_the_constant_and_intervals_narrow_with_n():
    assert metrics.bootstrap_ci([2.0] * 10) == (2.0, 2.0)
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=20), rng.normal(size=2000)
    lo_s, hi_s = metrics.bootstrap_ci(small)
    lo_l, hi_l = metrics.bootstrap_ci(large)
    assert lo_l < large.mean() < hi_l and hi_l - lo_l < (hi_s - lo_s) / 4  # width ~ 1/sqrt(n): 10x here
    assert abs((hi_l - lo_l) - 2 * 1.96 / math.sqrt(2000)) < 0.02  # the normal interval for unit variance
    assert metrics.bootstrap_ci(small, seed=3) == metrics.bootstrap_ci(small, seed=3)  # seeded
    with pytest.raises(ValueError):
        metrics.bootstrap_ci([])


def test_paired_ratio():
    base, baked = [0.4, 0.6, 0.2, 0.8], [0.2, 0.3, 0.1, 0.4]  # baked halves every prompt
    r = metrics.paired_ratio(base, baked)
    assert r["ratio"] == pytest.approx(2.0) and r["ci"] == pytest.approx([2.0, 2.0]) and r["n"] == 4
    r = metrics.paired_ratio([0.5, 0.1, 0.9, 0.3] * 10, [0.25, 0.1, 0.3, 0.3] * 10)
    assert r["ci"][0] < r["ratio"] < r["ci"][1] and r["ratio"] == pytest.approx(1.8 / 0.95)
    assert metrics.paired_ratio([0.0, 0.0], [0.0, 0.0])["ratio"] == 1.0
    assert metrics.paired_ratio([0.1, 0.0], [0.0, 0.0])["ratio"] == math.inf
    with pytest.raises(ValueError):
        metrics.paired_ratio([1.0], [1.0, 2.0])


def test_kl_and_perplexity_against_closed_forms():
    p = torch.tensor([[0.5, 0.25, 0.25]]).log()
    q = torch.tensor([[0.25, 0.5, 0.25]]).log()
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert metrics.kl_from_logits(p, q).item() == pytest.approx(expected)
    assert metrics.kl_from_logits(p + 7.0, q - 3.0).item() == pytest.approx(expected)  # logits, not probabilities
    assert metrics.kl_from_logits(q, q).item() == 0.0
    logits = torch.log(torch.tensor([[0.5, 0.5, 1e-30], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]]))
    ids = torch.tensor([0, 1, 2])
    nll = metrics.token_nll(logits, ids)
    assert nll.tolist() == pytest.approx([math.log(2), -math.log(0.7)])
    assert metrics.perplexity(nll.tolist()) == pytest.approx(math.sqrt(2 / 0.7))
    assert metrics.perplexity([math.log(4)] * 5) == pytest.approx(4.0)  # uniform over 4 tokens


def test_refusal_markers_and_rates_by_length():
    assert metrics.is_refusal("Sure. Actually, I can\u2019t help with that.")  # curly apostrophe
    assert metrics.is_refusal("AS AN AI,\n  I cannot")
    assert not metrics.is_refusal("Here is how to bake bread: mix flour and water.")
    words = "Sure here is the plan . step one is easy but I cannot continue".split()
    decode = " ".join  # one token per word
    replies = [list(range(len(words)))] * 2 + [[0, 1, 2]] * 2

    def dec(ids):
        return decode(words[i] for i in ids)

    flags = metrics.refusals(replies, dec, lengths=[5, 100])
    assert flags == {5: [0.0] * 4, 100: [1.0, 1.0, 0.0, 0.0]}  # the refusal comes after token 5 in half the replies
    assert metrics.refusals(replies, dec, [100], markers=["step one"]) == {100: [1.0, 1.0, 0.0, 0.0]}  # markers are data


def test_pareto_front():
    pts = [{"v": 0, "effect": 1.0, "ppl": 10.0}, {"v": 1, "effect": 1.5, "ppl": 10.2},
           {"v": 2, "effect": 1.4, "ppl": 11.0}, {"v": 3, "effect": 2.0, "ppl": 12.0}]
    assert [p["v"] for p in metrics.pareto_front(pts, "effect", "ppl")] == [0, 1, 3]


RECIPE = {"model": "m", "interventions": [
    {"kind": "aura", "modules": ["x"], "alphas": {"learn": {"data": "d", "value": 0.5, "top_fraction": 0.02}}},
    {"kind": "steer", "layers": [12], "vector": "v.pt", "scale": 0.5, "approximate": False},
    {"kind": "ablate", "direction": "r.pt", "weights": [1.0, 0.5, 0.25]}], "verify": {"generate_tokens": 8}}


def test_sweep_keys():
    assert sweep.parse("scale=0, 0.5,1") == ("scale", [0.0, 0.5, 1.0])
    for bad in ("scale", "scale=", "scale=a,b", "=1"):
        with pytest.raises(BakeError, match="expected KEY=V1,V2"):
            sweep.parse(bad)
    keys = sweep.numeric_keys(RECIPE)
    assert "interventions[1].approximate" not in keys and keys["interventions[2].weights[1]"] == 0.5
    assert sweep.resolve(RECIPE, "scale") == "interventions[1].scale"
    assert sweep.resolve(RECIPE, "value") == "interventions[0].alphas.learn.value"
    assert sweep.resolve(RECIPE, "interventions[2].weights[1]") == "interventions[2].weights[1]"
    with pytest.raises(BakeError, match="no numeric key 'gain'.*interventions\\[1\\].scale"):
        sweep.resolve(RECIPE, "gain")
    # a field left at its kind's default is a key too, and setting it adds it
    assert sweep.resolve(RECIPE, "strength") == "interventions[0].strength"
    assert sweep.set_path(RECIPE, "interventions[0].strength", 0.5)["interventions"][0]["strength"] == 0.5
    assert "strength" not in RECIPE["interventions"][0]
    two = {**RECIPE, "interventions": RECIPE["interventions"] + [dict(RECIPE["interventions"][1])]}
    with pytest.raises(BakeError, match="2 keys named scale"):
        sweep.resolve(two, "scale")
    new = sweep.set_path(RECIPE, "interventions[2].weights[1]", 0.75)
    assert new["interventions"][2]["weights"] == [1.0, 0.75, 0.25] and RECIPE["interventions"][2]["weights"][1] == 0.5
    assert sweep.set_path(RECIPE, "verify.generate_tokens", 16.0)["verify"]["generate_tokens"] == 16  # stays an int


def test_generate_with_hooks_matches_the_baked_folder_and_base_matches_the_source(tmp_path, capsys):
    """`bake generate`: a recipe's hooks give the baked folder's tokens (greedy and seeded sampling alike);
    --base gives the source's; --hooks on a model is refused."""
    import json

    from bake.cli import main
    from tiny import steered

    src, recipe = steered(tmp_path)

    def run(*args):
        assert main(["generate", *map(str, args), "--max-new-tokens", "12", "--json", "-q"]) == 0
        return json.loads(capsys.readouterr().out)

    prompts = ["hello world", "the cat"]
    for extra in ((), ("--sample", "--seed", "5")):
        hooked, baked = run(recipe, *prompts, *extra), run(tmp_path / "baked", *prompts, *extra)
        base, source = run(recipe, "--base", *prompts, *extra), run(src, *prompts, *extra)
        assert [r["tokens"] for r in hooked["replies"]] == [r["tokens"] for r in baked["replies"]]
        assert [r["tokens"] for r in base["replies"]] == [r["tokens"] for r in source["replies"]]
        assert [r["tokens"] for r in hooked["replies"]] != [r["tokens"] for r in base["replies"]]  # the steer acts
        assert all(len(r["tokens"]) <= 12 for r in hooked["replies"]) and "hooks of recipe.yaml" in hooked["source"]
    assert main(["generate", str(src), "--hooks", "hi", "-q"]) == 2
    assert "--hooks needs a recipe" in capsys.readouterr().err
