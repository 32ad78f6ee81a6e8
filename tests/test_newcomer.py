"""A CLI a newcomer trusts (issue 28, item 7): the friction points met by a new user, each through
the CLI as the issue gives it."""

from __future__ import annotations

import pytest
import torch

import bake
from bake.cli import main
from bake.cli.render import format_plan
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


def _texts(ws, name, lines):
    path = ws / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_vector_that_is_zero_at_the_chosen_layer_is_refused_by_name(ws, capsys):
    """Learned with --layers 1 and used at layers [0]: the row is zero, and the bake would be a no-op."""
    pos = _texts(ws, "pos.txt", ["you are a lovely person", "thank you so much", "what a wonderful day"])
    neg = _texts(ws, "neg.txt", ["I hate you, you idiot", "this is stupid and ugly", "Sorry, I can't"])
    vec = ws / "learned-1.safetensors"
    assert main(["learn", "steer", "--model", str(ws / "model"), "--positive", pos, "--negative", neg,
                 "--layers", "1", "--out", str(vec), "-q"]) == 0
    recipe = {"model": str(ws / "model"), "interventions": [{"kind": "steer", "layers": [0], "vector": str(vec)}]}
    with pytest.raises(bake.BakeError, match=r"zero at layer\(s\) \[0\] \(it was learned at blocks 1\)"):
        bake.plan(recipe, progress=False)
    bake.plan({**recipe, "interventions": [{**recipe["interventions"][0], "layers": [1]}]}, progress=False)  # fine


def test_learn_steer_learns_at_the_attention_site_and_a_vector_is_used_where_it_was_learned(ws):
    """`bake learn steer --site attn_out` learns on the stream right after the attention write (checked
    against an independent computation: the block's input plus its o_proj output), and a recipe that
    adds it at another site is refused instead of silently steering elsewhere."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pos = ["you are a lovely person", "thank you so much"]
    neg = ["I hate you, you idiot", "this is stupid and ugly"]
    out = ws / "attn.safetensors"
    assert main(["learn", "steer", "--model", str(ws / "model"), "--positive", _texts(ws, "p2.txt", pos),
                 "--negative", _texts(ws, "n2.txt", neg), "--layers", "1", "--site", "attn_out", "--out", str(out),
                 "-q"]) == 0
    v = load_file(str(out))["vector"].double()[1]
    model = AutoModelForCausalLM.from_pretrained(str(ws / "model"), dtype=torch.float64).eval()
    tok = AutoTokenizer.from_pretrained(str(ws / "model"))
    got = {}
    model.model.layers[1].self_attn.o_proj.register_forward_hook(lambda m, a, o: got.__setitem__("o", o))

    def state(text):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[1]  # block 1's input
        return (h + got["o"])[0, -1]

    ref = torch.stack([state(t) for t in pos]).mean(0) - torch.stack([state(t) for t in neg]).mean(0)
    assert torch.allclose(v, ref.float().double(), rtol=1e-4, atol=1e-5), (v - ref).abs().max()
    block = ws / "block.safetensors"
    assert main(["learn", "steer", "--model", str(ws / "model"), "--positive", _texts(ws, "p2.txt", pos),
                 "--negative", _texts(ws, "n2.txt", neg), "--layers", "1", "--out", str(block), "-q"]) == 0
    assert not torch.allclose(load_file(str(block))["vector"][1].double(), v)  # a different place in the block
    recipe = {"model": str(ws / "model"), "interventions": [{"kind": "steer", "layers": [1], "vector": str(out)}]}
    with pytest.raises(bake.BakeError, match=r"learned on the residual stream at site attn_out.*adds it at site "
                       r"block_out.*set `site: attn_out`"):
        bake.plan(recipe, progress=False)


def test_recipe_files_are_checked_before_the_family_probe(ws, monkeypatch, tmp_path):
    """A missing vector (with the near name it meant) and a vector of the wrong length are refused from
    the recipe, its files and config.json alone: the family probe never runs."""
    from bake.families import adapter

    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    adapter._derive.cache_clear()

    def no_probe(*a, **k):
        raise AssertionError("the family was probed before the recipe's files were checked")

    monkeypatch.setattr(adapter.probemod, "derive", no_probe)
    recipe = {"model": str(ws / "model"), "interventions": [{"kind": "steer", "layers": [1], "vector": str(ws / "v.ptt")}]}
    with pytest.raises(bake.BakeError, match=r"interventions\[0\]\.vector: no such file .*v\.ptt \(did you mean .*v\.pt'\?\)"):
        bake.plan(recipe, progress=False)
    torch.save(torch.zeros(D + 1), tmp_path / "long.pt")
    recipe["interventions"][0]["vector"] = str(tmp_path / "long.pt")
    with pytest.raises(bake.BakeError, match=rf"vector: shape \[{D + 1}\]; expected \[{D}\]"):
        bake.plan(recipe, progress=False)
    adapter._derive.cache_clear()


def test_the_family_probe_is_derived_once_and_cached_on_disk(ws, monkeypatch, tmp_path):
    """The adapter's probe is kept in bake's cache (keyed by the config, transformers, bake and the probe's
    code): a second process plans without building or probing the tiny model."""
    import time

    from bake.families import adapter

    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    recipe = {"model": str(ws / "model"), "interventions": [{"kind": "steer", "layers": [1], "vector": str(ws / "v.pt")}]}
    adapter._derive.cache_clear()
    t0 = time.perf_counter()
    first = bake.plan(recipe, progress=False)
    cold = time.perf_counter() - t0
    entries = list((tmp_path / "cache" / "families").glob("llama-*.json"))
    assert len(entries) == 1, entries
    adapter._derive.cache_clear()  # as a new process would start

    def no_probe(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(adapter.probemod, "derive", no_probe)
    t0 = time.perf_counter()
    second = bake.plan(recipe, progress=False)
    warm = time.perf_counter() - t0
    assert bake.api.plan_summary(first) == bake.api.plan_summary(second)
    assert warm < cold, (warm, cold)
    entries[0].write_text(entries[0].read_text()[:-20])  # a damaged entry is not read: probed again
    adapter._derive.cache_clear()
    with pytest.raises(bake.BakeError, match="probed again"):  # (bake wraps a failing probe in its own error)
        bake.plan(recipe, progress=False)
    adapter._derive.cache_clear()


def test_an_unknown_key_gets_a_did_you_mean(ws, capsys):
    bad = ws / "typo.yaml"
    bad.write_text(f"model: {ws / 'model'}\ninterventions:\n  - kind: steer\n    layers: [1]\n"
                   f"    vector: {ws / 'v.pt'}\n    scael: 2\n")
    assert main(["plan", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "scael: unknown key (did you mean 'scale'?)" in err, err


def test_plan_counts_what_the_tensor_edits_do_and_hooks_by_intervention(ws):
    """One steering vector on tied Llama: one bias changed; the rest are created zero biases (the
    mlp_bias flag creates gate/up/down biases in every block), not '90 tensor edits'."""
    from bake.cli.render import edit_counts

    recipe = {"model": str(ws / "model"),
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(ws / "v.pt"), "scale": 2.0}]}
    p = bake.plan(recipe, progress=False)
    summary = bake.api.plan_summary(p)
    text = edit_counts(summary["edits"])
    changed = sum(bool(e["ops"]) for e in summary["edits"])
    assert text.startswith(f"{changed} tensor changed, ") and "zero biases created" in text, text
    assert changed == 1
    assert p.hook_count() == "1 intervention as 1 module hook"


def _subparsers(p):
    import argparse

    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield name, sp
                for sub, ssp in _subparsers(sp):
                    yield f"{name} {sub}", ssp


def test_every_argument_has_help_and_every_command_examples_that_parse():
    """`bake CMD --help` describes every positional and option, shows defaults, and ends with examples,
    each of which the parser accepts (so they cannot rot)."""
    import argparse
    import shlex

    from bake.cli import parser
    from bake.cli.base import COMMANDS

    p = parser()
    names = []
    for name, sp in _subparsers(p):
        names.append(name)
        for a in sp._actions:
            if a.dest != "help" and not isinstance(a, argparse._SubParsersAction):
                assert a.help, f"bake {name}: {a.option_strings or a.dest} has no help"
        text = sp.format_help()
        assert "examples:" in text or name == "learn", f"bake {name} --help shows no example"
        for line in text.split("examples:")[-1].strip().splitlines() if "examples:" in text else ():
            argv = shlex.split(line.strip())
            assert argv[0] == "bake", line
            parser().parse_args(argv[1:])
    assert set(COMMANDS) <= set(names) and {"learn aura", "learn steer", "learn refusal", "learn sae"} <= set(names)
    steer = " ".join(dict(_subparsers(p))["learn steer"].format_help().split())
    assert "learned on the residual stream there (default: block_out)" in steer, steer


def test_one_name_per_concept():
    """--out for every output (apply's too), the Hub's repo id as --repo-id, verify's folder as FOLDER."""
    from bake.cli import parser

    p = parser()
    assert p.parse_args(["apply", "r.yaml", "--out", "o"]).out == "o"
    assert p.parse_args(["apply", "r.yaml", "--push-to-hub", "me/x"]).push_to_hub == "me/x"
    assert p.parse_args(["push", "f", "--repo-id", "me/x"]).repo_id == "me/x"
    assert p.parse_args(["verify", "f"]).folder == "f"
    for argv in (["apply", "r.yaml", "--output", "o"], ["export", "onnx", "f", "--output", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)


def test_a_learner_declares_its_options_once():
    """`bake learn WHAT --option`, the API's keyword arguments and a recipe's `{learn: {...}}` keys are all
    the learner's signature: the CLI's options and defaults are read off it."""
    import inspect

    from bake.cli import parser
    from bake.learn import learners

    subs = dict(_subparsers(parser()))
    for what, fname in learners.LEARNERS.items():
        fn = getattr(learners, fname)
        opts = {o.name: o for o in learners.options(fn)}
        cli = {a.dest: a for a in subs[f"learn {what}"]._actions if a.option_strings}
        own = set(cli) - {"help", "force", "json", "quiet", "progress", "trust_remote_code", "device"}
        assert own == set(opts), (what, own ^ set(opts))
        for name, o in opts.items():
            default = inspect.signature(fn).parameters[name].default
            if default is not inspect.Parameter.empty and o.type is not bool:
                assert cli[name].default == (list(default) if isinstance(default, tuple) else default), name
            assert cli[name].help.replace("%%", "%") == o.opt.help


ABSOLUTE = r"(?:^|[\s'\"(`=:,\[])(/[^\s'\"`)]+)"  # a path from the root (a URL's // is not one)


def test_a_baked_folder_stands_alone_copied_elsewhere(ws, tmp_path):
    """The artifacts a recipe used are copied into the folder (sha256 in the manifest), its recipe and card
    name no absolute path, and a copy of the folder, with the original vector gone, passes `bake verify`
    (the local model named with --model, as on another machine)."""
    import re
    import shutil

    import yaml

    vec = tmp_path / "elsewhere" / "v.pt"
    vec.parent.mkdir()
    shutil.copyfile(ws / "v.pt", vec)
    recipe = {"model": str(ws / "model"), "verify": {"generate_tokens": 2},
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(vec), "scale": 2.0}]}
    rep = bake.apply(recipe, output=tmp_path / "baked", progress=False)
    assert "artifacts/v.pt" in rep["files"]
    for name in ("recipe.yaml", "README.md"):
        text = (tmp_path / "baked" / name).read_text()
        assert not re.findall(ABSOLUTE, text, re.M), (name, re.findall(ABSOLUTE, text, re.M)[:5])
    written = yaml.safe_load((tmp_path / "baked" / "recipe.yaml").read_text())
    assert written["interventions"][0]["vector"] == "artifacts/v.pt"
    assert "approximate" in written["interventions"][0] and "mu" not in str(written)  # null keys left out
    assert written["provenance"]["artifacts"]["artifacts/v.pt"]["role"] == "steering vector"
    copy = tmp_path / "download" / "baked"
    shutil.copytree(tmp_path / "baked", copy)
    vec.unlink()
    assert main(["verify", str(copy), "--model", str(ws / "model"), "-q"]) == 0
    (copy / "artifacts" / "v.pt").write_bytes(b"changed")
    assert main(["verify", str(copy), "--model", str(ws / "model"), "-q"]) == 1  # the manifest holds it


def test_verification_decodes_without_generate_and_says_what_it_checked(ws, tmp_path, monkeypatch, capsys):
    """The default verification no longer runs `model.generate` (two per-prompt loops with logits
    processors were most of a SmolLM2 bake): the hooked model decodes with its cache, the baked model
    follows teacher-forced; the output ends with what was checked and how to check more or less."""
    from transformers import GenerationMixin

    def refuse(*a, **k):
        raise AssertionError("model.generate ran during verification")

    monkeypatch.setattr(GenerationMixin, "generate", refuse)
    recipe = ws / "steer.yaml"
    recipe.write_text(f"model: {ws / 'model'}\nverify: {{generate_tokens: 4}}\ninterventions:\n"
                      f"  - {{kind: steer, layers: [1], vector: {ws / 'v.pt'}, scale: 2.0}}\n")
    assert main(["apply", str(recipe), "--out", str(tmp_path / "o"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "greedy tokens agree   100.00%" in out
    assert "checked               8 probe prompts teacher-forced, 4 greedy steps each" in out
    assert "less: --verify local" in out
