"""SAEs: the SAELens reader on files written in its layouts (v6, v5, older), encode/decode on
hand-made weights, hook names, and the SAE kinds: the compile-time split (gated term refused,
linearized or approximated by added MLP units as declared, constant baked exactly) and the hook
realization."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import bake
from bake.errors import BakeError, NotBakeable
from bake.artifacts import sae as sf
from tiny import COMMON, add_tokenizer, build

D = COMMON["hidden_size"]


def _write(folder, cfg, **tensors):
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / sf.WEIGHTS))
    (folder / sf.CFG).write_text(json.dumps(cfg))
    return folder


def _hand():
    """d_in 2, d_sae 3: W_enc columns e0, e1, e0 + e1; W_dec its transpose; no biases."""
    w_enc = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    return dict(W_enc=w_enc, W_dec=w_enc.T.clone(), b_enc=torch.zeros(3), b_dec=torch.zeros(2))


def test_the_three_layouts_and_architectures_read_and_encode_as_saelens_defines(tmp_path):
    x = torch.tensor([[2.0, -1.0], [0.5, 3.0]])  # pre-activations: [2, -1, 1] and [0.5, 3, 3.5]
    v6 = sf.read(_write(tmp_path / "v6", {"architecture": "topk", "k": 1, "d_in": 2, "d_sae": 3,
                                          "metadata": {"hook_name": "blocks.1.hook_resid_post"}}, **_hand()))
    assert (v6.arch, v6.k, v6.hook_name) == ("topk", 1, "blocks.1.hook_resid_post")
    assert torch.equal(v6.encode(x), torch.tensor([[2.0, 0, 0], [0, 0, 3.5]]))
    v5 = sf.read(_write(tmp_path / "v5", {"hook_name": "blocks.0.hook_mlp_out", "activation_fn_str": "relu",
                                          "d_in": 2, "d_sae": 3}, **_hand()))
    assert v5.arch == "relu" and torch.equal(v5.encode(x), torch.tensor([[2.0, 0, 1], [0.5, 3, 3.5]]))
    old = sf.read(_write(tmp_path / "old", {"hook_point": "blocks.2.hook_resid_pre", "architecture": "jumprelu"},
                         threshold=torch.tensor([1.0, 1.0, 3.0]), **_hand()))
    assert old.hook_name == "blocks.2.hook_resid_pre"
    assert torch.equal(old.encode(x), torch.tensor([[2.0, 0, 0], [0, 3, 3.5]]))  # kept only above the threshold
    # decode, and the b_dec handling: with apply_b_dec_to_input, b_dec is subtracted before encoding
    hand = {**_hand(), "b_dec": torch.tensor([1.0, 0.0])}
    s = sf.read(_write(tmp_path / "bdec", {"architecture": "standard"}, **hand))
    assert torch.equal(s.pre(torch.tensor([1.0, 0.0])), torch.zeros(3))
    assert torch.equal(s.decode(torch.tensor([1.0, 0, 0])), torch.tensor([2.0, 0.0]))
    # constant_norm_rescale: inputs scaled to norm sqrt(d_in), outputs scaled back
    n = sf.read(_write(tmp_path / "norm", {"architecture": "standard", "normalize_activations":
                                           "constant_norm_rescale"}, **_hand()))
    xin = torch.tensor([3.0, 4.0])  # norm 5 -> scaled by sqrt(2) / 5
    assert torch.allclose(n.pre(xin), torch.tensor([3.0, 4.0, 7.0]) * 2 ** 0.5 / 5)
    assert torch.allclose(n.decode(torch.tensor([1.0, 0, 0]), xin), torch.tensor([5 / 2 ** 0.5, 0.0]))


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_files_saelens_itself_writes_read_and_encode_as_saelens_does(tmp_path, arch):
    """SAELens (a test dependency) saves each architecture; bake reads it, encodes and decodes as
    SAELens does, and SAELens reads back what bake writes."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    cls, cfg_cls = {"standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
                    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
                    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig)}[arch]
    torch.manual_seed(0)
    theirs = cls(cfg_cls(d_in=8, d_sae=16, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post"),
                         **({"k": 3} if arch == "topk" else {})))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    theirs.save_model(tmp_path / "theirs")
    mine = sf.read(tmp_path / "theirs")
    assert mine.hook_name == "blocks.1.hook_resid_post" and mine.arch == {"standard": "relu"}.get(arch, arch)
    x = torch.randn(6, 8)
    with torch.no_grad():
        f = theirs.encode(x)
        assert (f > 0).any() and torch.equal(mine.encode(x), f)
        assert torch.allclose(mine.decode(f), theirs.decode(f), atol=1e-6)
        back = cls.load_from_disk(str(sf.write(mine, tmp_path / "mine")))
        assert torch.equal(back.encode(x), f)


def test_write_then_read_is_the_same_sae(tmp_path):
    g = torch.Generator().manual_seed(0)
    sae = sf.SAE(torch.randn(4, 6, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, generator=g),
                 torch.randn(4, generator=g), "topk", "blocks.1.hook_resid_post", 2)
    back = sf.read(sf.write(sae, tmp_path / "s"))
    cfg = json.loads((tmp_path / "s" / sf.CFG).read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 2 and cfg["metadata"]["hook_name"] == sae.hook_name
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(sae, name))
    x = torch.randn(5, 4, generator=g)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_bad_sae_folders_are_refused_with_the_file_named(tmp_path):
    cases = [
        ({"architecture": "gated"}, _hand(), "gated"),
        ({"architecture": "topk"}, _hand(), "positive integer k"),
        ({"architecture": "standard", "d_sae": 5}, _hand(), "d_sae = 5"),
        ({"architecture": "jumprelu"}, _hand(), "threshold"),
        ({"architecture": "standard"}, {**_hand(), "W_dec": torch.zeros(2, 3)}, "expected [d_in, d_sae]"),
        ({"architecture": "standard"}, {**_hand(), "b_enc": torch.tensor([0.0, float("nan"), 0.0])}, "NaN"),
        ({"architecture": "standard", "normalize_activations": "l2"}, _hand(), "normalize_activations"),
    ]
    for i, (cfg, tensors, msg) in enumerate(cases):
        with pytest.raises(BakeError, match=msg.replace("[", r"\[")):
            sf.read(_write(tmp_path / str(i), cfg, **tensors))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BakeError, match="cfg.json and sae_weights.safetensors"):
        sf.read(empty)
    broken = _write(tmp_path / "broken", {"architecture": "standard"}, **_hand())
    (broken / sf.WEIGHTS).write_bytes(b"\x00" * 10)
    with pytest.raises(BakeError, match="cannot read"):
        sf.read(broken)


def test_hook_names_map_to_blocks_and_sites():
    assert sf.hook_site("blocks.2.hook_resid_post", 3) == (2, "block_out")
    assert sf.hook_site("blocks.2.hook_resid_pre", 3) == (1, "block_out")
    assert sf.hook_site("blocks.0.hook_mlp_out", 3) == (0, "mlp_out")
    for bad, msg in (("blocks.0.hook_resid_pre", "embeddings"), ("blocks.3.hook_resid_post", "3 blocks"),
                     ("blocks.1.attn.hook_z", "maps blocks.L")):
        with pytest.raises(BakeError, match=msg):
            sf.hook_site(bad, 3)


# --- the kinds on a tiny llama -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("sae")
    src = add_tokenizer(build("llama", d / "src"))
    g = torch.Generator().manual_seed(3)
    w_dec = torch.randn(16, D, generator=g)
    sf.write(sf.SAE(w_dec.T.contiguous(), w_dec, torch.zeros(16), torch.zeros(D), "topk",
                    "blocks.1.hook_resid_post", 4), d / "sae")
    return d, src


def _recipe(d, src, name, **iv):
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": str(src), "interventions": [{"sae": str(d / "sae"), **iv}]}))
    return path


def _unit(d, features):
    w = load_file(str(d / "sae" / sf.WEIGHTS))["W_dec"].double()[features]
    return (w / w.norm(dim=-1, keepdim=True)).T


def test_the_gated_term_is_refused_before_anything_is_written(tiny):
    d, src = tiny
    for kind, extra, says in (("sae_calibrate", {"b": 2.0}, "constant part (b * mean(s)) alone would bake exactly"),
                              ("sae_amplify", {"a": 4.0}, "linearize: decoder")):
        r = _recipe(d, src, f"refused-{kind}", kind=kind, features=[3, 5], **extra)
        with pytest.raises(NotBakeable, match="ReLU of the residual stream") as e:
            bake.apply(r, output=d / f"out-{kind}", progress=False)
        assert says in str(e.value) and "--hooks" in str(e.value)
        assert not (d / f"out-{kind}").exists()


def test_linearize_decoder_bakes_the_constant_and_the_linear_term_exactly(tiny):
    d, src = tiny
    r = _recipe(d, src, "dec", kind="sae_calibrate", features=[3, 5], b=2.0, linearize="decoder", activation=0.5)
    rep = bake.apply(r, output=d / "dec-out", progress=False)
    assert rep.verification["status"] == "passed"
    s = _unit(d, [3, 5])
    want = 2.0 * s.mean(dim=1) - 0.5 * s.sum(dim=1)  # b * mean(s) + gate (-1) * activation * sum(s)
    bias = next(t["model.layers.1.mlp.down_proj.bias"] for f in sorted((d / "dec-out").glob("*.safetensors"))
                if "model.layers.1.mlp.down_proj.bias" in (t := load_file(str(f))))
    assert torch.allclose(bias.double(), want, atol=1e-6)
    step = rep.steps[0]
    assert "linearized (decoder)" in step["summary"] and "different intervention" in step["summary"]


def test_linearize_ablate_removes_the_features_from_every_writer_then_adds_the_constant(tiny):
    d, src = tiny
    r = _recipe(d, src, "abl", kind="sae_calibrate", features=[2, 7, 9], b=1.5, linearize="ablate")
    rep = bake.apply(r, output=d / "abl-out", progress=False)
    assert rep.verification["status"] == "passed"
    tensors = {k: v for f in (d / "abl-out").glob("*.safetensors") for k, v in load_file(str(f)).items()}
    q = _unit(d, [2, 7, 9])
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.2.mlp.down_proj.weight"):
        assert (q.T.float() @ tensors[name]).abs().max() < 1e-4  # no writer writes into the features' span
    # the constant survives: block 1's new MLP bias is b * mean(s), added after the projection
    assert torch.allclose(tensors["model.layers.1.mlp.down_proj.bias"].double(), 1.5 * q.mean(dim=1), atol=1e-6)


def test_the_hook_version_is_the_formula_and_runs_where_the_bake_refuses(tiny, capsys):
    from bake import api
    from bake.cli import main
    from bake.compile.hooks import hooked
    from bake.model.loading import load_model

    d, src = tiny
    r = _recipe(d, src, "amp", kind="sae_amplify", features=[1, 4], a=3.0)
    p = api.plan(r, progress=False, hooks_only=True)
    model = load_model(src, dtype=torch.float32, trust_remote_code=False).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    seen = []
    with torch.no_grad():
        x = model(input_ids=ids, output_hidden_states=True).hidden_states[2]  # block 1's output
        with hooked(model, p.hooks):  # read block 1's output by a hook registered after bake's
            model.model.layers[1].register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
            model(input_ids=ids)
    out = seen[0]
    s = _unit(d, [1, 4]).float()
    assert torch.allclose(out, x + 3.0 * torch.relu(x @ s) @ s.T, atol=1e-5)
    assert (torch.relu(x @ s) > 0).any() and not torch.allclose(out, x, atol=1e-3)  # the gate opened somewhere
    assert main(["generate", str(r), "--hooks", "hello", "--max-new-tokens", "4", "-q"]) == 0
    assert "hooks of amp.yaml" in capsys.readouterr().out


def _baked(out):
    return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("kind, extra, coef", [("sae_amplify", {"a": 3.0}, 3.0), ("sae_calibrate", {"b": 2.0}, -1.0)])
def test_approximate_neurons_adds_one_unit_per_feature_computing_the_gated_term(tiny, kind, extra, coef):
    """The baked block-1 MLP minus the source's is, on any input, coef * SiLU(gain u) / gain * s_c per feature
    (u = rms * (x / g) . s_c on the MLP's normalized input x, g the norm's weight), within 0.2785 * |coef| /
    gain of the ReLU; the other blocks get zero units, the config one intermediate_size for all."""
    from bake.model.loading import load_model

    d, src = tiny
    feats, rho, gain = [1, 4], 5.0, 8.0
    r = _recipe(d, src, f"neurons-{kind}", kind=kind, features=feats, approximate="neurons", gain=gain, rms=rho, **extra)
    out = d / f"neurons-{kind}-out"
    rep = bake.apply(r, output=out, progress=False)
    v = rep.verification
    assert v["status"] == "approximate" and not v["exact"] and v["failures"] == []
    assert v["metrics"]["kl_mean"] > 0  # measured, not called equivalent
    step = rep.steps[0]
    assert "approximated (neurons)" in step["summary"] and "measures its deviation" in step["summary"]
    assert step["details"]["neurons"]["gate_error_bound"] == pytest.approx(0.2785 / gain)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["intermediate_size"] == COMMON["intermediate_size"] + 2 and cfg["mlp_bias"] is True
    t = _baked(out)
    n = COMMON["intermediate_size"]
    for i in (0, 2):  # zero units elsewhere: exactly the source MLP
        assert not t[f"model.layers.{i}.mlp.gate_proj.weight"][n:].any() and not t[f"model.layers.{i}.mlp.down_proj.weight"][:, n:].any()
    base, baked = (load_model(p, dtype=torch.float64, trust_remote_code=False) for p in (src, out))
    s = _unit(d, feats)
    with torch.no_grad():
        h = torch.randn(1, 9, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
        norm = base.model.layers[1].post_attention_layernorm
        x = norm(h)
        const = 2.0 * s.mean(dim=1) if kind == "sae_calibrate" else 0.0  # b * mean(s): the MLP's new output bias
        added = baked.model.layers[1].mlp(x) - base.model.layers[1].mlp(x) - const
        u = rho * (x / norm.weight) @ s
        assert torch.allclose(added, coef * (torch.nn.functional.silu(gain * u) / gain) @ s.T, atol=1e-5)  # float32 weights
        relu = coef * torch.relu(u) @ s.T
        assert (added - relu).norm(dim=-1).max() <= 0.2785 * abs(coef) * len(feats) / gain
        assert (relu.norm(dim=-1) > 1).any() and (u < 0).any()  # the gate opened and closed


def test_approximate_neurons_deviation_from_the_hook_shrinks_with_the_gain(tiny, capsys):
    """The end-to-end deviation (KL of the baked model from the hooked one) falls as the gain grows, toward
    the floor the rms estimate and the reading point (the stream before the MLP, not after it) leave; the
    rms is measured on a text file when one is given."""
    d, src = tiny
    (d / "rms-texts.txt").write_text("the cat sat on the mat\nyou are a lovely person\nwhat a wonderful day\n")
    kl = []
    for gain in (0.05, 0.5, 5.0):
        r = _recipe(d, src, f"gain-{gain}", kind="sae_amplify", features=[1, 4], a=3.0, approximate="neurons",
                    gain=gain, rms="rms-texts.txt")
        rep = bake.apply(r, output=d / f"gain-{gain}-out", progress=False)
        assert rep.verification["status"] == "approximate"
        kl.append(rep.verification["metrics"]["kl_mean"])
        rms = rep.steps[0]["details"]["neurons"]["rms"]
        assert rms["tokens"] >= 3 and rms["p10"] <= rms["median"] <= rms["p90"]
    assert kl[0] > kl[1] > kl[2] > 0, kl
    ran = yaml.safe_load((d / "gain-5.0-out" / "recipe.yaml").read_text())["interventions"][0]
    assert ran["rms"] == "artifacts/rms-texts.txt"  # the recipe as run names its copy inside the folder
    assert (d / "gain-5.0-out" / "artifacts" / "rms-texts.txt").read_text() == (d / "rms-texts.txt").read_text()
    from bake.cli import main

    assert main(["verify", str(d / "gain-5.0-out"), "-q"]) == 0  # re-checked from the output folder alone
    capsys.readouterr()
    assert main(["apply", str(d / "gain-5.0.yaml"), "--out", str(d / "local-out"), "--verify", "local", "-q"]) == 0
    out = capsys.readouterr().out  # local checks alone cannot measure the units: said, not implied
    assert "verification: APPROXIMATE" in out and "no module-local check measures its deviation" in out
    assert "model.layers.1: its hook (sae_gate) is approximated inside the module" in out


@pytest.mark.parametrize("family, bakes", [("mistral", True), ("qwen2", True), ("qwen3", False), ("mixtral", False)])
def test_approximate_neurons_bakes_where_a_stock_llama_mlp_can_hold_the_units(tmp_path, family, bakes):
    """Mistral and Qwen2 bake through their re-declaration as Llama with mlp_bias; Qwen3 (q/k norms: no
    re-declaration, no MLP bias flag) and routed experts are refused before anything is written."""
    src = build(family, tmp_path / "src")
    sf.write(sf.SAE(torch.eye(D), torch.eye(D), torch.zeros(D), torch.zeros(D), "topk", "blocks.1.hook_resid_post", 2),
             tmp_path / "sae")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"model": str(src), "interventions": [{
        "kind": "sae_amplify", "sae": str(tmp_path / "sae"), "features": [0, 3], "a": 1.0, "approximate": "neurons",
        "rms": 4.0}]}))
    if bakes:
        rep = bake.apply(tmp_path / "r.yaml", output=tmp_path / "out", progress=False)
        assert rep.verification["status"] == "approximate" and rep.verification["local"]["status"] == "passed"
        assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "llama"
    else:
        with pytest.raises(NotBakeable, match="Llama-layout MLP"):
            bake.apply(tmp_path / "r.yaml", output=tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()


def test_approximate_neurons_is_refused_where_it_cannot_add_units(tiny, tmp_path):
    d, src = tiny
    with pytest.raises(BakeError, match="choose one"):
        bake.apply(_recipe(d, src, "both", kind="sae_amplify", features=[1], a=1.0, linearize="decoder",
                           approximate="neurons", rms=3.0), output=tmp_path / "o1", progress=False)
    with pytest.raises(BakeError, match="needs rms"):
        bake.apply(_recipe(d, src, "norms", kind="sae_amplify", features=[1], a=1.0, approximate="neurons"),
                   output=tmp_path / "o2", progress=False)
    gemma = build("gemma3", tmp_path / "gemma")  # a norm after the MLP: units cannot add to the stream as they are
    sf.write(sf.SAE(torch.eye(D), torch.eye(D), torch.zeros(D), torch.zeros(D), "topk", "blocks.1.hook_resid_post", 2),
             tmp_path / "gsae")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"model": str(gemma), "interventions": [{
        "kind": "sae_amplify", "sae": str(tmp_path / "gsae"), "features": [1], "a": 1.0, "approximate": "neurons",
        "rms": 2.0}]}))
    with pytest.raises(NotBakeable, match="Llama-layout MLP") as e:
        bake.apply(tmp_path / "g.yaml", output=tmp_path / "o3", progress=False)
    assert "linearize: decoder" in str(e.value) and not (tmp_path / "o3").exists()
    # a later step sized for the old units is refused before anything is written
    aura = tmp_path / "alpha.safetensors"
    save_file({"model.layers.1.mlp.gate_proj": torch.full((COMMON["intermediate_size"],), 0.5)}, str(aura))
    (tmp_path / "after.yaml").write_text(yaml.safe_dump({"model": str(src), "interventions": [
        {"kind": "sae_amplify", "sae": str(d / "sae"), "features": [1], "a": 1.0, "approximate": "neurons", "rms": 3.0},
        {"kind": "aura", "modules": ["model.layers.1.mlp.gate_proj"], "alphas": str(aura)}]}))
    with pytest.raises(NotBakeable, match="list the SAE intervention after it"):
        bake.apply(tmp_path / "after.yaml", output=tmp_path / "o4", progress=False)
    assert not (tmp_path / "o4").exists()


# --- explanation and training -------------------------------------------------------------------------

def test_binary_mutual_information_closed_forms():
    from bake.learn.explain import binary_mi

    t = torch.tensor
    assert float(binary_mi(t(0.25, dtype=torch.float64), t(0.5, dtype=torch.float64), t(0.5, dtype=torch.float64))) \
        == pytest.approx(0, abs=1e-12)  # independent
    assert float(binary_mi(t(0.5, dtype=torch.float64), t(0.5, dtype=torch.float64), t(0.5, dtype=torch.float64))) \
        == pytest.approx(torch.log(t(2.0)).item())  # one determines the other: H = log 2


def test_mutual_information_recovers_a_planted_word_feature_association():
    from bake.learn import explain as ex

    g = torch.Generator().manual_seed(0)
    e = torch.randn(200, 24, generator=g, dtype=torch.float64)
    w = torch.randn(10, 24, generator=g, dtype=torch.float64)
    w[3] = e[7] + 0.1 * torch.randn(24, generator=g, dtype=torch.float64)  # feature 3 is word 7's direction
    words = [f"w{i}" for i in range(200)]
    p_c_w = ex.conditionals(e, w, temperature=0.05)
    counts = torch.ones(200)
    counts[[11, 12]] = 1000  # two very frequent words: they must not crowd out the planted one
    p_w = ex.prior([[i] for i in range(200)], counts)
    found = ex.explain(p_c_w, p_w, 3, max_words=10)
    assert found["words"][0] == 7 and found["mi"] > 0
    assert ex.feature_for_word(p_c_w, words, "W7") == 3
    ranked = ex.rank_features(p_c_w, p_w, 10)
    assert sorted(c for c, _ in ranked) == list(range(10)) and ranked[0][1] >= ranked[-1][1]
    with pytest.raises(KeyError):
        ex.feature_for_word(p_c_w, words, "nope")
    # computed in blocks (here 64 elements: 6 words or 1 feature at a time), p(c|w) is the full softmax
    full = torch.softmax(torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(w, dim=-1).T / 0.05, -1)
    small = ex.Conditionals(e, w, 0.05, chunk=64)
    assert torch.allclose(small.columns(range(10)).double(), full, atol=1e-5)
    assert torch.allclose(small.row(7).double(), full[7], atol=1e-5)
    again = ex.rank_features(small, p_w, 10)
    assert [c for c, _ in again] == [c for c, _ in ranked]
    assert [m for _, m in again] == pytest.approx([m for _, m in ranked], rel=1e-5)


@pytest.mark.parametrize("family", ["llama-untied", "gemma3", "gpt2"])
def test_feature_vectors_come_from_the_checkpoint_as_the_loaded_model_has_them(tmp_path, family):
    """The output (or input) embedding and the final norm's gain (Gemma's 1 + w, GPT-2's LayerNorm) read
    from the checkpoint alone, without loading the model, equal the loaded model's."""
    from bake.families import resolve
    from bake.model.loading import load_model
    from bake.model.source import open_checkpoint
    from bake.learn import explain as ex

    src = build(family, tmp_path / "m")
    ckpt = open_checkpoint(src)
    fam = resolve(ckpt.config, ckpt.shapes)
    model = load_model(src, trust_remote_code=False)
    w_dec = torch.randn(5, fam.d, generator=torch.Generator().manual_seed(0))
    emb, fvecs = ex.feature_vectors(ckpt, fam, w_dec, "output")
    assert torch.equal(emb, model.get_output_embeddings().weight.detach())
    gain = ex.norm_gain(ex.final_norm(model), fam.d)
    assert not torch.allclose(gain, torch.ones_like(gain))  # (the tiny models' norms are not plain ones)
    assert torch.allclose(fvecs, w_dec.double() * gain.double())
    emb_in, same = ex.feature_vectors(ckpt, fam, w_dec, "input")
    assert torch.equal(emb_in, model.get_input_embeddings().weight.detach()) and same is w_dec


def test_topk_training_reconstructs_sparse_data_and_reports_its_figures():
    from bake.learn.sae import train

    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(24, 16, generator=g), dim=-1)
    codes = torch.zeros(3000, 24)
    for i in range(3000):  # two active atoms per sample, positive coefficients
        idx = torch.randperm(24, generator=g)[:2]
        codes[i, idx] = torch.rand(2, generator=g) + 0.5
    x = codes @ atoms * 7.0
    sae, fig = train(x, d_sae=48, k=4, steps=1500, batch_size=256, lr=3e-3, progress=False, hook_name="blocks.0.hook_resid_post")
    assert fig["fvu_held_out"] < 0.1, fig
    assert 0 <= fig["dead_share"] <= 1 and fig["tokens"] == 3000 and fig["held_out_tokens"] == 300
    f = sae.encode(x[:50])
    assert ((f > 0).sum(-1) <= 4).all()
    assert torch.allclose(sae.W_dec.norm(dim=-1) * fig["input_scale"], torch.ones(48), atol=1e-4)  # unit rows, folded


def test_learn_sae_and_explain_on_a_tiny_model(tiny, tmp_path, capsys):
    from bake.cli import main
    from tiny import CORPUS

    d, src = tiny
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3))
    out = tmp_path / "learned"
    assert main(["learn", "sae", "--model", str(src), "--data", str(corpus), "--layer", "1", "--d-sae", "24", "--k", "3",
                 "--steps", "60", "--batch-size", "64", "--out", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "TopK SAE on blocks.1.hook_resid_post, 24 features, k = 3" in said and "dead features" in said
    sae = sf.read(out)
    assert (sae.arch, sae.k, sae.d_in, sae.d_sae) == ("topk", 3, D, 24)
    # a second run refuses to replace it without --force, and --force replaces only an SAE folder
    assert main(["learn", "sae", "--model", str(src), "--data", str(corpus), "--layer", "1", "--out", str(out), "-q"]) == 2
    (out / "notes.txt").write_text("mine")
    assert main(["learn", "sae", "--model", str(src), "--data", str(corpus), "--layer", "1", "--out", str(out),
                 "--force", "-q"]) == 2
    assert "more than an SAE" in capsys.readouterr().err and (out / "notes.txt").is_file()
    words = tmp_path / "words.txt"
    words.write_text("cat\nmat\nhappy\nbread\nbomb\nweather\n")
    assert main(["explain", str(out), "--model", str(src), "--data", str(corpus), "--words", str(words),
                 "--top", "3", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["features"]) == 3 and res["vocabulary"] == 6 and res["prior"].startswith("corpus")
    assert all(r["words"] and r["mi"] >= 0 for r in res["features"])
    assert all("[[" in c["context"] for r in res["features"] for c in r["contexts"])


def test_a_recipe_learns_its_sae_inline_and_names_a_feature_by_word(tiny, tmp_path, monkeypatch):
    from tiny import CORPUS

    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    d, src = tiny
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS * 3))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(src), "interventions": [{
        "kind": "sae_amplify", "a": 2.0, "features": ["cat", 0], "linearize": "decoder",
        "sae": {"learn": {"data": "corpus.txt", "layer": 1, "d_sae": 16, "k": 2, "steps": 30, "batch_size": 32}}}]}))
    rep = bake.apply(recipe, output=tmp_path / "out", progress=False)
    assert rep.verification["status"] == "passed"
    step = rep.steps[0]
    assert "cat ->" in step["summary"] and "linearized (decoder)" in step["summary"]
    learned = list((tmp_path / "cache" / "learned").glob("sae_amplify-*"))
    assert any(p.is_dir() for p in learned)  # the SAE folder, cached


def test_eval_hooks_runs_the_gated_formula_and_projects_on_the_features(tiny, tmp_path):
    """`bake eval --hooks` on a recipe no bake computes: the steering suite's projection at the SAE's block
    moves by a * ReLU(x s) on every position (the hook is the formula), and the base's is unchanged."""
    from bake import api

    d, src = tiny
    r = _recipe(d, src, "eval-amp", kind="sae_amplify", features=[1], a=2.0)
    rep = api.evaluate(r, suites="steering", hooks=True, out=tmp_path / "e", progress=False,
                       options={"samples": 1, "tokens": 4, "limit": 3})
    name = "block 1 (SAE features [1])"
    base = rep["models"]["base"]["steering"]["summary"]["projection"][name]["mean"]
    moved = rep["models"]["hooked"]["steering"]["vs base"]["projection change"][name]["mean"]
    # per position x.s -> x.s + 2 relu(x.s): the change is 2 * mean(relu(x.s)), at least 2 * relu(mean(x.s))
    assert moved >= 2 * max(base, 0.0) - 1e-6 and moved > 0
    assert "the sum of the features' unit decoder rows" in (tmp_path / "e" / "eval_report.md").read_text()


def test_learn_sae_refuses_bad_settings_before_training(tiny, tmp_path, capsys):
    from bake.cli import main

    d, src = tiny
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\n" * 5)
    for extra, says in ((["--k", "40", "--d-sae", "8"], "1 <= k <= d_sae"), (["--steps", "0"], "--steps, --batch-size and --max-length"),
                        (["--layer", "9"], "out of range")):
        args = ["learn", "sae", "--model", str(src), "--data", str(corpus), "--layer", "1", *extra,
                "--out", str(tmp_path / "o"), "-q"]
        assert main(args) == 2, extra
        assert says in capsys.readouterr().err
        assert not (tmp_path / "o").exists()
    assert main(["learn", "sae", "--model", str(src), "--data", str(corpus), "--layer", "1",
                 "--out", str(corpus), "-q"]) == 2  # an input is never the output
    assert corpus.read_text().startswith("the cat")
