"""Kinds as registered units, and the variants: per-layer and partial ablation, subspaces, norm-preserving
ablation (rows, columns), steering sites, AURA's mean shift. Fold == hook on tensors, then bake ==
hooks on tiny models of every family where the kind's table says exact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import bake
from bake import kinds
from bake.compile import fold
from bake.compile.ops import OPS
from bake.errors import BakeError
from bake.families import resolve
from bake.kinds.ablate import Kernel, kernel_weights
from bake.model.source import open_checkpoint
from bake.artifacts.tensors import load_tensor
from bake.recipe.schema import parse
from tiny import TINY, build

TOL = 1e-5
torch.manual_seed(0)


def assert_close(a, b, tol=1e-10):
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


# --- the registry ------------------------------------------------------------------------------


def test_every_kind_is_wired_from_the_registry():
    """The recipe union, the card's tags, `bake arch`'s exactness and coverage all come from KINDS."""
    from typing import get_args

    from bake.evaluation import coverage
    from bake.recipe.schema import Intervention

    assert set(get_args(get_args(Intervention)[0])) == {k.schema for k in kinds.KINDS.values()}
    assert set(kinds.KINDS) == {"aura", "steer", "ablate", "lineas", "sae_amplify", "sae_calibrate"}
    assert set(coverage.KINDS) == {k for k, kind in kinds.KINDS.items() if kind.coverage} == {
        "aura", "steer", "ablate", "lineas"}
    for name, kind in kinds.KINDS.items():
        assert kind.schema.model_fields["kind"].annotation.__args__ == (name,)
        assert kind.tag and set(kind.learners) <= set(kind.artifacts) <= set(kind.schema.model_fields)
    with pytest.raises(bake.RecipeError, match="expected aura, steer, ablate, lineas, sae_amplify or sae_calibrate"):
        parse({"model": "x", "interventions": [{"kind": "nope"}]})
    with pytest.raises(BakeError, match="unknown intervention kind 'nope'; bake knows aura, steer, ablate, lineas, sae_amplify, sae_calibrate"):
        kinds.get("nope")


def test_registering_a_kind_twice_is_refused():
    cls = type(kinds.KINDS["aura"])
    with pytest.raises(RuntimeError, match="registered twice"):
        kinds.register(cls)


def test_every_op_has_its_fold_and_hook_twin():
    """An op is fold-only only where another op is its hook twin (shift -> scale with mu, mul -> scale_experts,
    append -> sae_gate, which it approximates)."""
    for name, spec in OPS.items():
        assert spec.fold is not None or spec.attach is not None, name
    assert {n for n, s in OPS.items() if s.attach is None} == {"shift", "mul", "append"}
    # sae_gate: hook-only; affine_in (lineas) folds as scale_in on the weights and add on the biases
    assert {n for n, s in OPS.items() if s.fold is None} == {"scale_experts", "sae_gate", "affine_in"}


# --- the math: fold == hook ----------------------------------------------------------------------


def _linear(d=6, n_in=5):
    return torch.randn(d, n_in, dtype=torch.float64), torch.randn(d, dtype=torch.float64), \
        torch.randn(3, n_in, dtype=torch.float64)


@pytest.mark.parametrize("weight", [1.0, 0.4])
@pytest.mark.parametrize("k", [1, 2])
def test_partial_subspace_projection_fold_equals_hook(weight, k):
    w, b, x = _linear()
    q, sv = fold.orthonormal(torch.randn(k, 6, dtype=torch.float64))
    assert q.shape == (6, k) and len(sv) == k
    qq = q[:, 0] if k == 1 else q
    hooked = fold.hook_project_out(x @ w.T + b, qq, weight)
    folded = x @ fold.project_out(w, qq, 0, weight).T + fold.project_out(b, qq, 0, weight)
    assert_close(hooked, folded)
    left = q.T @ fold.project_out(w, qq, 0, weight)
    assert_close(left, (1 - weight) * (q.T @ w))  # w = 0.4 leaves 60% of the component
    assert_close(fold.project_out(w, qq, 0, 0.0), w)  # strength 0 is the identity


def test_subspace_rank_is_reported_for_dependent_directions():
    a, c = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    q, sv = fold.orthonormal(torch.stack([a, c, 2 * a - c]))
    assert q.shape == (6, 2) and sv[2] < 1e-10 * sv[0]
    assert_close(q.T @ q, torch.eye(2, dtype=torch.float64))


def test_norm_preserving_rows_fold_equals_hook_and_keeps_row_norms():
    """heretic's edit: W' = C P (A W), A = 1/|rows|, C = |rows| / |rows of P A W|; its hook: A, P, C on the output."""
    w, b, x = _linear()
    r = torch.randn(6, dtype=torch.float64)
    r = r / r.norm()
    d1 = w.norm(dim=1)
    a = 1 / d1
    c = d1 / fold.project_out(fold.scale_units(w, a, 0), r, 0).norm(dim=1)
    w2 = fold.scale_units(fold.project_out(fold.scale_units(w, a, 0), r, 0), c, 0)
    b2 = fold.scale_units(fold.project_out(fold.scale_units(b, a, 0), r, 0), c, 0)
    h = fold.hook_scale(fold.hook_project_out(fold.hook_scale(x @ w.T + b, a), r), c)
    assert_close(h, x @ w2.T + b2)
    assert_close(w2.norm(dim=1), d1)  # row norms kept
    assert (r @ w2).norm() > 1e-3 * (r @ w).norm()  # and part of the direction left (reported)


def test_norm_preserving_columns_fold_equals_hook_and_keeps_column_norms():
    """grimjim's edit: W' = P W D, D restoring each column's norm; its hook: D on the input, P on the output."""
    w, b, x = _linear()
    r = torch.randn(6, dtype=torch.float64)
    r = r / r.norm()
    gain = w.norm(dim=0) / fold.project_out(w, r, 0).norm(dim=0)
    assert (gain >= 1 - 1e-12).all()
    w2 = fold.project_out(fold.scale_units(w, gain, 1), r, 0)
    h = fold.hook_project_out(fold.hook_scale(x, gain) @ w.T + b, r)
    assert_close(h, x @ w2.T + fold.project_out(b, r, 0))
    assert_close(w2.norm(dim=0), w.norm(dim=0))
    assert_close(r @ w2, torch.zeros(5, dtype=torch.float64))


def test_embedding_input_gain_hook_reads_the_ids():
    emb = torch.nn.Embedding(7, 4).double()
    gain = torch.rand(7, dtype=torch.float64) + 0.5
    ids = torch.tensor([[1, 5, 5, 0]])
    from bake.compile.ops import attach
    from bake.compile.planning import Hook

    handles = attach(emb, Hook(0, "e", "scale_in", gain))
    try:
        out = emb(ids)
    finally:
        for h in handles:
            h.remove()
    assert_close(out, fold.scale_units(emb.weight, gain, 0)[ids])


def test_kernel_weights_as_heretic_defines_them():
    assert kernel_weights(Kernel(peak=1.0, position=2, min=0.5, distance=2), 6) == [0.5, 0.75, 1.0, 0.75, 0.5, 0.0]
    assert kernel_weights(Kernel(peak=0.8, position=1.5, min=0.0, distance=1), 4) == pytest.approx([0, 0.4, 0.4, 0])


def test_fractional_layer_index_interpolates_candidates(tmp_path):
    c = torch.randn(2, 5, 4, dtype=torch.float64)
    save_file({"candidates": c.float()}, str(tmp_path / "r.safetensors"))
    c = c.float().double()
    t = load_tensor("r.safetensors#candidates[1, 2.25]", tmp_path, "x")
    assert_close(t, 0.75 * c[1, 2] + 0.25 * c[1, 3])
    assert_close(load_tensor("r.safetensors#candidates[-1, 3]", tmp_path, "x"), c[-1, 3])
    for bad, msg in [("[1, 4.5]", "within 0..4"), ("[0.5, 1]", "must be the last"), ("[1, 9]", "out of range"),
                     ("[a]", "not a number")]:
        with pytest.raises(BakeError, match=msg):
            load_tensor("r.safetensors#candidates" + bad, tmp_path, "x")


# --- recipes: keys, refusals, bakes on every family -----------------------------------------------


def test_recipe_keys_are_checked():
    base = {"model": "x"}
    ok = parse({**base, "interventions": [{"kind": "ablate", "directions": ["a", "b"],
                                           "weights": {"kernel": {"peak": 1, "position": 3.5, "distance": 2}},
                                           "norm_preserving": "rows"}]})
    assert ok.interventions[0].weights.kernel.peak == 1.0
    for iv, msg in [({"direction": "a", "directions": ["b"]}, "exactly one of them"),
                    ({}, "exactly one of them"),
                    ({"direction": "a", "weights": [1, 1], "layers": [0]}, "drop `layers`"),
                    ({"direction": "a", "weights": [1, 3]}, "less than or equal to 2"),
                    ({"direction": "a", "norm_preserving": "both"}, "norm_preserving"),
                    ({"direction": "a", "weights": {"kernel": {"peak": 1, "position": 0}}}, "distance")]:
        with pytest.raises(bake.RecipeError, match=msg):
            parse({**base, "interventions": [{"kind": "ablate", **iv}]})
    with pytest.raises(bake.RecipeError, match="site"):
        parse({**base, "interventions": [{"kind": "steer", "layers": [0], "vector": "v", "site": "resid_mid"}]})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-kinds")
    return {name: build(name, root / name) for name in TINY}


def _files(model_dir, tmp):
    ck = open_checkpoint(model_dir)
    fam = resolve(ck.config, ck.shapes)
    g = torch.Generator().manual_seed(3)
    save_file({"r": torch.randn(fam.d, generator=g), "s": torch.randn(fam.d, generator=g),
               "candidates": torch.randn(fam.n_layers, fam.d, generator=g)}, str(tmp / "dirs.safetensors"))
    save_file({"v": torch.randn(fam.d, generator=g)}, str(tmp / "v.safetensors"))
    return fam


def _apply(model_dir, ivs, out):
    return bake.apply({"model": str(model_dir), "interventions": ivs, "verify": {"generate_tokens": 4}},
                      output=out, progress=False)


def _passed(report):
    v = report["verification"]
    assert v["status"] == "passed", v["failures"]
    assert v["metrics"]["max_abs_logit"] <= TOL and v["metrics"]["top1_agreement"] == 1.0
    return report


EXACT_ABLATE = [n for n in TINY if n != "gemma3"]


@pytest.mark.parametrize("name", EXACT_ABLATE)
def test_ablate_variants_bake_exactly(models, tmp_path, name):
    """Per-layer kernel strengths with a two-direction subspace (one interpolated between layers), then
    rows; columns where each writer has one 2-D weight."""
    fam = _files(models[name], tmp_path)
    dirs = [str(tmp_path / "dirs.safetensors#r"), str(tmp_path / "dirs.safetensors#candidates[1.5]")]
    sub = {"kind": "ablate", "directions": dirs, "weights": {"kernel": {"peak": 0.9, "position": 1, "min": 0.3,
                                                                        "distance": 1.5}}}
    rep = _passed(_apply(models[name], [sub], tmp_path / "sub"))
    step = rep["steps"][0]
    assert step["details"]["rank"] == 2 and step["details"]["weights"] == {"0": 0.5, "1": 0.9, "2": 0.5}
    assert "rank-2 subspace" in step["summary"] and "embeddings left alone" in step["summary"]
    rows = {"kind": "ablate", "direction": dirs[0], "norm_preserving": "rows"}
    rep = _passed(_apply(models[name], [rows], tmp_path / "rows"))
    left = rep["steps"][0]["details"]["leftover"]
    assert len(left) == len(fam.writers()) and 0 < max(left.values()) < 1
    cols = {"kind": "ablate", "direction": dirs[0], "norm_preserving": "columns", "layers": "all"}
    if fam.moe:
        with pytest.raises(bake.NotBakeable, match="columns needs one 2-D weight per writer"):
            bake.plan({"model": str(models[name]), "interventions": [cols]})
        return
    rep = _passed(_apply(models[name], [cols], tmp_path / "cols"))
    assert max(rep["steps"][0]["details"]["leftover"].values()) < 1e-6  # columns removes all of it


@pytest.mark.parametrize("name", EXACT_ABLATE)
def test_ablate_a_direction_per_block(models, tmp_path, name):
    """A [blocks, d] direction (heretic's "per layer" directions): block i's writers remove row i, the
    embeddings stay; with a kernel too. The hooks and the bake agree, and the checkpoint shows it."""
    fam = _files(models[name], tmp_path)
    cands = str(tmp_path / "dirs.safetensors#candidates")
    rep = _passed(_apply(models[name], [{"kind": "ablate", "direction": cands}], tmp_path / "each"))
    assert rep["steps"][0]["details"]["per_block"] is True
    assert "each block's own direction from the writers of every block (embeddings left alone)" in rep["steps"][0]["summary"]
    rows = load_file(str(tmp_path / "dirs.safetensors"))["candidates"].double()
    before, after = ({k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
                     for d in (models[name], tmp_path / "each"))
    for w in fam.embeds:
        for name_, _ in w.tensors:
            assert torch.equal(before[name_], after[name_])
    for i in range(fam.n_layers):
        u = rows[i] / rows[i].norm()
        for w in fam.blocks[i]:
            for name_, axis in w.tensors:
                t = after[name_].double()
                assert float(torch.tensordot(t, u, dims=([axis], [0])).abs().max()) < 1e-5, (i, name_)
                if i:  # and not the previous block's direction
                    v = rows[i - 1] / rows[i - 1].norm()
                    assert float(torch.tensordot(t, v, dims=([axis], [0])).abs().max()) > 1e-3
    kern = {"kind": "ablate", "direction": cands, "weights": {"kernel": {"peak": 1.0, "position": 1, "distance": 1}}}
    rep = _passed(_apply(models[name], [kern], tmp_path / "kern"))
    assert rep["steps"][0]["details"]["weights"] == {"1": 1.0}


@pytest.mark.parametrize("name", EXACT_ABLATE)
def test_ablate_with_a_kernel_for_attention_and_one_for_the_mlp(models, tmp_path, name):
    """heretic's split: the attention writers follow one kernel, the MLP writers (experts too) another.
    Block 0's MLP and block 2's attention are left alone; hooks and bake agree."""
    from bake.families.probe import site_of

    fam = _files(models[name], tmp_path)
    r = str(tmp_path / "dirs.safetensors#r")
    two = {"attention": {"peak": 0.8, "position": 1, "distance": 1},  # blocks 0..2: 0, 0.8, 0 -> only block 1
           "mlp": {"peak": 1.0, "position": 2, "min": 0.5, "distance": 1}}  # blocks 1, 2, 3: 0.5, 1, 0.5
    rep = _passed(_apply(models[name], [{"kind": "ablate", "direction": r, "weights": two}], tmp_path / "two"))
    step = rep["steps"][0]
    assert step["details"]["weights"]["1"] == {"attention": 0.8, "mlp": 0.5}
    assert step["details"]["weights"]["2"] == {"attention": 0.0, "mlp": 1.0} and "0" not in step["details"]["weights"]
    assert "a kernel each" in step["summary"]
    u = load_file(str(tmp_path / "dirs.safetensors"))["r"].double()
    u = u / u.norm()
    before, after = ({k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
                     for d in (models[name], tmp_path / "two"))
    for i in range(fam.n_layers):
        for w in fam.blocks[i]:
            role = site_of(w.module.removeprefix(fam.block(i) + "."))
            changed = any(not torch.equal(before[t], after[t]) for t, _ in w.tensors)
            assert changed == ((role == "attn_out" and i == 1) or (role == "mlp_out" and 1 <= i <= 3)), (i, w.module)
            if role == "mlp_out" and i == 2:  # strength 1: the direction is gone from what it writes
                for t, axis in w.tensors:
                    assert float(torch.tensordot(after[t].double(), u, dims=([axis], [0])).abs().max()) < 1e-5


def test_attention_and_mlp_kernels_come_together():
    for weights in ({"attention": {"peak": 1, "position": 0, "distance": 1}},
                    {"kernel": {"peak": 1, "position": 0, "distance": 1}, "mlp": {"peak": 1, "position": 0, "distance": 1}},
                    {}):
        with pytest.raises(bake.RecipeError, match="both `attention:` and `mlp:`"):
            parse({"model": "x", "interventions": [{"kind": "ablate", "direction": "a", "weights": weights}]})


def test_a_direction_per_block_needs_one_row_per_block_and_direction(models, tmp_path):
    fam = _files(models["llama"], tmp_path)
    save_file({"few": torch.randn(fam.n_layers - 1, fam.d), "zero": torch.zeros(fam.n_layers, fam.d)},
              str(tmp_path / "rows.safetensors"))
    for ref, msg in ((str(tmp_path / "rows.safetensors#few"), rf"shape \[{fam.n_layers - 1}, {fam.d}\]; expected "
                      rf"\[{fam.d}\] \(hidden size\) or \[{fam.n_layers}, {fam.d}\] \(a direction per block\)"),
                     (str(tmp_path / "rows.safetensors#zero"), "the direction of block 0 is zero")):
        with pytest.raises(BakeError, match=msg):
            bake.plan({"model": str(models["llama"]), "interventions": [{"kind": "ablate", "direction": ref}]})
    with pytest.raises(BakeError, match="a direction per block goes in `direction:`, alone"):
        bake.plan({"model": str(models["llama"]), "interventions": [
            {"kind": "ablate", "directions": [str(tmp_path / "dirs.safetensors#candidates")]}]})


def test_rows_keep_the_row_norms_in_the_checkpoint(models, tmp_path):
    _files(models["llama-untied"], tmp_path)
    out = tmp_path / "out"
    _apply(models["llama-untied"], [{"kind": "ablate", "direction": str(tmp_path / "dirs.safetensors#r"),
                                     "norm_preserving": "rows"}], out)
    a, b = load_file(str(models["llama-untied"] / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in ("model.layers.1.mlp.down_proj.weight", "model.layers.2.self_attn.o_proj.weight"):
        assert torch.allclose(a[k].double().norm(dim=1), b[k].double().norm(dim=1), rtol=1e-5)
        assert not torch.equal(a[k], b[k])


def test_ablate_weights_need_one_per_block_and_gemma_refuses_norm_preserving(models, tmp_path):
    _files(models["llama"], tmp_path)
    r = str(tmp_path / "dirs.safetensors#r")
    with pytest.raises(BakeError, match="2 weights; the model has 3 blocks"):
        bake.plan({"model": str(models["llama"]), "interventions": [{"kind": "ablate", "direction": r,
                                                                     "weights": [1, 1]}]})
    with pytest.raises(BakeError, match="every block's strength is 0"):
        bake.plan({"model": str(models["llama"]), "interventions": [{"kind": "ablate", "direction": r,
                                                                     "weights": [0, 0, 0]}]})
    _files(models["gemma3"], tmp_path)
    with pytest.raises(bake.NotBakeable, match="norm_preserving: rows needs writers that ablate bakes exactly"):
        bake.plan({"model": str(models["gemma3"]), "interventions": [
            {"kind": "ablate", "direction": r, "norm_preserving": "rows", "approximate": True}]})


# site -> families where it bakes (a bias there, or a stock flag that creates one); others refuse
SITES = {"attn_out": {"gpt2", "llama", "llama-untied", "qwen3"}, "mlp_out": {"gpt2", "llama", "llama-untied"}}


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("site", list(SITES))
def test_steer_sites(models, tmp_path, name, site):
    _files(models[name], tmp_path)
    iv = {"kind": "steer", "layers": [1], "vector": str(tmp_path / "v.safetensors"), "scale": 2.0, "site": site}
    if name not in SITES[site]:
        with pytest.raises(bake.NotBakeable, match=f"steer at site {site} cannot be baked exactly"):
            bake.plan({"model": str(models[name]), "interventions": [iv]})
        return
    rep = _passed(_apply(models[name], [iv], tmp_path / "out"))
    assert f"the {site[:-4]} write of block(s) [1]" in rep["steps"][0]["summary"]


def test_qwen3_attn_out_site_sets_attention_bias(models, tmp_path):
    """Qwen3 has no MLP bias, so block_out is refused; the attention site bakes, but it is a different
    intervention (before the block's MLP), and the refusal says so rather than offering it as the fix."""
    _files(models["qwen3"], tmp_path)
    iv = {"kind": "steer", "layers": [1], "vector": str(tmp_path / "v.safetensors")}
    with pytest.raises(bake.NotBakeable, match=r"No other site computes the same thing.*site: attn_out bakes, but "
                       r"adds the vector at another point.*bake learn steer --site attn_out") as e:
        bake.plan({"model": str(models["qwen3"]), "interventions": [iv]})
    assert "would bake" not in str(e.value) and "aura" not in str(e.value)
    out = tmp_path / "out"
    rep = _passed(_apply(models["qwen3"], [dict(iv, site="attn_out")], out))
    assert rep["config_changes"]["attention_bias"] is True
    t = {}
    for f in out.glob("*.safetensors"):
        t.update(load_file(str(f)))
    v = load_file(str(tmp_path / "v.safetensors"))["v"]
    assert torch.allclose(t["model.layers.1.self_attn.o_proj.bias"], v)
    assert torch.count_nonzero(t["model.layers.1.self_attn.q_proj.bias"]) == 0


def _means(fam, glob_rel, tmp, with_alphas=True):
    g = torch.Generator().manual_seed(5)
    mods = [m for m in fam.modules if m.endswith(glob_rel) and m.startswith(fam.blocks_path)]
    n = {m: fam.params[m + ".weight"][1 if fam.modules[m] == "Conv1D" else 0] for m in mods}
    data = {m: torch.rand(n[m], generator=g) for m in mods}
    data.update({f"mu/{m}": torch.randn(n[m], generator=g) for m in mods})
    save_file(data, str(tmp / "alphas.safetensors"))
    return f"{fam.blocks_path}.*{glob_rel}"


@pytest.mark.parametrize("name,rel", [("gpt2", ".mlp.c_fc"), ("llama-untied", ".mlp.up_proj"), ("qwen2", ".self_attn.q_proj")])
def test_aura_mean_shift_bakes_where_a_bias_exists_or_a_flag_creates_one(models, tmp_path, name, rel):
    fam = _files(models[name], tmp_path)
    glob = _means(fam, rel, tmp_path)
    a = str(tmp_path / "alphas.safetensors")
    plain = _passed(_apply(models[name], [{"kind": "aura", "modules": [glob], "alphas": a}], tmp_path / "plain"))
    rep = _passed(_apply(models[name], [{"kind": "aura", "modules": [glob], "alphas": a, "mu": a}], tmp_path / "mu"))
    assert "toward their means mu" in rep["steps"][0]["summary"]
    assert rep["edits"] != plain["edits"]  # the biases carry (1 - alpha) * mu


def test_aura_mean_shift_refused_without_a_bias(models, tmp_path):
    fam = _files(models["qwen3"], tmp_path)
    glob = _means(fam, ".mlp.up_proj", tmp_path)
    a = str(tmp_path / "alphas.safetensors")
    with pytest.raises(bake.NotBakeable, match="has no bias to hold the mean-shift's constant"):
        bake.plan({"model": str(models["qwen3"]), "interventions": [{"kind": "aura", "modules": [glob],
                                                                      "alphas": a, "mu": a}]})


def test_variants_compose_with_steer_in_recipe_order(models, tmp_path):
    """steer then a partial subspace ablation with norm-preserving rows: the steered bias goes through the
    same output-side map, and the bake still equals the hooks."""
    _files(models["llama-untied"], tmp_path)
    ivs = [{"kind": "steer", "layers": [1], "vector": str(tmp_path / "v.safetensors"), "scale": 2.0},
           {"kind": "ablate", "directions": [str(tmp_path / "dirs.safetensors#r"), str(tmp_path / "dirs.safetensors#s")],
            "weights": [0.5, 1.0, 0.25], "norm_preserving": "rows"}]
    rep = _passed(_apply(models["llama-untied"], ivs, tmp_path / "out"))
    assert "model.layers.1.mlp.down_proj.bias" in {e["tensor"] for e in rep["edits"]
                                                   if any("ablate" in o for o in e["ops"])}
