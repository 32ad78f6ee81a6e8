"""Generated malformed inputs for bake's commands, run through the CLI in a fresh process each.

Shared by tests/test_fuzz.py (a fixed, bounded set of examples) and eval/fuzz_cli.py (as many
random ones as asked). Targets of `bake apply`: the recipe (YAML text and values), config.json,
the shard index, the artifact file, config sizes the weights disagree with, and header dtypes
relabelled. Of the commands after it (issue 27): `bake learn aura` and `bake eval` with spoiled
data files and counts, and `bake push` with bad revisions, repo ids and an endpoint holding
credentials. For every input the contract is the same (`check`): exit 0 (the input was valid, and
the output then holds a passed bake, a learned file or a report) or 2 with one line; never a
traceback or an internal error; no secret (HF_TOKEN, a URL password) printed; on failure nothing at
the output path and no temp or lock file beside it; the input model folder, the recipe's folder and
the baked folder unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(-3, 5), st.booleans(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(-2, 2), max_size=2),
)
RECIPE_PATHS = [("model",), ("dtype",), ("interventions",), ("interventions", 0), ("interventions", 0, "kind"),
                ("interventions", 0, "layers"), ("interventions", 0, "vector"), ("interventions", 0, "scale"),
                ("verify",), ("verify", "max_abs_logit"), ("verify", "generate_tokens"), ("export",), ("output",),
                ("gguf_type",), ("trust_remote_code",), ("provenance",)]


def valid_recipe(model: Path, vector: Path) -> dict:
    return {"model": str(model), "verify": {"generate_tokens": 2},
            "interventions": [{"kind": "steer", "layers": [1], "vector": str(vector), "scale": 2.0}]}


def _set(data, path, value, delete=False):
    node = data
    for k in path[:-1]:
        if isinstance(node, dict) and k in node or isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return data
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        if delete:
            node.pop(last) if isinstance(node, dict) and last in node else None
        else:
            node[last] = value
    return data


@st.composite
def recipe_texts(draw, model: Path, vector: Path) -> str:
    """A recipe with one to three values replaced, keys dropped or added, or its text cut and spliced."""
    data = valid_recipe(model, vector)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "delete", "extra"]))
        path = draw(st.sampled_from(RECIPE_PATHS))
        if how == "extra":
            data[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
        else:
            _set(data, path, draw(VALUES), delete=how == "delete")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    edit = draw(st.sampled_from(["none", "cut", "splice", "duplicate"]))
    if edit == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif edit == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(alphabet=":-[]{}&*!|>'\"#%@ \n\tab1", max_size=8)) + text[at:]
    elif edit == "duplicate":
        text += text.splitlines()[0] + "\n"
    return text


@st.composite
def config_edits(draw):
    """A function that spoils a model folder's config.json."""
    how = draw(st.sampled_from(["set", "delete", "truncate", "bytes"]))
    key = draw(st.sampled_from(["model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                                "tie_word_embeddings", "num_attention_heads", "architectures"]))
    value = draw(VALUES)
    cut = draw(st.floats(0, 1))
    junk = draw(st.binary(max_size=64))

    def apply(folder: Path):
        p = folder / "config.json"
        if how == "truncate":
            p.write_bytes(p.read_bytes()[: int(cut * p.stat().st_size)])
        elif how == "bytes":
            p.write_bytes(junk)
        else:
            cfg = json.loads(p.read_text())
            cfg.pop(key, None) if how == "delete" else cfg.__setitem__(key, value)
            p.write_text(json.dumps(cfg))
    apply.label = f"config {how} {key}={value!r}"[:120]
    return apply


@st.composite
def index_edits(draw):
    """A function that spoils a sharded model's index (or a shard)."""
    how = draw(st.sampled_from(["drop-entry", "move-entry", "bad-name", "not-a-map", "truncate-shard", "junk-shard"]))
    pick = draw(st.integers(0, 10_000))
    value = draw(VALUES)
    junk = draw(st.binary(max_size=64))

    def apply(folder: Path):
        index = folder / "model.safetensors.index.json"
        data = json.loads(index.read_text())
        names = sorted(data["weight_map"])
        shards = sorted(set(data["weight_map"].values()))
        name = names[pick % len(names)]
        if how == "drop-entry":
            del data["weight_map"][name]
        elif how == "move-entry":
            data["weight_map"][name] = shards[(shards.index(data["weight_map"][name]) + 1) % len(shards)]
        elif how == "bad-name":
            data["weight_map"][name] = value if not isinstance(value, str) or value else "../x.safetensors"
        elif how == "not-a-map":
            data["weight_map"] = value
        shard = folder / shards[pick % len(shards)]
        if how == "truncate-shard":
            shard.write_bytes(shard.read_bytes()[: pick % max(shard.stat().st_size, 1)])
        elif how == "junk-shard":
            shard.write_bytes(junk)
        else:
            index.write_text(json.dumps(data))
    apply.label = f"index {how} #{pick}"
    return apply


@st.composite
def artifact_files(draw):
    """(suffix, bytes) of a vector file: random bytes, a truncated file, or a tensor of a wrong
    shape, dtype or value."""
    import io

    import numpy as np
    import torch
    from safetensors.torch import save

    how = draw(st.sampled_from(["bytes", "npy-shape", "pt-shape", "safetensors-values", "truncated"]))
    if how == "bytes":
        return draw(st.sampled_from([".pt", ".npy", ".safetensors"])), draw(st.binary(max_size=200))
    shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=3))
    fill = draw(st.sampled_from([0.0, 1.0, float("nan"), float("inf"), 1e30]))
    dtype = draw(st.sampled_from(["float32", "float16", "int64", "bool"]))
    t = torch.full(shape, fill).to(getattr(torch, dtype)) if dtype != "bool" else torch.zeros(shape, dtype=torch.bool)
    if how == "npy-shape":
        buf = io.BytesIO()
        np.save(buf, t.numpy())
        return ".npy", buf.getvalue()
    if how == "pt-shape":
        buf = io.BytesIO()
        torch.save(t, buf)
        return ".pt", buf.getvalue()
    data = save({"vector": t.contiguous()})
    if how == "truncated":
        return ".safetensors", data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    return ".safetensors", data


@st.composite
def size_edits(draw):
    """A function that sets config sizes the weights disagree with (small, off by one, huge)."""
    key = draw(st.sampled_from(["hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                                "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"]))
    value = draw(st.sampled_from([1, 2, 3, 5, 7, 31, 33, 47, 49, 64, 96, 98, 1000, 10**6, 10**9, 2**31 - 1]))

    def apply(folder: Path):
        p = folder / "config.json"
        cfg = json.loads(p.read_text())
        cfg[key] = value
        p.write_text(json.dumps(cfg))
    apply.label = f"size {key}={value}"
    return apply


@st.composite
def dtype_edits(draw):
    """A function that relabels one tensor's dtype in its shard's header (the bytes stay)."""
    pick = draw(st.integers(0, 10_000))
    dtype = draw(st.sampled_from(["I32", "U32", "I64", "I16", "U8", "BOOL", "F16", "BF16", "F64", "I8"]))

    def apply(folder: Path):
        import struct

        shards = sorted(folder.glob("*.safetensors"))
        shard = shards[pick % len(shards)]
        raw = shard.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        names = sorted(k for k in header if k != "__metadata__")
        header[names[pick % len(names)]]["dtype"] = dtype
        text = json.dumps(header).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        shard.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    apply.label = f"dtype #{pick} -> {dtype}"
    return apply


@st.composite
def data_files(draw):
    """(suffix, bytes) of a data file: random bytes, cut or malformed JSONL, one class, one huge line,
    a CSV with a broken quote, an empty file."""
    how = draw(st.sampled_from(["bytes", "jsonl-cut", "one-class", "huge-line", "csv-quote", "empty", "valid"]))
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(["you are lovely", "I hate you", "what a day",
                                                               "this is stupid", "thank you", "you idiot"])]
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n"
    if how == "bytes":
        return draw(st.sampled_from([".jsonl", ".csv", ".txt", ".json"])), draw(st.binary(max_size=200))
    if how == "jsonl-cut":
        return ".jsonl", jsonl.encode()[: draw(st.integers(1, len(jsonl) - 2))]
    if how == "one-class":
        return ".jsonl", "\n".join(json.dumps({**r, "label": 1}) for r in rows).encode()
    if how == "huge-line":
        return ".txt", ("word " * 250_000).encode()
    if how == "csv-quote":
        return ".csv", b'text,label\n"unclosed,1\nok,0\n'
    if how == "empty":
        return draw(st.sampled_from([".jsonl", ".csv", ".txt", ".json"])), b""
    return ".jsonl", jsonl.encode()


SECRET = "hf_" + "Fz9" * 12  # set as HF_TOKEN for every command: it must never be printed
TARGETS = ("recipe", "config", "index", "artifact", "sizes", "dtypes", "learn", "eval", "push")


def workspace(model: Path, vector: Path, parent: Path | None = None) -> tuple[Path, Path, Path, Path]:
    """A fresh folder for one example: (root, the recipe's path in its own folder beside the vector,
    a copy of the model, the output path in an existing empty folder)."""
    root = Path(tempfile.mkdtemp(prefix="bake-fuzz-", dir=parent))
    (root / "recipe").mkdir()
    shutil.copy(vector, root / "recipe" / "v.pt")
    shutil.copytree(model, root / "model")
    (root / "outputs").mkdir()
    return root, root / "recipe" / "recipe.yaml", root / "model", root / "outputs" / "out"


def prepare(target: str, draw, recipe: Path, model: Path) -> str:
    """Write one generated malformed input for `target` into a workspace; returns its label. The
    command it is for is `command(target, ...)`."""
    vector = recipe.parent / "v.pt"
    if target in ("sizes", "dtypes"):
        edit = draw(size_edits() if target == "sizes" else dtype_edits())
        edit(model)
        recipe.write_text(yaml.safe_dump(valid_recipe(model, vector)))
        return edit.label
    if target in ("learn", "eval"):
        suffix, blob = draw(data_files())
        (recipe.parent / f"data{suffix}").write_bytes(blob)
        opts = draw(st.lists(st.sampled_from(["--limit", "--batch-size", "--max-length", "--samples", "--tokens"]),
                             max_size=2, unique=True))
        values = [str(draw(st.sampled_from([0, -1, 1, 2, 10**9]))) for _ in opts]
        (recipe.parent / "args.json").write_text(json.dumps([x for o, v in zip(opts, values) for x in (o, v)]))
        return f"{target} data{suffix} ({len(blob)} bytes) {' '.join(x for o, v in zip(opts, values) for x in (o, v))}"
    if target == "push":
        revision = draw(st.sampled_from(["main", "v1", "../main", "a..b", "/x", "x/", "a b", "-x", "a~1", "x.lock"]))
        repo = draw(st.sampled_from(["me/x", "me/../x", "x" * 120, "me/x y", "a/b/c"]))
        endpoint = draw(st.sampled_from(["http://127.0.0.1:9", f"http://me:{SECRET}@127.0.0.1:9",
                                         "http://user:pw-Fz9Fz9@127.0.0.1:9"]))
        dry = draw(st.booleans())
        (recipe.parent / "args.json").write_text(json.dumps(
            [f"--repo-id={repo}", f"--revision={revision}", *(["--dry-run"] if dry else [])]))  # (= : "-x" is a value)
        (recipe.parent / "env.json").write_text(json.dumps({"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}))
        return f"push --repo-id {repo} --revision {revision} endpoint {endpoint}{' --dry-run' if dry else ''}"
    if target == "recipe":
        recipe.write_text(draw(recipe_texts(model, vector)))
        return "recipe"
    if target in ("config", "index"):
        edit = draw(config_edits() if target == "config" else index_edits())
        edit(model)
        recipe.write_text(yaml.safe_dump(valid_recipe(model, vector)))
        return edit.label
    suffix, blob = draw(artifact_files())
    (recipe.parent / f"a{suffix}").write_bytes(blob)
    recipe.write_text(yaml.safe_dump(valid_recipe(model, recipe.parent / f"a{suffix}")))
    return f"artifact {suffix} ({len(blob)} bytes)"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, cwd=None, env=None, stdin=None, timeout=600) -> subprocess.CompletedProcess:
    """`bake ARGS` in a fresh process, as a user runs it (offline; this checkout's bake)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bake", *map(str, args)], cwd=cwd, env=env, text=True,
                          capture_output=True, input=stdin, timeout=timeout)


def command(target: str, recipe: Path, model: Path, out: Path, baked: Path | None = None) -> tuple[list, dict]:
    """The command line and environment a prepared workspace is run with."""
    ws = recipe.parent
    extra = json.loads((ws / "args.json").read_text()) if (ws / "args.json").is_file() else []
    env = json.loads((ws / "env.json").read_text()) if (ws / "env.json").is_file() else {}
    data = next(iter(sorted(ws.glob("data.*"))), None)
    def without(*names):  # the generated options that this command has
        return [x for o, v in zip(extra[::2], extra[1::2]) if o not in names for x in (o, v)]

    if target == "learn":
        extra = without("--samples", "--tokens")
        return ["learn", "aura", "--model", model, "--data", data, "--out", out, "-q", *extra], env
    if target == "eval":
        extra = without("--batch-size", "--max-length")
        suite, key = ("toxicity", "toxicity") if data.suffix in (".jsonl", ".csv", ".json") else ("quality", "text")
        return ["eval", model, "--against", model, "--suite", suite, "--data", f"{key}={data}", "--out", out,
                "--lengths", "2", *(["--limit", "2"] if "--limit" not in extra else []),
                *(["--samples", "1"] if "--samples" not in extra else []),
                *(["--tokens", "2"] if "--tokens" not in extra else []), "-q", *extra], env
    if target == "push":
        return ["push", baked, *extra], env
    return ["apply", recipe, "-o", out, "-q"], env


def check(recipe: Path, model: Path, out: Path, label: str, target: str = "recipe", baked: Path | None = None) -> int:
    """Run the target's command (`bake apply recipe -o out` for the first six) and assert the contract
    (see the module docstring); returns the exit code."""
    before = {"model": digest(model), "recipe": digest(recipe.parent), **({"baked": digest(baked)} if baked else {})}
    args, env = command(target, recipe, model, out, baked)
    p = cli(*args, cwd=recipe.parent, env={"HF_TOKEN": SECRET, **env})
    shown = recipe.read_text(errors="replace")[:1500] if recipe.is_file() else " ".join(map(str, args))
    where = f"[{label}] rc {p.returncode}\nstderr:\n{p.stderr[-2500:]}\nrecipe or command:\n{shown}"
    assert p.returncode in (0, 2), where
    assert "Traceback" not in p.stderr + p.stdout and "internal error" not in p.stderr, where
    assert SECRET not in p.stderr + p.stdout and "pw-Fz9Fz9" not in p.stderr + p.stdout, where
    if p.returncode == 2:
        assert p.stderr.startswith("bake: error:"), where
        if target != "recipe":  # (a recipe's validation lists each of its errors on a line of its own)
            assert len(p.stderr.strip().splitlines()) == 1, where
        assert not out.exists(), where
    elif target == "learn":
        assert out.is_file(), where
        out.unlink()
    elif target == "eval":
        assert (out / "eval_report.json").is_file(), where
        shutil.rmtree(out)
    elif target != "push":
        assert json.loads((out / "bake_report.json").read_text())["verification"]["status"] in ("passed", "approximate")
        shutil.rmtree(out)
    assert [x.name for x in out.parent.iterdir() if x.name.startswith(f".{out.name}.")] == [], where
    assert {"model": digest(model), "recipe": digest(recipe.parent),
            **({"baked": digest(baked)} if baked else {})} == before, where
    return p.returncode
