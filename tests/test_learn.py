"""Learning artifacts: statistics, pooling, alpha rules, steering vectors, imports, refusal directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import bake
from bake.cli import main
from bake.learn import collect as learn
from bake.learn import learners, stats
from bake.artifacts import imports
from tiny import CORPUS, add_tokenizer, build

# --- statistics equal scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_auroc_and_aucpr_equal_sklearn_with_ties(seed):
    from sklearn import metrics
    g = np.random.default_rng(seed)
    x = np.round(g.normal(size=(257, 9)), 1)  # rounding makes many ties
    x[:, 0] = 1.0  # a constant unit: every sample tied
    y = (g.random(257) < 0.3).astype(int)
    au = stats.auroc(torch.tensor(x), torch.tensor(y)).numpy()
    ap = stats.aucpr(torch.tensor(x), torch.tensor(y)).numpy()
    for j in range(x.shape[1]):
        assert abs(au[j] - metrics.roc_auc_score(y, x[:, j])) <= 1e-9
        assert abs(ap[j] - metrics.average_precision_score(y, x[:, j])) <= 1e-9


def test_values_equal_within_float_noise_rank_as_ties():
    """Two texts with the same response (the same first token) stay tied when batching adds float32
    noise of 1e-7 to one of them: the AUROC does not move."""
    x = torch.tensor([[0.5], [0.5], [0.1], [0.9], [0.5], [0.3]], dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1, 0, 1])
    noisy = x.clone()
    noisy[0] += 1e-7 * 0.9
    noisy[1] -= 1e-7 * 0.9
    assert stats.auroc(noisy, y).item() == stats.auroc(x, y).item() == pytest.approx(2 / 3)
    noisy[0] += 1e-3  # a real difference still counts
    assert stats.auroc(noisy, y).item() > stats.auroc(x, y).item()


def test_cohens_d_and_point_biserial_on_known_values():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    # means 1.5 vs 3.5, pooled sd = sqrt(0.5): d = 2 / 0.7071
    assert stats.cohens_d(x, y).item() == pytest.approx(2 / 0.5 ** 0.5)
    assert stats.point_biserial(x, y).item() == pytest.approx(np.corrcoef([1, 2, 3, 4], [0, 0, 1, 1])[0, 1])


def test_alpha_rules_on_hand_made_responses():
    # unit 0 separates perfectly (AUROC 1), unit 1 is anti (AUROC 0), unit 2 is 0.75
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    y = [0, 0, 1, 1]
    resp = {"m": x}
    alphas, _, au = learn.aura_alphas(resp, y, rule="aura")
    assert au["m"].tolist() == pytest.approx([1.0, 0.0, 0.875])
    assert alphas["m"].tolist() == pytest.approx([0.0, 1.0, 0.25])
    damp, _, _ = learn.aura_alphas(resp, y, rule="damp", k=1, value=0.5)
    assert damp["m"].tolist() == [0.5, 1.0, 1.0]
    det0, _, _ = learn.aura_alphas(resp, y, rule="det0", k=2)
    assert det0["m"].tolist() == [0.0, 1.0, 0.0]
    half, _, _ = learn.aura_alphas(resp, y, rule="aura", strength=0.5)
    assert half["m"].tolist() == pytest.approx([0.5, 1.0, 0.625])
    frac, _, _ = learn.aura_alphas({"a": x[:, :2], "b": x[:, 2:]}, y, rule="det0", fraction=1 / 3, per_layer=True)
    assert frac["a"].tolist() == [0.0, 1.0] and frac["b"].tolist() == [1.0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_ignores_padding(side):
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    if side == "left":
        mask = mask.flip(1)
    h_pad = h.clone()
    h_pad[mask == 0] = 1e6  # padding activations must never leak
    real1 = h[1][mask[1] == 1]
    assert torch.allclose(learn.pool(h_pad, mask, "max")[1], real1.max(0).values)
    assert torch.allclose(learn.pool(h_pad, mask, "mean")[1], real1.mean(0))
    assert torch.allclose(learn.pool(h_pad, mask, "last")[1], real1[-1])


# --- on a tiny model with a tokenizer --------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = build("llama", tmp_path_factory.mktemp("m") / "llama")
    return add_tokenizer(d)


def test_learn_aura_end_to_end_and_bake(model, tmp_path):
    rows = [{"comment_text": t, "toxic": int(any(w in t for w in ("hate", "stupid", "bomb", "idiot")))} for t in CORPUS]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "aura.safetensors"
    assert main(["learn", "aura", "--model", str(model), "--data", str(data), "--layout", "jigsaw",
                 "--out", str(out), "--statedict", str(tmp_path / "sd"), "--quiet"]) == 0
    t = load_file(str(out))
    n = 3  # tiny llama blocks
    assert sorted(k for k in t if not k.startswith("auroc/")) == [f"model.layers.{i}.mlp.up_proj" for i in range(n)]
    for i in range(n):
        a, au = t[f"model.layers.{i}.mlp.up_proj"], t[f"auroc/model.layers.{i}.mlp.up_proj"]
        assert torch.allclose(a, stats.alpha_aura(au.double()).float())
    # the ml-aura export holds the same alphas, and a recipe bakes from either form
    sd = torch.load(tmp_path / "sd" / "model.layers.0.mlp.up_proj.statedict", weights_only=True)
    assert sd["alpha"].shape == (1, 1, 48) and torch.equal(sd["alpha"].reshape(-1), t["model.layers.0.mlp.up_proj"])
    for alphas in (str(out), str(tmp_path / "sd")):
        report = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                             "interventions": [{"kind": "aura", "modules": ["model.layers.*.mlp.up_proj"],
                                                "alphas": alphas}]},
                            output=tmp_path / ("o" + str(len(alphas))), progress=False)
        assert report["verification"]["status"] == "passed"


def test_learned_alphas_do_not_depend_on_batching_or_padding(model):
    """Batch sizes 1, 4 and 16, left or right padding, the model in memory or streamed from disk
    (allowed 1 kB): alphas equal within 1e-6 (float64 forward passes, positions counted over real
    tokens). eval/learn_batching.py measures it on SmolLM2."""
    runners = {"memory": learn.Runner(str(model)), "streamed": learn.Runner(str(model), max_memory=1000)}
    assert not runners["memory"].streamed and runners["streamed"].streamed
    assert next(runners["streamed"].model.parameters()).is_meta  # no weight is held between modules
    mods = runners["memory"].modules(["model.layers.*.mlp.up_proj"])
    y = [int(any(w in t for w in ("hate", "stupid", "bomb", "idiot"))) for t in CORPUS]
    alphas = {}
    for where, runner in runners.items():
        for bs in (1, 4, 16) if where == "memory" else (4,):
            for side in ("left", "right"):
                runner.tok.padding_side = side
                resp = runner.responses(CORPUS, mods, "max", 128, bs, progress=False)
                alphas[where, bs, side] = learn.aura_alphas(resp, y)[0]
    ref = alphas["memory", 1, "right"]
    for got in alphas.values():
        assert max((got[m] - ref[m]).abs().max().item() for m in mods) <= 1e-6
    for runner in runners.values():
        assert next(runner.model.parameters()).dtype == torch.float32  # the model is back in its dtype


def test_max_memory_sizes():
    assert [learners.parse_size(x) for x in ("8GB", "512MiB", "1.5G", "1000", None)] == [
        8 * 10**9, 512 << 20, 1_500_000_000, 1000, None]
    for bad in ("1.2.3", "lots", "-1GB"):
        with pytest.raises(bake.BakeError, match="--max-memory"):
            learners.parse_size(bad)


def test_learn_aura_data_parallel_equals_one_process(model, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (torchrun underneath, gloo): each
    process pools its share of the texts,
    the pooled responses are gathered in text order, and the file equals the one-process file."""
    import socket
    import subprocess
    import sys

    rows = [{"comment_text": t, "toxic": int(any(w in t for w in ("hate", "stupid", "bomb", "idiot")))} for t in CORPUS]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["learn", "aura", "--model", str(model), "--data", str(data), "--layout", "jigsaw", "--batch-size", "4",
            "--json"]
    assert main(args + ["--out", str(tmp_path / "one.safetensors"), "--quiet"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "--main_process_port", str(port), "-m", "bake", *args,
                          "--out", str(tmp_path / "two.safetensors")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["processes"] == 2  # printed once, by the first process
    one, two = load_file(str(tmp_path / "one.safetensors")), load_file(str(tmp_path / "two.safetensors"))
    assert sorted(one) == sorted(two) and len(one) == 6
    for k in one:
        assert (one[k] - two[k]).abs().max().item() <= 1e-6, k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "one.safetensors", "two.safetensors"]


def test_learn_steer_and_refusal_data_parallel_equal_one_process(model, tmp_path):
    """`steer` and `refusal` under `accelerate launch` with 2 processes (CPU, gloo): the residuals and
    the scoring log-probs are shared as AURA's responses are; the files equal the one-process ones
    (to float32 rounding: each process batches its own share)."""
    import socket
    import subprocess
    import sys

    (tmp_path / "pos.txt").write_text("\n".join(CORPUS[: len(CORPUS) // 2]))
    (tmp_path / "neg.txt").write_text("\n".join(CORPUS[len(CORPUS) // 2:]))
    (tmp_path / "hf.json").write_text(json.dumps([{"instruction": t} for t in CORPUS[:8]]))
    (tmp_path / "hl.json").write_text(json.dumps([{"instruction": t} for t in CORPUS[8:16]]))
    jobs = {"steer": ["learn", "steer", "--model", str(model), "--positive", str(tmp_path / "pos.txt"),
                      "--negative", str(tmp_path / "neg.txt"), "--layers", "1:3"],
            "refusal": ["learn", "refusal", "--model", str(model), "--harmful", str(tmp_path / "hf.json"),
                        "--harmless", str(tmp_path / "hl.json"), "--kl-max", "100"]}
    for what, args in jobs.items():
        assert main(args + ["--out", str(tmp_path / f"{what}-one.safetensors"), "--quiet"]) == 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                              "--main_process_port", str(port), "-m", "bake", *args, "--quiet",
                              "--out", str(tmp_path / f"{what}-two.safetensors")], capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        one, two = (load_file(str(tmp_path / f"{what}-{n}.safetensors")) for n in ("one", "two"))
        assert sorted(one) == sorted(two), what
        for k in one:
            scale = float(one[k].abs().max()) or 1.0
            assert float((one[k] - two[k]).abs().max()) <= 1e-5 * scale, (what, k)


def test_mean_diff_recovers_a_planted_direction(model, tmp_path):
    """Plant a direction through a hook on block 1; mean-diff of block outputs recovers it."""
    runner = learn.Runner(str(model))
    d = runner.model.config.hidden_size
    planted = torch.randn(d, dtype=torch.float64)
    planted /= planted.norm()
    from bake.compile.planning import Hook
    texts = CORPUS
    pos = runner.residuals(texts, [1, 2], hooks=[Hook(0, "model.layers.1.mlp.down_proj", "add", 5 * planted)],
                           progress=False)
    neg = runner.residuals(texts, [1, 2], progress=False)
    v = learn.mean_diff(pos, neg)
    assert torch.allclose(v[0], 5 * planted, atol=1e-4)  # block 1 output: exactly the planted vector
    cos = (v[1] @ planted) / v[1].norm()
    assert cos > 0.5  # block 2 still carries it, mixed by one more block


def test_pca_sign_and_normalization():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(8, generator=g, dtype=torch.float64)
    d /= d.norm()
    neg = torch.randn(20, 1, 8, generator=g, dtype=torch.float64)
    pos = neg + (3 + torch.rand(20, 1, 1, generator=g, dtype=torch.float64)) * d
    v = learn.pca_diff(pos, neg)
    assert (v[0] @ d) > 0.99  # unit, aligned, positive sign
    assert learn.normalize(v * 7, "unit")[0].norm().item() == pytest.approx(1.0)


def test_learn_steer_cli_writes_a_recipe_ready_vector(model, tmp_path):
    (tmp_path / "pos.txt").write_text("you are a lovely person\nthank you so much\nwhat a wonderful day\n")
    (tmp_path / "neg.txt").write_text("I hate you, you idiot\nthis is stupid and ugly\nhow do I make a bomb\n")
    out = tmp_path / "love.safetensors"
    assert main(["learn", "steer", "--model", str(model), "--positive", str(tmp_path / "pos.txt"),
                 "--negative", str(tmp_path / "neg.txt"), "--layers", "1:3", "--normalize", "unit",
                 "--out", str(out), "--quiet"]) == 0
    v = load_file(str(out))["vector"]
    assert v.shape == (3, 32) and v[0].abs().sum() == 0 and v[1].norm().item() == pytest.approx(1, abs=1e-5)
    report = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                         "interventions": [{"kind": "steer", "layers": [1, 2], "vector": str(out), "scale": 2.0}]},
                        output=tmp_path / "o", progress=False)
    assert report["verification"]["status"] == "passed"


def test_learn_steer_from_one_labelled_file_equals_two_files_and_away_reverses_it(model, tmp_path, capsys):
    pos, neg = ["you are a lovely person", "thank you so much"], ["I hate you, you idiot", "this is stupid and ugly"]
    (tmp_path / "pos.txt").write_text("\n".join(pos) + "\n")
    (tmp_path / "neg.txt").write_text("\n".join(neg) + "\n")
    (tmp_path / "tox.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n"
                                                for t, lab in [(neg[0], 1), (pos[0], 0), (neg[1], 1), (pos[1], 0)]))
    common = ["learn", "steer", "--model", str(model), "--layers", "1:3", "--quiet"]
    assert main([*common, "--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"),
                 "--out", str(tmp_path / "two.safetensors")]) == 0
    assert main([*common, "--data", str(tmp_path / "tox.jsonl"), "--away", "--out", str(tmp_path / "away.safetensors")]) == 0
    assert main([*common, "--data", str(tmp_path / "tox.jsonl"), "--out", str(tmp_path / "toward.safetensors")]) == 0
    two, away, toward = (load_file(str(tmp_path / f"{n}.safetensors"))["vector"] for n in ("two", "away", "toward"))
    assert two[1].norm() > 0 and torch.allclose(away, two) and torch.allclose(toward, -two)
    (tmp_path / "ones.jsonl").write_text(json.dumps({"text": "a", "label": 1}) + "\n")
    for args, msg in [(["--data", str(tmp_path / "ones.jsonl")], "no label-0 texts"),
                      (["--data", str(tmp_path / "pos.txt")], "labels are needed"),
                      (["--data", str(tmp_path / "tox.jsonl"), "--positive", str(tmp_path / "pos.txt")], "not both"),
                      (["--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"), "--away"],
                       "--away reverses")]:
        capsys.readouterr()
        assert main([*common, *args, "--out", str(tmp_path / "x.safetensors")]) == 2, args
        assert msg in capsys.readouterr().err, args
    assert not (tmp_path / "x.safetensors").exists()


def test_gguf_control_vector_round_trip(tmp_path):
    vecs = {1: torch.randn(32), 2: torch.randn(32)}
    path = tmp_path / "cv.gguf"
    imports.write_control_vector(path, vecs)
    back = imports.read_control_vector(path)
    assert sorted(back) == [1, 2] and all(torch.allclose(back[k], vecs[k]) for k in vecs)
    full = imports.to_steering_tensor(back, 3)
    assert torch.equal(full[0], torch.zeros(32)) and torch.allclose(full[2], vecs[2])
    with pytest.raises(bake.BakeError, match="block 0"):
        imports.write_control_vector(path, {0: torch.zeros(3)})


def test_sae_decoder_row_imports_with_its_layer(model, tmp_path):
    sae = tmp_path / "sae"
    sae.mkdir()
    w = torch.randn(64, 32)
    save_file({"W_dec": w, "W_enc": w.T.contiguous(), "b_enc": torch.zeros(64), "b_dec": torch.zeros(32)},
              str(sae / "sae_weights.safetensors"))
    (sae / "cfg.json").write_text(json.dumps({"hook_name": "blocks.2.hook_resid_post", "d_in": 32, "d_sae": 64}))
    out = tmp_path / "v.safetensors"
    res = learners.learn_steer(str(model), out, from_sae=str(sae), feature=5, progress=False)
    assert res["layers"] == [2]
    v = load_file(str(out))["vector"]
    assert torch.equal(v[2], w[5]) and v[:2].abs().sum() == 0
    (sae / "cfg.json").write_text(json.dumps({"hook_name": "blocks.2.hook_mlp_out"}))
    with pytest.raises(bake.BakeError, match="hook_resid_post"):
        learners.learn_steer(str(model), out, from_sae=str(sae), feature=5, progress=False)


def test_learn_refusal_prints_a_table_and_bakes(model, tmp_path, capsys):
    harmful = [{"instruction": t} for t in ("how do I make a bomb", "I hate you, you idiot", "this is stupid and ugly")]
    harmless = [{"instruction": t} for t in ("how do I bake bread", "thank you so much", "what a wonderful day")]
    (tmp_path / "hf.json").write_text(json.dumps(harmful))
    (tmp_path / "hl.json").write_text(json.dumps(harmless))
    out = tmp_path / "refusal.safetensors"
    assert main(["learn", "refusal", "--model", str(model), "--harmful", str(tmp_path / "hf.json"),
                 "--harmless", str(tmp_path / "hl.json"), "--kl-max", "100", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "chosen: layer" in text and "refusal" in text
    t = load_file(str(out))
    assert t["direction"].shape == (32,) and t["candidates"].shape[1:] == (3, 32)
    report = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                         "interventions": [{"kind": "ablate", "direction": f"{out}#direction"}]},
                        output=tmp_path / "o", progress=False)
    assert report["verification"]["status"] == "passed"


def test_data_layouts_and_errors(tmp_path):
    from bake.learn import data
    (tmp_path / "d.csv").write_text("count,hate_speech,offensive_language,neither,class,tweet\n"
                                    "3,0,3,0,1,you suck\n3,0,0,3,2,nice day\n3,3,0,0,0,hateful\n")
    ds = data.load(tmp_path / "d.csv", layout="davidson", need_labels=True)
    assert ds.labels == [1, 0, 1] and ds.texts[1] == "nice day"
    with pytest.raises(bake.BakeError, match="labels must be 0/1"):
        data.load(tmp_path / "d.csv", text_column="tweet", label_column="class", need_labels=True)
    with pytest.raises(bake.BakeError, match="no text column 'body'"):
        data.load(tmp_path / "d.csv", text_column="body")


def test_recipe_learns_inline_then_bakes(model, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    rows = [{"text": t, "label": int(any(w in t for w in ("hate", "stupid", "bomb", "idiot")))} for t in CORPUS]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "pos.txt").write_text("you are a lovely person\nthank you so much\n")
    (tmp_path / "neg.txt").write_text("I hate you, you idiot\nthis is stupid and ugly\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
model: {model}
interventions:
  - kind: aura
    modules: ["model.layers.*.mlp.up_proj"]
    alphas: {{learn: {{data: d.jsonl, pooling: mean}}}}
  - kind: steer
    layers: [1]
    vector: {{learn: {{positive: pos.txt, negative: neg.txt, normalize: unit}}}}
    scale: 2.0
verify: {{generate_tokens: 2}}
""")
    report = bake.apply(recipe, output=tmp_path / "out", progress=False)
    assert report["verification"]["status"] == "passed"
    resolved = (tmp_path / "out" / "recipe.yaml").read_text()
    assert "learned:" in resolved and "pooling: mean" in resolved
    cached = sorted(p.name for p in (tmp_path / "cache" / "learned").glob("*.safetensors"))
    assert len(cached) == 2
    bake.apply(recipe, output=tmp_path / "out2", progress=False)  # second run reuses the cache
    assert sorted(p.name for p in (tmp_path / "cache" / "learned").glob("*.safetensors")) == cached
    moved = tmp_path / "clone"  # the same recipe and data elsewhere (another clone): still the same cache entries
    moved.mkdir()
    for f in ("d.jsonl", "pos.txt", "neg.txt", "r.yaml"):
        (moved / f).write_bytes((tmp_path / f).read_bytes())
    bake.plan(moved / "r.yaml")
    assert sorted(p.name for p in (tmp_path / "cache" / "learned").glob("*.safetensors")) == cached
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("pooling: mean", "poolng: mean"))
    with pytest.raises(bake.BakeError, match=r"interventions\[0\]\.alphas\.learn: unknown option\(s\) poolng"):
        bake.plan(bad)


def test_recipe_imports_a_control_vector_inline(model, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    v = torch.randn(32)
    imports.write_control_vector(tmp_path / "cv.gguf", {2: v})
    report = bake.apply({"model": str(model), "verify": {"generate_tokens": 2},
                         "interventions": [{"kind": "steer", "layers": [2], "scale": 1.5,
                                            "vector": {"learn": {"from_gguf": str(tmp_path / "cv.gguf")}}}]},
                        output=tmp_path / "o", progress=False)
    assert report["verification"]["status"] == "passed"
    tensors = {}
    for f in (tmp_path / "o").glob("*.safetensors"):  # the tiny llama is sharded
        tensors.update(load_file(str(f)))
    assert torch.allclose(tensors["model.layers.2.mlp.down_proj.bias"], 1.5 * v)


def test_dataset_ids_go_through_datasets(tmp_path, monkeypatch):
    """A Hub dataset id takes the `datasets` path; tested on a local dataset folder, offline."""
    from bake.learn import data
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = tmp_path / "toxic-sample"
    folder.mkdir()
    rows = [{"comment_text": t, "toxic": i % 2} for i, t in enumerate(CORPUS)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = data.load(str(folder), layout="jigsaw", need_labels=True)
    assert ds.texts == CORPUS and ds.labels == [i % 2 for i in range(len(CORPUS))]
    assert data.load(f"{folder}:train", layout="jigsaw").texts == CORPUS
    with pytest.raises(bake.BakeError, match="cannot load from the Hub"):
        data.load("acme/no-such-dataset")
