"""LinEAS: the sliced-Wasserstein loss against closed forms, the end-to-end fit on a planted problem, the
`lineas` kind baked and verified (fold == hook), its refusals and its bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import bake
from bake.cli.main import main
from bake.errors import BakeError, NotBakeable
from bake.learn import lineas
from tiny import CORPUS, add_tokenizer, build


# --- the loss: known answers -------------------------------------------------------------------


def test_wasserstein_of_sorted_samples():
    x = torch.tensor([[0.0], [2.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[5.0], [3.0], [4.0]], dtype=torch.float64)
    assert lineas.wasserstein_units(x, y, p=1).item() == pytest.approx(3.0)  # sorted pairs (0,3) (1,4) (2,5)
    assert lineas.wasserstein_units(x, y, p=2).item() == pytest.approx(9.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 7, generator=g, dtype=torch.float64), torch.randn(50, 7, generator=g, dtype=torch.float64)
    want = (a.sort(0).values - b.sort(0).values).pow(2).mean(0)
    assert torch.allclose(lineas.wasserstein_units(a, b), want)
    assert lineas.sliced_loss({"m": a}, {"m": b}).item() == pytest.approx(want.mean().item())
    # unequal sizes: the larger set's order statistics at the smaller one's quantile levels
    big = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    small = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    assert lineas.wasserstein_units(big, small, p=1).item() == pytest.approx((2 + 6) / 2)  # (2 vs 0), (4 vs 10)


def test_wasserstein_between_gaussians_matches_the_closed_form():
    """W2^2(N(m1, s1), N(m2, s2)) = (m1 - m2)^2 + (s1 - s2)^2, on exact quantile samples."""
    n = 4000
    z = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).unsqueeze(1)
    got = lineas.wasserstein_units(1.0 + 2.0 * z, -0.5 + 0.5 * z).item()
    assert got == pytest.approx(1.5 ** 2 + 1.5 ** 2, rel=2e-3)


def test_prox_is_the_sparse_group_lasso_step():
    scale = torch.tensor([1.5, 1.05, 0.5])
    shift = torch.tensor([0.0, -0.05, 0.3])
    lineas.prox(scale, shift, tau=1.0, l1=0.1, group=0.0)
    assert torch.allclose(scale, torch.tensor([1.4, 1.0, 0.6])) and torch.allclose(shift, torch.tensor([0.0, 0.0, 0.2]))
    assert lineas.support(scale, shift) == 2  # unit 1 is back to the identity
    lineas.prox(scale, shift, tau=1.0, l1=0.0, group=10.0)  # a large group penalty zeroes the whole map
    assert torch.equal(scale, torch.ones(3)) and torch.equal(shift, torch.zeros(3))


# --- the fit: a planted problem ---------------------------------------------------------------


def test_end_to_end_fit_moves_a_planted_source_onto_the_target():
    """Two layers; source inputs N(0, 1), target inputs N(mu, s) per unit: the maps at both layers, fitted
    end to end, bring the source's activations onto the target's at every layer."""
    g = torch.Generator().manual_seed(0)
    d = 4
    w2 = torch.randn(d, d, generator=g) / d ** 0.5
    mu, s = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([0.5, 2.0, 1.0, 1.5])
    src_x = torch.randn(256, d, generator=g)
    tgt_x = mu + s * torch.randn(256, d, generator=g)

    def layers(x, maps):
        out = {}
        h = x
        for name in ("l1", "l2"):
            if name == "l2":
                h = torch.tanh(h @ w2.T)
            if name in maps:
                scale, shift = maps[name]
                h = h * scale + shift
            out[name] = h
        return out

    target = layers(tgt_x, {})
    maps, fig = lineas.fit(lambda idx, maps: layers(src_x[idx], maps), 256, target, {"l1": d, "l2": d},
                           steps=400, batch_size=64, lr=0.5, seed=0)
    before = lineas.sliced_loss(layers(src_x, {}), target).item()
    after = lineas.sliced_loss(layers(src_x, maps), target).item()
    assert after < 0.02 * before, (before, after)
    mapped = layers(src_x, maps)
    for name in ("l1", "l2"):
        assert torch.allclose(mapped[name].mean(0), target[name].mean(0), atol=0.1)
        assert torch.allclose(mapped[name].std(0), target[name].std(0), atol=0.1)
    assert torch.allclose(maps["l1"][0].abs(), s * src_x.std(0) ** -1 * 1.0, atol=0.15)  # the planted scale
    assert fig["units"] == 2 * d and fig["loss_last"] < fig["loss_first"]


def test_fit_refuses_bad_inputs():
    with pytest.raises(BakeError, match="empty sample set"):
        lineas.wasserstein_units(torch.zeros(0, 3), torch.zeros(4, 3))
    with pytest.raises(BakeError, match="widths differ"):
        lineas.wasserstein_units(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(BakeError, match="at least one source"):
        lineas.fit(lambda i, m: {}, 0, {"m": torch.zeros(3, 2)}, {"m": 2}, steps=1, batch_size=1)
    with pytest.raises(BakeError, match="have 2 units; the module's input has 5"):
        lineas.fit(lambda i, m: {}, 4, {"m": torch.zeros(3, 2)}, {"m": 5}, steps=1, batch_size=1)
    with pytest.raises(BakeError, match="optimizer 'lbfgs'; use sgd"):
        lineas.fit(lambda i, m: {}, 4, {"m": torch.zeros(3, 2)}, {"m": 2}, steps=1, batch_size=1, optimizer="lbfgs")


# --- the kind on tiny models ------------------------------------------------------------------


def _maps(model_dir, modules, units, path, shift=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {}
    for m in modules:
        t[f"scale/{m}"] = 1 + 0.5 * torch.randn(units, generator=g)
        t[f"shift/{m}"] = shift * torch.randn(units, generator=g)
    save_file(t, str(path), metadata={"format": "bake-lineas"})
    return path


@pytest.mark.parametrize("name,modules,units,created", [
    ("llama", "model.layers.*.mlp", 32, True),  # the paper's site: the MLP's input (gate and up projections)
    ("llama-untied", "model.layers.*.mlp.down_proj", 48, True),  # the MLP's units (one Linear)
    ("gpt2", "transformer.h.*.mlp", 32, False),  # Conv1D [in, out], its own bias
])
def test_lineas_bakes_exactly_and_the_fold_equals_the_hook(tmp_path, name, modules, units, created):
    model = build(name, tmp_path / name)
    n = 3
    prefix = "transformer.h" if name == "gpt2" else "model.layers"
    mods = [modules.replace(f"{prefix}.*", f"{prefix}.{i}") for i in range(n)]
    maps = _maps(model, mods, units, tmp_path / "maps.safetensors")
    rep = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                      "interventions": [{"kind": "lineas", "modules": [modules], "maps": str(maps)}]},
                     output=tmp_path / "out", progress=False)
    assert rep["verification"]["status"] == "passed" and rep["verification"]["exact"]
    assert rep["verification"]["metrics"]["max_abs_logit"] < 1e-4
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("mlp_bias", False) is created
    # strength 0 is the identity: the baked weights equal the source's
    bake.apply({"model": str(model), "interventions": [{"kind": "lineas", "modules": [modules],
                                                               "maps": str(maps), "strength": 0}]},
                      output=tmp_path / "zero", progress=False, verify_mode="skip")
    src = {k: v for f in model.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    out = {k: v for f in (tmp_path / "zero").glob("*.safetensors") for k, v in load_file(str(f)).items()}
    for k, v in src.items():
        assert torch.allclose(out[k].float(), v.float(), atol=1e-6), k


def test_lineas_without_a_bias_slot_is_refused_with_the_reason(tmp_path):
    model = build("gemma3", tmp_path / "g")
    mods = [f"model.layers.{i}.mlp" for i in range(3)]
    maps = _maps(model, mods, 32, tmp_path / "maps.safetensors")
    recipe = {"model": str(model), "interventions": [{"kind": "lineas", "modules": ["model.layers.*.mlp"],
                                                      "maps": str(maps)}]}
    with pytest.raises(NotBakeable, match="no bias to hold the map's shift"):
        bake.apply(recipe, output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    # the hook realization (`--hooks`) still runs it: the map changes the model's output
    from bake.compile.hooks import hooked
    from bake.model.loading import load_model
    from bake.planner import plan

    p = plan(recipe, progress=False, hooks_only=True)
    assert [h.fn for h in p.hooks] == ["affine_in"] * 3
    m = load_model(model, trust_remote_code=False)
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        plain = m(input_ids=ids).logits
        with hooked(m, p.hooks):
            steered = m(input_ids=ids).logits
    assert (plain - steered).abs().max() > 1e-3
    # a map with no shift is a column scaling: it bakes exactly on the same family
    scale_only = _maps(model, mods, 32, tmp_path / "scale.safetensors", shift=0.0)
    rep = bake.apply({**recipe, "interventions": [{**recipe["interventions"][0], "maps": str(scale_only)}]},
                     output=tmp_path / "ok", progress=False)
    assert rep["verification"]["status"] == "passed"
    status, why = bake.kinds.get("lineas").status(_family(model))
    assert status == "refused" and "no bias" in why


def _family(model):
    from bake.families import resolve
    from bake.model.source import resolve_model

    ckpt = resolve_model(str(model))
    return resolve(ckpt.config, ckpt.shapes)


def test_bad_maps_give_one_clear_error(tmp_path, capsys):
    model = build("llama", tmp_path / "m")
    wrong = _maps(model, [f"model.layers.{i}.mlp" for i in range(3)], 7, tmp_path / "wrong.safetensors")
    save_file({"alpha": torch.ones(3)}, str(tmp_path / "none.safetensors"))
    for maps, msg in ((wrong, "7 units; the input of model.layers.0.mlp has 32"),
                      (tmp_path / "none.safetensors", "holds no LinEAS maps")):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(json.dumps({"model": str(model), "interventions": [
            {"kind": "lineas", "modules": "model.layers.*.mlp", "maps": str(maps)}]}))
        assert main(["apply", str(recipe), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
        assert not (tmp_path / "o").exists()


# --- bake learn lineas ------------------------------------------------------------------------


def test_learn_lineas_end_to_end_and_bake(tmp_path, capsys):
    model = add_tokenizer(build("llama", tmp_path / "m"))
    rows = [{"comment_text": t, "toxic": int(any(w in t for w in ("hate", "stupid", "bomb", "idiot")))} for t in CORPUS]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "lineas.safetensors"
    assert main(["learn", "lineas", "--model", str(model), "--data", str(data), "--layout", "jigsaw", "--steps", "20",
                 "--out", str(out), "--quiet"]) == 0
    t = load_file(str(out))
    assert sorted(t) == sorted(f"{w}/model.layers.{i}.mlp" for w in ("scale", "shift") for i in range(3))
    assert any(not torch.equal(v, torch.ones_like(v)) for k, v in t.items() if k.startswith("scale/"))
    again = tmp_path / "again.safetensors"
    assert main(["learn", "lineas", "--model", str(model), "--data", str(data), "--layout", "jigsaw", "--steps", "20",
                 "--out", str(again), "--quiet"]) == 0
    assert all(torch.equal(v, load_file(str(again))[k]) for k, v in t.items())  # seeded: the same maps
    rep = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                      "interventions": [{"kind": "lineas", "modules": "model.layers.*.mlp", "maps": str(out)}]},
                     output=tmp_path / "o", progress=False)
    assert rep["verification"]["status"] == "passed"
    # learned inline by a recipe (`maps: {learn: {...}}`, cached like the other learners): the same bake
    inline = bake.apply({"model": str(model), "interventions": [
        {"kind": "lineas", "modules": "model.layers.*.mlp",
         "maps": {"learn": {"data": str(data), "layout": "jigsaw", "steps": 20}}}]},
        output=tmp_path / "inline", progress=False)
    assert inline["verification"]["status"] == "passed"
    weights = [{k: v for f in sorted((tmp_path / d).glob("*.safetensors")) for k, v in load_file(str(f)).items()}
               for d in ("o", "inline")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())
    # one label only: one clear line, exit 2
    (tmp_path / "one.jsonl").write_text("\n".join(json.dumps({"comment_text": t, "toxic": 0}) for t in CORPUS))
    capsys.readouterr()
    assert main(["learn", "lineas", "--model", str(model), "--data", str(tmp_path / "one.jsonl"), "--layout",
                 "jigsaw", "--out", str(tmp_path / "x.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no source (label 1) texts" in err[0]


def test_lineas_composes_with_steer_in_one_block(tmp_path):
    """A map on block 1's MLP input and a steering vector added by the same MLP's output bias: both fold into
    that MLP (gate/up and down_proj); the module-local checks hold each hook to the tensors it folds into."""
    model = build("llama", tmp_path / "m")
    maps = _maps(model, [f"model.layers.{i}.mlp" for i in range(3)], 32, tmp_path / "maps.safetensors")
    save_file({"v": torch.randn(32, generator=torch.Generator().manual_seed(3))}, str(tmp_path / "v.safetensors"))
    rep = bake.apply({"model": str(model), "verify": {"generate_tokens": 2}, "interventions": [
        {"kind": "steer", "layers": [1], "vector": str(tmp_path / "v.safetensors"), "scale": 2.0},
        {"kind": "lineas", "modules": "model.layers.*.mlp", "maps": str(maps)}]},
        output=tmp_path / "out", progress=False)
    v = rep["verification"]
    assert v["status"] == "passed", v["failures"]
    local = {r["module"]: r for r in v["local"]["modules"]}
    assert local["model.layers.1.mlp.down_proj"]["status"] == "passed"
    assert local["model.layers.1.mlp.gate_proj"]["status"] == "passed"
