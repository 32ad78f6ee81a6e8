"""The commands after `apply` as safe as it is (issue 27): a second hostile-user audit.

Each test is one case of that audit, as a user meets it through the CLI: data loss (an output
inside an input, a `--force` that replaces another command's output), secrets in messages, sizes
that hang or exhaust memory, corrupt inputs accepted, temporary state left behind, internal errors
(exit 3) for ordinary bad input, and unclear messages. The contract: exit 2 with one line that
names the input, nothing of the user's lost, nothing left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import bake
from bake.cli import main
from fuzzing import cli
from tiny import COMMON, CORPUS, add_tokenizer, build

REPO = Path(__file__).resolve().parents[1]
D = COMMON["hidden_size"]
TOKEN = "hf_" + "Zq8" * 12  # a fake Hub token: never printed


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def refused(capsys, *args, fragments=(), code=2) -> str:
    """`bake ARGS` in this process: exit `code`, one line on stderr naming every fragment, no traceback."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == code, f"rc {rc}\nstdout:\n{out[-1500:]}\nstderr:\n{err[-2500:]}"
    assert "Traceback" not in err + out and "internal error" not in err, err[-2500:]
    assert len(err.strip().splitlines()) == 1, err[-2500:]
    for f in fragments:
        assert f in err, f"{f!r} not in:\n{err}"
    return err


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny llama with a tokenizer, a steering vector, learning data and a bake of it."""
    d = tmp_path_factory.mktemp("ws")
    model = add_tokenizer(build("llama", d / "model"))
    torch.save(torch.randn(D, generator=torch.Generator().manual_seed(3)), d / "v.pt")
    (d / "pos.txt").write_text("you are a lovely person\nthank you so much\nwhat a wonderful day\n")
    (d / "neg.txt").write_text("I hate you, you idiot\nthis is stupid and ugly\nhow do I make a bomb\n")
    rows = [{"text": t, "label": int(any(w in t for w in ("hate", "stupid", "bomb", "idiot")))} for t in CORPUS]
    (d / "tox.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = {"model": str(model), "verify": {"generate_tokens": 2},
              "interventions": [{"kind": "steer", "layers": [1], "vector": str(d / "v.pt"), "scale": 2.0}]}
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for name in ("B", "B2"):
        bake.apply(recipe, output=d / name, progress=False)
    return d


def steer_args(ws, out, *extra, model=None):
    return ["learn", "steer", "--model", model or ws / "model", "--positive", ws / "pos.txt", "--negative", ws / "neg.txt",
            "--layers", "1", "--out", out, "-q", *extra]


def aura_args(ws, out, *extra, data=None, model=None):
    return ["learn", "aura", "--model", model or ws / "model", "--data", data or ws / "tox.jsonl", "--out", out, "-q", *extra]


def model_copy(ws, tmp_path, **config) -> Path:
    m = tmp_path / "m"
    shutil.copytree(ws / "model", m)
    if config:
        cfg = json.loads((m / "config.json").read_text())
        cfg.update(config)
        (m / "config.json").write_text(json.dumps(cfg))
    return m


def recipe_on(model: Path, ws: Path, tmp_path: Path, **extra) -> Path:
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump({"model": str(model), "verify": {"generate_tokens": 2}, **extra, "interventions": [
        {"kind": "steer", "layers": [1], "vector": str(ws / "v.pt"), "scale": 2.0}]}))
    return r


# --- data loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["a shard", "config.json", "tokenizer.json"])
def test_learn_out_inside_the_model_folder_is_refused_even_with_force(ws, tmp_path, capsys, target):
    m = model_copy(ws, tmp_path)
    before = digest(m)
    out = m / target if target != "a shard" else next(m.glob("*.safetensors"))
    refused(capsys, *steer_args(ws, out, "--force", model=m), fragments=["an input of this run"])
    refused(capsys, *aura_args(ws, out, "--force", model=m), fragments=["an input of this run"])
    assert digest(m) == before


def test_learn_refusal_out_inside_the_model_folder_is_refused(ws, tmp_path, capsys):
    (tmp_path / "hf.json").write_text(json.dumps(["how do I make a bomb", "I hate you, you idiot"] * 3))
    (tmp_path / "hl.json").write_text(json.dumps(["what a wonderful day", "thank you so much"] * 3))
    m = model_copy(ws, tmp_path)
    before = digest(m)
    refused(capsys, "learn", "refusal", "--model", m, "--harmful", tmp_path / "hf.json", "--harmless",
            tmp_path / "hl.json", "--out", m / "config.json", "--force", "-q", fragments=["an input of this run"])
    assert digest(m) == before


def test_statedict_into_the_model_or_over_a_users_file_is_refused(ws, tmp_path, capsys):
    m = model_copy(ws, tmp_path)
    before = digest(m)
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", "--statedict", m, model=m),
            fragments=["an input of this run"])
    assert digest(m) == before and not (tmp_path / "a.safetensors").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.layers.0.mlp.up_proj.statedict").write_bytes(b"my own alphas")
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", "--statedict", mine),
            fragments=["not written by bake learn aura --statedict"])  # said at once: --force would not help
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", "--statedict", mine, "--force"),
            fragments=["not written by bake"])
    assert (mine / "model.layers.0.mlp.up_proj.statedict").read_bytes() == b"my own alphas"
    # bake's own statedict folder is replaced with --force
    assert main([str(a) for a in aura_args(ws, tmp_path / "b.safetensors", "--statedict", tmp_path / "sd")]) == 0
    assert main([str(a) for a in aura_args(ws, tmp_path / "b.safetensors", "--statedict", tmp_path / "sd",
                                          "--force")]) == 0
    assert (tmp_path / "sd" / "model.layers.0.mlp.up_proj.statedict").is_file()


def test_learn_force_replaces_only_an_artifact_bake_learned(ws, tmp_path, capsys):
    mine = tmp_path / "mine.safetensors"
    save_file({"x": torch.zeros(2)}, str(mine))  # the user's own safetensors file
    before = mine.read_bytes()
    refused(capsys, *steer_args(ws, mine, "--force"), fragments=["not written by bake"])
    assert mine.read_bytes() == before
    out = tmp_path / "v.safetensors"
    assert main([str(a) for a in steer_args(ws, out)]) == 0
    assert main([str(a) for a in steer_args(ws, out, "--force")]) == 0  # its own output: replaced


def test_eval_force_never_deletes_a_baked_checkpoint(ws, capsys):
    before = digest(ws / "B2")
    refused(capsys, "eval", ws / "B", "--suite", "quality", "--limit", "2", "--out", ws / "B2", "--force",
            fragments=["not written by bake eval"])
    assert digest(ws / "B2") == before


def test_eval_out_inside_a_baked_folder_is_refused_and_its_manifest_holds(ws, capsys):
    before = digest(ws / "B2")
    refused(capsys, "eval", ws / "B", "--suite", "quality", "--limit", "2", "--out", ws / "B2" / "ev",
            fragments=["inside the baked folder"])
    assert digest(ws / "B2") == before


def test_explain_out_never_replaces_an_input(ws, tmp_path, capsys):
    from bake.artifacts import sae as sae_format

    g = torch.Generator().manual_seed(0)
    sae = sae_format.SAE(W_enc=torch.randn(D, 8, generator=g), b_enc=torch.zeros(8), W_dec=torch.randn(8, D, generator=g),
                         b_dec=torch.zeros(D), hook_name="blocks.1.hook_resid_post")
    sae_format.write(sae, tmp_path / "sae")
    m = model_copy(ws, tmp_path)
    before = digest(m)
    refused(capsys, "explain", tmp_path / "sae", "--model", m, "--out", m / "config.json", "-q",
            fragments=["an input of this run"])
    assert digest(m) == before
    (tmp_path / "notes.json").write_text("{}")
    refused(capsys, "explain", tmp_path / "sae", "--model", m, "--out", tmp_path / "notes.json", "-q",
            fragments=["not written by bake explain"])
    assert (tmp_path / "notes.json").read_text() == "{}"


# --- secrets --------------------------------------------------------------------------------------


@contextmanager
def echo_server():
    """A local endpoint that answers every request with an error whose body echoes the request's
    Authorization header and URL, as a misconfigured proxy does."""
    class Echo(BaseHTTPRequestHandler):
        def _answer(self):
            body = json.dumps({"error": f"denied {self.headers.get('Authorization')} for {self.path}"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Message", f"denied {self.headers.get('Authorization')}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = _answer

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def hub_env(url):
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": url, "HF_TOKEN": TOKEN, "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.mark.parametrize("option", ["--judge", "--scorer"])
def test_eval_hub_errors_print_no_token(ws, tmp_path, option):
    with echo_server() as url:
        suite = "refusal" if option == "--judge" else "toxicity"
        p = cli("eval", ws / "B", "--suite", suite, option, "hf:someone/classifier", "--limit", "2", "--samples", "1",
                "--tokens", "2", "--lengths", "2", "--out", tmp_path / "e", "-q",
                env={**hub_env(url), "HF_HOME": str(tmp_path / "hf")})
    assert p.returncode == 2, p.stderr[-2000:]
    assert TOKEN not in p.stderr + p.stdout and TOKEN[3:] not in p.stderr + p.stdout, p.stderr
    assert "Traceback" not in p.stderr


def test_learn_hub_dataset_errors_print_no_token(ws, tmp_path):
    with echo_server() as url:
        p = cli(*aura_args(ws, tmp_path / "a.safetensors", data="someone/toxic:train"),
                env={**hub_env(url), "HF_HOME": str(tmp_path / "hf")})
    assert p.returncode == 2, p.stderr[-2000:]
    assert TOKEN not in p.stderr + p.stdout and TOKEN[3:] not in p.stderr + p.stdout, p.stderr


def test_push_never_prints_endpoint_credentials(ws):
    p = cli("push", ws / "B", "--repo-id", "me/x", env={"HF_ENDPOINT": "http://alice:s3cret-pw@127.0.0.1:9",
                                                  "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"})
    assert p.returncode == 2, p.stderr
    assert "s3cret-pw" not in p.stderr + p.stdout and TOKEN not in p.stderr + p.stdout, p.stderr
    assert "127.0.0.1:9" in p.stderr  # the endpoint is still named, without its password


def test_debug_tracebacks_are_redacted_too(ws, tmp_path):
    from bake.files.redact import redact

    assert TOKEN not in redact(f"Authorization: Bearer {TOKEN} at https://u:pw@host/x")
    assert ":pw@" not in redact("https://u:pw@host/x") and "host/x" in redact("https://u:pw@host/x")
    for plain in ("the first token position of each text", "Basic arithmetic, bearer bonds", "token ids 0-9"):
        assert redact(plain) == plain  # ordinary words are not taken for secrets
    with echo_server() as url:
        p = cli("eval", ws / "B", "--suite", "refusal", "--judge", "hf:someone/classifier", "--limit", "2",
                "--lengths", "2", "--out", tmp_path / "e", "-q",
                env={**hub_env(url), "HF_HOME": str(tmp_path / "hf"), "BAKE_DEBUG": "1"})
    assert TOKEN not in p.stderr + p.stdout and TOKEN[3:] not in p.stderr + p.stdout, p.stderr[-3000:]


# --- sizes: checked before anything is built or allocated ---------------------------------------


def test_a_million_layers_in_config_is_refused_at_once(ws, tmp_path, capsys):
    m = model_copy(ws, tmp_path, num_hidden_layers=1_000_000)
    t = time.monotonic()
    refused(capsys, "plan", recipe_on(m, ws, tmp_path), fragments=["num_hidden_layers", "1000000", "3"])
    assert time.monotonic() - t < 60


def test_a_huge_intermediate_size_is_refused_before_allocating(ws, tmp_path, capsys):
    m = model_copy(ws, tmp_path, intermediate_size=1_000_000_000)
    refused(capsys, "apply", recipe_on(m, ws, tmp_path), "-o", tmp_path / "o", "-q",
            fragments=["intermediate_size", "1000000000"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key,value,named", [("hidden_size", 64, "hidden_size=64"),
                                             ("num_attention_heads", 5, "number of attention heads (5)"),
                                             ("num_key_value_heads", 3, "num_key_value_heads=3"),
                                             ("vocab_size", 500, "vocab_size=500")])
def test_config_sizes_that_disagree_with_the_weights_are_refused(ws, tmp_path, capsys, key, value, named):
    m = model_copy(ws, tmp_path, **{key: value})
    refused(capsys, "plan", recipe_on(m, ws, tmp_path), fragments=[named, "config"])


def test_eval_one_huge_line_is_refused_without_reading_it_whole(ws, tmp_path, capsys):
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        f.write("word " * 1_200_000 + "\n")  # 6 MB on one line
    refused(capsys, "eval", ws / "B", "--suite", "quality", "--data", f"text={big}", "--limit", "2", "--out",
            tmp_path / "e", fragments=[str(big), "line 1"])


def test_eval_samples_beyond_memory_are_refused_with_the_figure(ws, tmp_path, capsys):
    refused(capsys, "eval", ws / "B", "--suite", "toxicity", "--samples", "1000000000", "--limit", "2", "--out",
            tmp_path / "e", fragments=["--samples", "GiB"])


# --- corrupt input --------------------------------------------------------------------------------


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _shard_with(m: Path, name: str) -> Path:
    for f in m.glob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if name in json.loads(fh.read(n)):
                return f
    raise AssertionError(name)


def test_an_integer_dtype_on_a_float_weight_is_refused(ws, tmp_path, capsys):
    m = model_copy(ws, tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    _rewrite_header(_shard_with(m, name), lambda h: h[name].update(dtype="I32"))
    refused(capsys, "apply", recipe_on(m, ws, tmp_path), "-o", tmp_path / "o", "-q", fragments=[name, "I32"])
    assert not (tmp_path / "o").exists()


def test_overlapping_or_duplicate_offsets_are_refused(ws, tmp_path, capsys):
    m = model_copy(ws, tmp_path)
    a, b = "model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.up_proj.weight"
    shard = _shard_with(m, a)
    _rewrite_header(shard, lambda h: h[b].update(data_offsets=list(h[a]["data_offsets"]), shape=h[a]["shape"])
                    if b in h else None)
    refused(capsys, "plan", recipe_on(m, ws, tmp_path), fragments=[shard.name, "overlap"])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_weights_are_refused_by_name(ws, tmp_path, capsys, value):
    m = model_copy(ws, tmp_path)
    name = "model.layers.2.self_attn.o_proj.weight"
    shard = _shard_with(m, name)
    t = load_file(str(shard))
    t[name][0, 0] = value
    save_file(t, str(shard), metadata={"format": "pt"})
    refused(capsys, "apply", recipe_on(m, ws, tmp_path), "-o", tmp_path / "o", "-q",
            fragments=[name, "non-finite"])
    assert not (tmp_path / "o").exists()


def test_a_gguf_cut_inside_its_header_is_refused(ws, tmp_path, capsys):
    from bake.artifacts import imports

    imports.write_control_vector(tmp_path / "cv.gguf", {1: torch.randn(D)})
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "cv.gguf").read_bytes()[:40])
    refused(capsys, "arch", tmp_path / "cut.gguf", fragments=["cut.gguf"])


# --- temporary state and caches ------------------------------------------------------------------


def test_a_killed_eval_leaves_nothing_that_the_next_run_does_not_sweep(ws, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "bake", "eval", str(ws / "recipe.yaml"), "--suite", "quality",
                             "--limit", "2", "--out", str(tmp_path / "e"), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and not list(tmp.rglob("config.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "the eval ended before its temporary bake was seen"
    proc.kill()
    proc.wait()
    left = [p for p in tmp.iterdir()]
    assert left and all(p.name.startswith("bake-") for p in left), left  # under bake's own temp root
    p = subprocess.run([sys.executable, "-m", "bake", "arch", str(ws / "model"), "-q"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert not list(tmp.rglob("config.json")), list(tmp.rglob("*"))


def test_a_truncated_cache_entry_is_learned_again(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKE_CACHE", str(tmp_path / "cache"))
    recipe = {"model": str(ws / "model"), "verify": {"generate_tokens": 2},
              "interventions": [{"kind": "steer", "layers": [1], "scale": 1.0, "vector": {
                  "learn": {"positive": str(ws / "pos.txt"), "negative": str(ws / "neg.txt"), "layers": "1"}}}]}
    bake.plan(recipe, progress=False)
    [entry] = (tmp_path / "cache" / "learned").glob("*.safetensors")
    good, raw = {k: v.clone() for k, v in load_file(str(entry)).items()}, entry.read_bytes()  # (not mapped)
    entry.write_bytes(raw[: len(raw) // 2])
    p = bake.plan(recipe, progress=False)  # the same vector, learned again
    again = load_file(str(entry))
    assert again.keys() == good.keys() and all(torch.equal(again[k], good[k]) for k in good) and p.exact


# --- exit 2, not 3, for ordinary bad input -----------------------------------------------------------


@pytest.mark.parametrize("content,fragment", [(b"\xff\xfe\x00bad bytes\n", "UTF-8"), (b'{"text": "a", "label": 1}\n{oops\n',
                                                                                    "line 2")])
def test_bad_data_files_are_exit_2_for_eval_and_learn(ws, tmp_path, capsys, content, fragment):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    refused(capsys, "eval", ws / "B", "--suite", "toxicity", "--data", f"toxicity={bad}", "--limit", "2",
            "--out", tmp_path / "e", fragments=[str(bad), fragment])
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", data=bad), fragments=[str(bad), fragment])


def test_aura_data_with_one_class_is_exit_2(ws, tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    one.write_text("\n".join(json.dumps({"text": t, "label": 1}) for t in CORPUS))
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", data=one), fragments=["one class"])


@pytest.mark.parametrize("option", ["--limit", "--batch-size", "--max-length"])
def test_zero_counts_are_exit_2(ws, tmp_path, capsys, option):
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", option, "0"), fragments=[option])


def test_bake_cache_naming_a_file_or_an_unusable_home_is_exit_2(ws, tmp_path):
    (tmp_path / "file").write_text("x")
    recipe = tmp_path / "learn.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(ws / "model"), "interventions": [
        {"kind": "steer", "layers": [1], "vector": {"learn": {"positive": str(ws / "pos.txt"),
                                                              "negative": str(ws / "neg.txt"), "layers": "1"}}}]}))
    env_file = {"BAKE_CACHE": str(tmp_path / "file")}
    home = {"HOME": str(tmp_path / "file"), "BAKE_CACHE": ""}
    for env, frag in ((env_file, "BAKE_CACHE"), (home, "cache")):
        p = cli("plan", recipe, "-q", env=env)
        assert p.returncode == 2 and "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
        assert frag in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_an_empty_bake_cache_means_the_default(monkeypatch, tmp_path):
    from bake.model.source import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BAKE_CACHE", "")
    assert cache_dir() == tmp_path / ".cache" / "bake"


# --- unclear messages ----------------------------------------------------------------------------


def test_a_folder_given_as_a_data_file_says_so(ws, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.py").write_text("x = 1\n")
    refused(capsys, *aura_args(ws, tmp_path / "a.safetensors", data=tmp_path / "d"), fragments=["folder", "no data"])
    refused(capsys, "eval", ws / "B", "--suite", "quality", "--data", f"text={tmp_path / 'd'}", "--out",
            tmp_path / "e", fragments=["is a folder"])


def test_a_recipe_through_a_symlink_reads_its_files_beside_the_real_recipe(ws, tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(ws / "v.pt", real / "v.pt")
    (real / "recipe.yaml").write_text(yaml.safe_dump({"model": str(ws / "model"), "interventions": [
        {"kind": "steer", "layers": [1], "vector": "v.pt"}]}))
    (tmp_path / "link.yaml").symlink_to(real / "recipe.yaml")
    assert main(["plan", str(tmp_path / "link.yaml"), "-q"]) == 0, capsys.readouterr().err


def test_a_push_revision_with_dot_dot_is_refused_clearly(ws, capsys):
    refused(capsys, "push", ws / "B", "--repo-id", "me/x", "--revision", "../main", "--dry-run",
            fragments=["--revision", "../main", "branch"])
