"""bake never loses a user's file, never runs code unasked, never publishes a tampered or failed bake,
and answers bad input with one line and exit code 2 (issue 9).

The first five sections are the five serious defects of the hostile-user report, each through the
CLI in a fresh process as a user would meet it. The rest covers the classes of failure: tracebacks,
silent YAML acceptance, signals, a real full disk, push.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import bake
import bake.write.rewrite
from bake.errors import BakeError
from bake.write import integrity
from bake.files import staging
from fuzzing import cli
from tiny import COMMON, add_tokenizer, build

REPO = Path(__file__).resolve().parents[1]
D = COMMON["hidden_size"]


def start_bake(recipe: Path, out: Path) -> subprocess.Popen:
    """`bake apply recipe -o out` in a fresh process, returned once its temp folder exists (mid-bake)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bake", "apply", str(recipe), "-o", str(out), "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = out.parent / f".{out.name}{staging.TMP_TAG}{proc.pid}"
    deadline = time.monotonic() + 120
    while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert tmp.exists(), "the bake ended before its temp folder was seen"
    return proc


def digest(folder: Path) -> dict[str, str]:
    """Every file (hidden ones too) and symlink under `folder`, with its content's sha256."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def clean_error(p: subprocess.CompletedProcess, code: int = 2, *fragments: str) -> str:
    """Exit `code`, no traceback, and the error names every fragment."""
    err = p.stderr
    assert p.returncode == code, f"rc {p.returncode}\nstdout:\n{p.stdout[-2000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in p.stdout, err[-3000:]
    assert "internal error" not in err, err[-2000:]
    for f in fragments:
        assert f in err, f"{f!r} not in:\n{err[-2000:]}"
    return err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return add_tokenizer(build("llama", tmp_path_factory.mktemp("m") / "llama"))


@pytest.fixture(scope="module")
def vec(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("v")
    torch.save(torch.randn(D, generator=torch.Generator().manual_seed(3)), d / "v.pt")
    return d / "v.pt"


def recipe_dict(model: Path, vec: Path, **extra) -> dict:
    return {"model": str(model), "verify": {"generate_tokens": 2},
            "interventions": [{"kind": "steer", "layers": [1], "vector": str(vec), "scale": 2.0}], **extra}


@pytest.fixture(scope="module")
def baked(tmp_path_factory, model, vec) -> Path:
    """A folder written by `bake apply` (shared: tests that change it work on a copy)."""
    out = tmp_path_factory.mktemp("b") / "baked"
    bake.apply(recipe_dict(model, vec), output=out, progress=False)
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / folder.name
    shutil.copytree(folder, dest, symlinks=True)
    return dest


# --- 1. --force replaces only what bake wrote --------------------------------------------------


def test_force_never_deletes_the_recipe_folder_or_its_parent(tmp_path, model, vec):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(vec, proj / "v.pt")
    (proj / "notes.txt").write_text("a week of work")
    (proj / "recipe.yaml").write_text(yaml.safe_dump({**recipe_dict(model, proj / "v.pt"),
                                                      "interventions": [{"kind": "steer", "layers": [1],
                                                                         "vector": "v.pt"}]}))
    before = digest(tmp_path)
    for out in (".", ".."):
        p = cli("apply", "recipe.yaml", "-o", out, "--force", "-q", cwd=proj)
        clean_error(p, 2, "an input of this run")
    assert digest(tmp_path) == before


def test_force_refuses_a_folder_bake_did_not_write(tmp_path, model, vec):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    before = digest(mine)
    err = clean_error(cli("apply", _recipe_file(tmp_path, model, vec), "-o", mine, "--force", "-q"), 2,
                      "was not written by bake")
    assert "remove it yourself" in err
    assert digest(mine) == before


def test_force_replaces_an_earlier_bake(tmp_path, model, vec):
    out = tmp_path / "out"
    recipe = _recipe_file(tmp_path, model, vec)
    assert cli("apply", recipe, "-o", out, "-q").returncode == 0
    first = json.loads((out / "bake_report.json").read_text())
    clean_error(cli("apply", recipe, "-o", out, "-q"), 2, "exists and is not empty", "--force")
    p = cli("apply", recipe, "-o", out, "--force", "-q")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "bake_report.json").read_text())["files"] == first["files"]  # reproducible output
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith(".")) == []  # no temp, no lock left


def _recipe_file(tmp_path: Path, model: Path, vec: Path) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(recipe_dict(model, vec)))
    return p


# --- 2. exports never write over a file they did not write ---------------------------------------


def test_gguf_out_never_overwrites_the_model_or_other_files(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    other = tmp_path / "mine.gguf"
    other.write_bytes(b"GGUF not mine")
    (tmp_path / "dir.gguf").mkdir()
    before = digest(tmp_path)
    for target in (sorted(folder.glob("*.safetensors"))[0], folder / "config.json", other):
        # without --force as with it, the refusal names the reason at once (issue 28: the right fix the first time)
        clean_error(cli("export", "gguf", folder, "--out", target, "-q"), 2, "was not written by bake")
        clean_error(cli("export", "gguf", folder, "--out", target, "--force", "-q"), 2, "was not written by bake")
    clean_error(cli("export", "gguf", folder, "--out", folder, "--force", "-q"), 2, "an input of this run")
    clean_error(cli("export", "gguf", folder, "--out", tmp_path / "dir.gguf", "--force", "-q"), 2, "is a folder")
    assert digest(tmp_path) == before


def test_gguf_replaces_its_own_export_only_with_force(tmp_path, vec):
    src = add_tokenizer(build("llama", tmp_path / "src"), byte_level=True)  # what GGUF conversion writes
    folder = tmp_path / "baked"
    bake.apply(recipe_dict(src, vec), output=folder, progress=False)
    out = tmp_path / "x.gguf"
    r = bake.export(folder, "gguf", out=out, gguf_type="q8_0", progress=False)
    assert r["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    with pytest.raises(BakeError, match="exists; pass --force"):
        bake.export(folder, "gguf", out=out, gguf_type="q8_0", progress=False)
    bake.export(folder, "gguf", out=out, gguf_type="q8_0", progress=False, force=True)  # its own: replaced
    out.write_bytes(out.read_bytes()[:-1] + b"\0")  # changed by someone since: not bake's any more
    with pytest.raises(BakeError, match="changed since bake exported it"):
        bake.export(folder, "gguf", out=out, gguf_type="q8_0", progress=False, force=True)


def test_onnx_out_needs_force_and_a_bake_folder(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bake_export.json").write_text("{}")  # looks like an export, but bake did not write it here
    for force in (False, True):
        with pytest.raises(BakeError, match="exists|not written by bake"):
            bake.export(folder, "onnx", out=mine, progress=False, force=force)
    assert sorted(p.name for p in mine.iterdir()) == ["bake_export.json"]


# --- 3. no code from a checkpoint runs unless the command line says so ----------------------------


EVIL = "import pathlib\npathlib.Path({sentinel!r}).write_text('ran')\n"


def _arm(folder: Path, sentinel: Path) -> None:
    """Make a baked folder ship code (as a malicious Hub upload would) and keep its manifest consistent."""
    (folder / "configuration_evil.py").write_text(EVIL.format(sentinel=str(sentinel)) +
                                                  "from transformers import LlamaConfig\nclass EvilConfig(LlamaConfig):\n    pass\n")
    (folder / "modeling_evil.py").write_text(EVIL.format(sentinel=str(sentinel)) +
                                             "from transformers import LlamaForCausalLM\nclass EvilModel(LlamaForCausalLM):\n    pass\n")
    (folder / "tokenization_evil.py").write_text(EVIL.format(sentinel=str(sentinel)) +
                                                 "from transformers import PreTrainedTokenizerFast\n"
                                                 "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    tcfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg))
    text = (folder / "recipe.yaml").read_text().replace("\nmodel:", "\ntrust_remote_code: true\nmodel:", 1)
    (folder / "recipe.yaml").write_text(text)
    report = json.loads((folder / "bake_report.json").read_text())
    report["files"] = integrity.manifest(folder)
    (folder / "bake_report.json").write_text(json.dumps(report))


def test_verify_never_runs_code_shipped_in_the_folder(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    sentinel = tmp_path / "pwned"
    _arm(folder, sentinel)
    p = cli("verify", folder, "-q", stdin="y\ny\ny\n")  # a prompt, if any, would be answered yes
    assert not sentinel.exists(), "code shipped in the folder ran"
    assert "[y/N]" not in p.stdout + p.stderr
    clean_error(p, 2, "trust_remote_code cannot be set in a recipe", "--trust-remote-code")


def test_loads_pass_trust_explicitly_and_never_prompt(tmp_path, baked):
    """With the recipe clean, the folder's auto_map still runs nothing: stock classes load it, and
    a tokenizer that exists only as shipped code is refused (never a prompt)."""
    folder = copy_of(baked, tmp_path)
    sentinel = tmp_path / "pwned"
    _arm(folder, sentinel)
    (folder / "recipe.yaml").write_text((folder / "recipe.yaml").read_text().replace("trust_remote_code: true\n", ""))
    report = json.loads((folder / "bake_report.json").read_text())
    report["files"] = integrity.manifest(folder)
    (folder / "bake_report.json").write_text(json.dumps(report))
    p = cli("verify", folder, "-q", stdin="y\ny\ny\n")
    assert not sentinel.exists(), "code shipped in the folder ran"
    assert "[y/N]" not in p.stdout + p.stderr
    assert p.returncode in (0, 2) and "Traceback" not in p.stderr, p.stderr[-3000:]
    if p.returncode == 2:
        assert "--trust-remote-code" in p.stderr


# --- 4. integrity: verify and push see every changed file ---------------------------------------


def test_verify_and_push_name_a_changed_file(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    shard = sorted(folder.glob("*.safetensors"))[0]
    tensors = load_file(str(shard))
    name = next(k for k in tensors if "embed_tokens" in k) if any("embed_tokens" in k for k in tensors) else next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[-1] += 1.0  # one value the probe prompts may never reach
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (folder / "notes.txt").write_text("added")
    p = cli("verify", folder, "-q")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"changed: {shard.name}" in p.stderr and "added: notes.txt" in p.stderr
    clean_error(cli("push", folder, "--repo-id", "me/x", "--dry-run"), 2, shard.name, "files differ from what bake wrote")


def test_verify_reports_an_intact_folder(baked):
    res = bake.verify(baked, progress=False)
    assert res["integrity"]["status"] == "intact" and res["integrity"]["files"] >= 4
    assert set(json.loads((baked / "bake_report.json").read_text())["files"]) >= {"config.json", "recipe.yaml"}


# --- 5. two runs to one output cannot race ------------------------------------------------------


def test_second_bake_to_the_same_output_is_refused_while_the_first_runs(tmp_path, model, vec):
    recipe = _recipe_file(tmp_path, model, vec)
    out = tmp_path / "out"
    first = start_bake(recipe, out)
    os.kill(first.pid, signal.SIGSTOP)  # held mid-bake (lock taken), however fast a tiny bake is
    try:
        second = cli("apply", recipe, "-o", out, "--force", "-q")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    clean_error(second, 2, f"another bake (pid {first.pid}) is writing")
    out_, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert (out / "bake_report.json").is_file()


def test_a_folder_created_at_the_output_meanwhile_is_left_alone(tmp_path, model, vec, monkeypatch):
    out = tmp_path / "out"
    real = bake.write.rewrite.save_shard

    def save_and_meddle(tensors, path):
        real(tensors, path)
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("created by another program during the bake")

    monkeypatch.setattr(bake.write.rewrite, "save_shard", save_and_meddle)
    for force in (False, True):
        shutil.rmtree(out, ignore_errors=True)
        with pytest.raises(BakeError, match="created or changed by another program"):
            bake.apply(recipe_dict(model, vec), output=out, progress=False, force=force)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_file_added_to_an_earlier_bake_meanwhile_is_not_lost(tmp_path, model, vec, monkeypatch):
    out = tmp_path / "out"
    bake.apply(recipe_dict(model, vec), output=out, progress=False)
    real = bake.write.rewrite.save_shard

    def save_and_add(tensors, path):
        real(tensors, path)
        (out / "notes.txt").write_text("written into the old output while the --force bake ran")

    monkeypatch.setattr(bake.write.rewrite, "save_shard", save_and_add)
    with pytest.raises(BakeError, match="created or changed by another program"):
        bake.apply(recipe_dict(model, vec), output=out, progress=False, force=True)
    assert (out / "notes.txt").is_file() and (out / "bake_report.json").is_file()


# --- tracebacks instead of errors: each input gets one line and exit 2 ----------------------------


def _broken_model(tmp_path: Path, model: Path, how: str) -> Path:
    m = tmp_path / "model"
    shutil.copytree(model, m)
    shards = sorted(m.glob("*.safetensors"))
    index = m / "model.safetensors.index.json"
    if how == "config-not-json":
        (m / "config.json").write_text("{ not json")
    elif how == "config-not-object":
        (m / "config.json").write_text("[1, 2]")
    elif how == "config-no-model-type":
        cfg = json.loads((m / "config.json").read_text())
        del cfg["model_type"]
        (m / "config.json").write_text(json.dumps(cfg))
    elif how == "shard-missing":
        shards[-1].unlink()
    elif how == "shard-truncated":
        shards[0].write_bytes(shards[0].read_bytes()[:-100])
    elif how == "shard-garbage":
        shards[0].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{{{{{{{{{{{{{{{{")
    elif how == "index-not-json":
        index.write_text("nope")
    elif how == "index-wrong-entry":
        data = json.loads(index.read_text())
        key = next(iter(data["weight_map"]))
        data["weight_map"][key] = next(s.name for s in shards if s.name != data["weight_map"][key])
        index.write_text(json.dumps(data))
    elif how == "index-escapes":
        data = json.loads(index.read_text())
        data["weight_map"][next(iter(data["weight_map"]))] = "../../etc/passwd"
        index.write_text(json.dumps(data))
    elif how == "tokenizer-corrupt":
        (m / "tokenizer.json").write_text('{"version": "1.0", "model": 12}')
    return m


@pytest.mark.parametrize("how", ["config-not-json", "config-not-object", "config-no-model-type", "shard-missing",
                                 "shard-truncated", "shard-garbage", "index-not-json", "index-wrong-entry",
                                 "index-escapes", "tokenizer-corrupt"])
def test_corrupt_models_get_one_line(tmp_path, model, vec, how):
    m = _broken_model(tmp_path, model, how)
    before = digest(m)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(m, vec)))
    out = tmp_path / "out"
    err = clean_error(cli("apply", recipe, "-o", out, "-q"), 2)
    assert err.startswith("bake: error:") and len(err.strip().splitlines()) <= 3, err
    assert digest(m) == before and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("how", ["loop", "parent-is-file", "unwritable"])
def test_bad_output_paths_get_one_line(tmp_path, model, vec, how):
    recipe = _recipe_file(tmp_path, model, vec)
    if how == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        out, frag = tmp_path / "a" / "out", "symlink loop"
    elif how == "parent-is-file":
        (tmp_path / "f").write_text("x")
        out, frag = tmp_path / "f" / "out", "is not a folder"
    else:
        out, frag = Path("/proc/self/bake-out/out"), "cannot"
    clean_error(cli("apply", recipe, "-o", out, "-q"), 2, frag)


def test_overflow_names_the_tensor(tmp_path, model, vec):
    r = recipe_dict(model, vec, dtype="float16")
    r["interventions"][0]["scale"] = 1e6
    with pytest.raises(BakeError, match=r"model\.layers\.1\.mlp\.down_proj\.bias: the folded tensor has values up to"):
        bake.apply(r, output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupt_report_gets_one_line(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    (folder / "bake_report.json").write_text("{ truncated")
    for args in (("verify", folder), ("push", folder, "--repo-id", "me/x", "--dry-run"), ("export", "gguf", folder)):
        clean_error(cli(*args, "-q"), 2, "corrupt report")


def test_malicious_and_malformed_vector_files(tmp_path, model):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(sentinel)!r}, 'w').write('ran')",))

    torch.save({"layer_activations": {1: Evil()}}, tmp_path / "evil.pt")
    clean_error(cli("learn", "steer", "--model", model, "--from-steering-vectors", tmp_path / "evil.pt",
                    "--out", tmp_path / "v.safetensors", "-q"), 2, "cannot read it")
    assert not sentinel.exists()

    from gguf import GGUFWriter

    from bake.artifacts.imports import write_control_vector

    write_control_vector(tmp_path / "wide.gguf", {1: torch.ones(D + 1)})
    clean_error(cli("learn", "steer", "--model", model, "--from-gguf", tmp_path / "wide.gguf",
                    "--out", tmp_path / "v.safetensors", "-q"), 2, "hidden size is 32")
    w = GGUFWriter(str(tmp_path / "zero.gguf"), "controlvector")  # what write_control_vector refuses to write
    w.add_tensor("direction.0", torch.ones(D).numpy())
    w.add_tensor("direction.1", torch.ones(D).numpy())
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    clean_error(cli("learn", "steer", "--model", model, "--from-gguf", tmp_path / "zero.gguf",
                    "--out", tmp_path / "v.safetensors", "-q"), 2, "direction.0")
    assert not (tmp_path / "v.safetensors").exists()


# --- YAML that used to be accepted silently ---------------------------------------------------------


@pytest.mark.parametrize("text,fragment", [
    ("model: {m}\ninterventions: []\ninterventions:\n  - {{kind: steer, layers: [1], vector: {v}}}\n", "duplicate key"),
    ("model: {m}\ninterventions:\n  - {{kind: steer, layers: [yes], vector: {v}}}\n", "layers[0]"),
    ("model: {m}\ninterventions:\n  - {{kind: steer, layers: [true], vector: {v}}}\n", "layers[0]"),
    ("model: {m}\ninterventions:\n  - {{kind: steer, layers: [1], vector: {v}, scale: on}}\n", "scale"),
    ("model: {m}\ninterventions:\n  - {{kind: steer, layers: [1:30], vector: {v}}}\n", "layers[0]"),
    ("model: {m}\na: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
     "expands to more than"),
])
def test_yaml_that_was_silently_accepted(tmp_path, model, vec, text, fragment):
    p = tmp_path / "recipe.yaml"
    p.write_text(text.format(m=model, v=vec))
    clean_error(cli("plan", p, "-q"), 2, fragment)


# --- signals: SIGINT, SIGTERM and SIGHUP clean up and say so ----------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGINT])
def test_signals_mid_bake_clean_up_without_traceback(tmp_path, model, vec, sig):
    recipe = _recipe_file(tmp_path, model, vec)
    out = tmp_path / "out"
    proc = start_bake(recipe, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err, err[-2000:]
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_sigint_while_starting_up_gives_no_traceback(tmp_path, model, vec, delay):
    """Ctrl-C while torch and transformers are still importing. bake installs its handlers on its first
    line (`bake/__main__.py`), before the CLI and torch load; a signal that lands earlier still, while
    the interpreter itself starts and runpy imports the package, meets Python's own handler (a
    KeyboardInterrupt from runpy's frames, no bake code on the stack), which bake cannot reach."""
    recipe = _recipe_file(tmp_path, model, vec)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bake", "apply", str(recipe), "-o", str(tmp_path / "out"), "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 130:
        assert "Traceback" not in err and "stopped by SIGINT" in err, err[-3000:]
    else:  # interrupted before bake's first line (-2, or 1 inside site's start-up): none of bake's frames
        assert proc.returncode in (-signal.SIGINT, 1), err[-3000:]
        assert str(REPO / "bake") not in err, err[-3000:]


# --- a real full disk --------------------------------------------------------------------------------


def test_real_disk_full(tmp_path, model, vec):
    """A 200 KiB tmpfs (in a private mount namespace) fills up while the shards are written: the real
    safetensors writer's own exception type, with the OS error inside it."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a private tmpfs")
    recipe = _recipe_file(tmp_path, model, vec)
    small = tmp_path / "small"
    small.mkdir()
    userns = [] if os.geteuid() == 0 else ["-r"]
    probe = subprocess.run(["unshare", *userns, "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {small}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    script = (f"mount -t tmpfs -o size={size // 1024 + 1}k tmpfs {small} && "
              f"{sys.executable} -m bake apply {recipe} -o {small}/out -q; echo rc=$?; ls -A {small}")
    p = subprocess.run(["unshare", *userns, "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
    assert "rc=2" in p.stdout, p.stdout + p.stderr[-3000:]
    assert "no space left on device" in p.stderr or "not enough space" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert p.stdout.strip().splitlines()[-1] == "rc=2"  # `ls -A` printed nothing: no output, no temp, no lock


def test_disk_full_from_the_safetensors_writer_in_process(tmp_path, model, vec, monkeypatch):
    """The exception type safetensors raises (not an OSError) maps to the full-disk error."""
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(bake.write.rewrite, "save_file", full)
    with pytest.raises(BakeError, match="no space left on device"):
        bake.apply(recipe_dict(model, vec), output=tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


# --- push --------------------------------------------------------------------------------------------


def test_push_checks_repo_id_even_in_dry_run(baked):
    for repo in ("a/b/c", "bad name", "x" * 200, "-start/x", "a/b--c"):
        clean_error(cli("push", baked, f"--repo-id={repo}", "--dry-run"), 2, "not a valid Hub repo id")


def test_push_refuses_symlinks_out_of_the_folder(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (folder / "extra.txt").symlink_to(secret)
    clean_error(cli("push", folder, "--repo-id", "me/x", "--dry-run", "--force"), 2, "extra.txt is a symlink")


def test_failed_push_leaves_the_card_alone(tmp_path, baked):
    folder = copy_of(baked, tmp_path)
    (folder / "README.md").write_text("my own edits to the card")
    p = cli("push", folder, "--repo-id", "me/x", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_x",
                                                   "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}, timeout=300)
    clean_error(p, 2, "push to me/x failed")
    assert (folder / "README.md").read_text() == "my own edits to the card"


def test_learn_out_needs_force_and_never_replaces_an_input(tmp_path, model):
    from bake.artifacts.imports import write_control_vector

    write_control_vector(tmp_path / "cv.gguf", {1: torch.ones(D)})
    out = tmp_path / "v.safetensors"
    out.write_text("my file")
    args = ("learn", "steer", "--model", model, "--from-gguf", tmp_path / "cv.gguf", "-q")
    clean_error(cli(*args, "--out", out), 2, "was not written by bake learn steer")  # --force would not help
    assert out.read_text() == "my file"
    clean_error(cli(*args, "--out", tmp_path / "cv.gguf", "--force"), 2, "an input of this run")
    # --force replaces only what `bake learn steer` wrote (issue 27): never the user's own file
    clean_error(cli(*args, "--out", out, "--force"), 2, "was not written by bake learn steer")
    assert out.read_text() == "my file"
    out = tmp_path / "v2.safetensors"
    assert cli(*args, "--out", out).returncode == 0
    p = cli(*args, "--out", out, "--force")
    assert p.returncode == 0, p.stderr[-2000:]
    assert load_file(str(out))["vector"].shape == (COMMON["num_hidden_layers"], D)
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == []
