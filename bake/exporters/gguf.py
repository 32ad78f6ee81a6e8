"""GGUF output for llama.cpp (and Ollama, LM Studio), verified with llama.cpp itself.

Two ways in:

- `convert`: llama.cpp's own converter (`convert_hf_to_gguf.py`, its `conversion/` registry of one
  class per architecture, and its `gguf-py`), taken from the llama-cpp-python source distribution
  that the set-up builds (`make venv` unpacks it into `.venv/share/bake/llama.cpp`; or point
  `BAKE_LLAMA_CPP` at a llama.cpp checkout). It runs in a child process on the baked folder; every
  architecture it registers is exported. Types f32, f16, bf16 and q8_0 come from the converter;
  the other llama.cpp types (q4_0 ... q6_k, q4_k_m, ...) are made from its f32 file with
  llama.cpp's own quantizer (`llama_model_quantize`, through llama-cpp-python).
- `patch`: bake into the GGUF the model came from (llama architecture). Only the tensors the bake
  edited are replaced (taken from the baked folder, stored as F32/F16 or requantized when asked);
  every other tensor is copied byte for byte, every metadata key unchanged but the MLP width when a
  bake added units (`approximate: neurons`).

Verification (`verify_gguf`): llama-cpp-python runs greedy generation on the probe prompts (token
ids, so the GGUF tokenizer is not in the loop) and is compared with the baked PyTorch model on the
same (teacher-forced) sequences; llama.cpp must also tokenize the probe texts as transformers does.
"""

from __future__ import annotations

import ast
import ctypes
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from ..errors import BakeError, NotBakeable
from .base import Exporter, register
from ..model.loading import PROMPTS_CHAT, PROMPTS_PLAIN

GEN_TOKENS = 32
CONVERTER_ENV = "BAKE_LLAMA_CPP"  # a folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/
PATCH_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")  # what gguf.quants writes (patch)
CONVERT_TYPES = ("f32", "f16", "bf16", "q8_0")  # what llama.cpp's converter writes itself
QUANTIZE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
                  "q5_k_s", "q5_k_m", "q6_k")  # llama.cpp's quantizer, from the converter's f32 file
# f32 and f16 files are held to a logit tolerance relative to the largest reference logit, on
# teacher-forced sequences (greedy tokens may differ at near ties: only a top-two margin under the
# summed logit error can flip); bf16 and quantized files report their agreement.
LOGIT_RTOL = {"f32": 5e-3, "f16": 2e-2}
EXACT_TYPES = tuple(LOGIT_RTOL)
# llama.cpp runs each file with its KV cache in the file's own float type: llama.cpp's default cache
# is f16, which rounds every cached K and V to half precision. That rounding belongs to the runtime
# setting (`--cache-type-k/-v`), not to the file, and at a sensitive position it is not small: on
# the demo bake (aura + steer + ablate) it moved one logit by 0.34 (0.86% of the largest) at position
# 1 of "In 1905, Albert Einstein published" where the same f32 file with an f32 cache is within
# 2e-4 of the float64 PyTorch model (PyTorch's own float32 forward: 8e-4). An f32 file is therefore
# verified with an f32 cache, and how far llama.cpp's default f16 cache moves its logits is reported.
KV_CACHE = {"f32": "f32"}  # other types: llama.cpp's default (f16)
MIN_TOP1_QUANTIZED = 0.9  # a sanity floor for quantized files (the demo's Q4_1 patch: 97.5%)


def converter_dir() -> Path | None:
    """The folder of llama.cpp's HF-to-GGUF converter, or None when it is not installed."""
    env = os.environ.get(CONVERTER_ENV)
    for d in ([Path(env)] if env else []) + [Path(sys.prefix) / "share" / "bake" / "llama.cpp"]:
        if (d / "convert_hf_to_gguf.py").is_file() and (d / "conversion").is_dir():
            return d
    return None


@functools.lru_cache(maxsize=4)
def known_architectures(folder: Path) -> frozenset[str]:
    """The HF `architectures` names llama.cpp's converter registers (`@ModelBase.register(...)`),
    read from its source without running it."""
    names = set()
    for f in sorted((folder / "conversion").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register" \
                    and getattr(node.func.value, "id", None) == "ModelBase":
                names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return frozenset(names)


def _qtype(name: str, mode: str = "convert"):
    """The type name, checked against what `mode` can write."""
    allowed = PATCH_TYPES if mode == "patch" else CONVERT_TYPES + QUANTIZE_TYPES
    if name.lower() not in allowed:
        raise BakeError(f"GGUF type {name!r} is not one bake writes ({mode}); choose one of {', '.join(allowed)}")
    return name.lower()


def _ggml_type(name: str):
    import gguf

    return gguf.GGMLQuantizationType[_qtype(name, "patch").upper()]


def _encoded(arr: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """(data, ggml type) for a float tensor stored as `qtype`: floats stay 1-D F32 (as llama.cpp's
    converter keeps norms and biases); rows not divisible by the block size fall back to F16."""
    import gguf

    T = gguf.GGMLQuantizationType
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim == 1 or qtype == T.F32:
        return arr, T.F32
    if qtype == T.F16:
        return arr.astype(np.float16), T.F16
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if arr.shape[-1] % block:
        return arr.astype(np.float16), T.F16
    return gguf.quants.quantize(arr, qtype), qtype


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check(cfg: dict, what: str = "this model", qtype: str | None = None, folder_with_tokenizer: Path | None = None) -> None:
    """Refuse what llama.cpp's converter cannot write, before anything is written (`folder_with_tokenizer`:
    the folder whose tokenizer the GGUF will carry)."""
    if qtype is not None:
        _qtype(qtype)
    folder = converter_dir()
    if folder is None:
        raise NotBakeable(f"GGUF export runs llama.cpp's convert_hf_to_gguf.py, which is not installed here: "
                          f"`make venv` unpacks it from the llama-cpp-python source distribution into "
                          f"{Path(sys.prefix) / 'share' / 'bake' / 'llama.cpp'}, or set {CONVERTER_ENV} to a "
                          "llama.cpp checkout")
    archs = cfg.get("architectures") or []
    known = known_architectures(folder)
    if not archs or archs[0] not in known:
        raise NotBakeable(f"llama.cpp's converter does not know {what}'s architecture {archs[0] if archs else None!r} "
                          f"(model_type {cfg.get('model_type')!r}); it registers {len(known)} others. Export ONNX "
                          "instead, or serve the Hugging Face folder")
    if folder_with_tokenizer is not None and not any((folder_with_tokenizer / f).is_file() for f in TOKENIZER_FILES):
        raise NotBakeable(f"{what} has no tokenizer ({', '.join(TOKENIZER_FILES)}): a GGUF carries its vocabulary, "
                          "so llama.cpp's converter needs one in the model folder")
    if cfg.get("model_type") == "mistral" and cfg.get("sliding_window"):
        raise NotBakeable("llama.cpp runs Mistral as its llama graph, which has no sliding window; this Mistral "
                          "config sets sliding_window")


def check_patch(source_gguf: str | Path, qtype: str | None = None) -> None:
    """Refuse a patch (bake into the source GGUF) that cannot work, before anything is written."""
    import gguf

    arch = gguf.GGUFReader(source_gguf).fields["general.architecture"].contents()
    if arch != "llama":
        raise NotBakeable(f"baking into a GGUF supports llama.cpp's llama architecture; {Path(source_gguf).name} "
                          f"is {arch!r} (bake the Hugging Face checkpoint and export with --mode convert)")
    if qtype is not None:
        _qtype(qtype, "patch")


def _tensors(model_dir: Path):
    """(name, file) for every tensor of a safetensors folder, in file order."""
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                yield name, f


def _read(f: Path, name: str) -> np.ndarray:
    with safe_open(str(f), "pt") as st:
        return st.get_tensor(name).to(torch.float32).numpy()


def _source_fields(reader, prefix: str = ""):
    """(key, value, type, sub_type) of a GGUF's metadata (as gguf_new_metadata copies it)."""
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or not field.name.startswith(prefix):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        yield field.name, field.contents(), vtype, sub


def _write(out: Path, w, items, progress: bool, desc: str):
    """Stream tensors: `items` holds (name, info, produce): `info` = (shape, dtype, nbytes, raw type),
    known before any data is made (the header comes first), and produce() gives the data."""
    for name, info, _ in items:
        w.add_tensor_info(name, *info)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, info, produce in tqdm(items, desc=desc, unit="tensor", disable=not progress):
        data = produce()
        if data.nbytes != info[2]:
            raise BakeError(f"internal: {name} is {data.nbytes} bytes, expected {info[2]}")
        w.write_tensor_data(data)
    w.close()


def _info(shape: tuple[int, ...], qtype, floating_1d: bool):
    """(numpy shape, dtype, nbytes, raw type) that `_encoded` will produce, without computing it."""
    import gguf

    T = gguf.GGMLQuantizationType
    if floating_1d or qtype == T.F32:
        return (shape, np.dtype(np.float32), int(np.prod(shape)) * 4, None), T.F32
    if qtype == T.F16 or shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return (shape, np.dtype(np.float16), int(np.prod(shape)) * 2, None), T.F16
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return (byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qtype), qtype


# Runs llama.cpp's converter in a child process with two changes, both printed to its log: a
# checkpoint's code runs only when bake was told --trust-remote-code (the converter itself asks
# transformers for trust_remote_code=True), and a byte-level BPE pre-tokenizer the converter does
# not recognize is written as llama.cpp's `default` (bake then checks llama.cpp's tokenization of
# the probe texts against transformers', and fails the export when they differ). A checkpoint
# without multi-token-prediction tensors (`mtp.*`, which transformers does not load) is converted
# without them where the converter would otherwise require them (Qwen3.5).
_RUNNER = r"""
import runpy, sys
folder, trust, arch, no_mtp = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4] == "1"
sys.argv = [folder + "/convert_hf_to_gguf.py"] + sys.argv[5:]
sys.path[:0] = [folder, folder + "/gguf-py"]
import transformers
for cls in (transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModelForCausalLM):
    def load(*a, _f=cls.from_pretrained, **k):
        k["trust_remote_code"] = trust
        return _f(*a, **k)
    cls.from_pretrained = staticmethod(load)
from conversion import base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        print("bake: BPE pre-tokenizer not recognized by llama.cpp; written as 'default'", file=sys.stderr)
        return "default"
base.TextModel.get_vocab_base_pre = pre
import conversion
cls = conversion.get_model_class(arch)
if no_mtp and getattr(cls, "supports_mtp_export", False):  # transformers drops multi-token-prediction layers
    cls.no_mtp = True
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert(model_dir: str | Path, out: str | Path, qtype: str = "f32", progress: bool = True,
            name: str | None = None, trust_remote_code: bool = False) -> dict:
    """Convert a Hugging Face folder with llama.cpp's converter (and quantizer). Returns
    {"tensors": {gguf tensor: ggml type}, "converter": what ran, "notes": [...]}."""
    model_dir, out = Path(model_dir), Path(out)
    cfg = json.loads((model_dir / "config.json").read_text())
    check(cfg, str(model_dir), qtype, model_dir)
    qtype = _qtype(qtype)
    folder = converter_dir()
    direct = qtype if qtype in CONVERT_TYPES else "f32"
    first = out if direct == qtype else out.with_name(out.name + ".f32")
    from ..model.source import open_checkpoint

    no_mtp = not any(k.startswith("mtp.") for k in open_checkpoint(model_dir).shapes)
    cmd = [sys.executable, "-c", _RUNNER, str(folder), "1" if trust_remote_code else "0", cfg["architectures"][0],
           "1" if no_mtp else "0", str(model_dir),
           "--outfile", str(first), "--outtype", direct, "--model-name", name or model_dir.name]
    if progress:
        print(f"converting with llama.cpp's convert_hf_to_gguf.py ({direct}) ...", flush=True)
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, not the installed gguf
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    notes = [line.strip() for line in proc.stderr.splitlines() if line.startswith("bake:")]
    if proc.returncode != 0:
        first.unlink(missing_ok=True)
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        tail = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        raise NotBakeable(f"llama.cpp's converter failed on {model_dir} (exit {proc.returncode}): {tail.strip()[:300]}")
    if first != out:
        try:
            _quantize(first, out, qtype)
        finally:
            first.unlink(missing_ok=True)
    import gguf

    reader = gguf.GGUFReader(out)
    tensors = {t.name: t.tensor_type.name for t in reader.tensors}
    del reader
    return {"tensors": tensors, "notes": notes,
            "converter": f"llama.cpp convert_hf_to_gguf.py ({folder})"
                         + (f" + llama_model_quantize ({qtype})" if direct != qtype else "")}


def _quantize(src: Path, dst: Path, qtype: str) -> None:
    """llama.cpp's quantizer (the llama-quantize tool's function) through llama-cpp-python."""
    try:
        import llama_cpp
    except ImportError:
        raise NotBakeable(f"GGUF type {qtype} is made by llama.cpp's quantizer, which needs llama-cpp-python "
                          "(pip install 'bake[llama]'); f32, f16, bf16 and q8_0 need only the converter") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        dst.unlink(missing_ok=True)
        raise BakeError(f"llama.cpp's quantizer failed to write {qtype} from {src.name}")


def patch(source_gguf: str | Path, baked_dir: str | Path, edits: list[dict], out: str | Path,
          qtype: str = "f32", progress: bool = True) -> dict:
    """Bake into an existing GGUF: replace the edited tensors (`edits` as in bake_report.json, HF
    names; values read from the baked folder) and add new ones; copy every other tensor and all
    metadata unchanged. A tensor that is a plain copy of another (an untied lm_head) takes the
    source tensor's bytes, in its original type."""
    import gguf

    source_gguf, baked_dir, out = Path(source_gguf), Path(baked_dir), Path(out)
    qt = _ggml_type(qtype)
    check_patch(source_gguf)
    reader = gguf.GGUFReader(source_gguf)
    n_layers = int(reader.fields["llama.block_count"].contents())
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)

    def gguf_name(name: str) -> str:
        g = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if g is None:
            raise NotBakeable(f"no llama.cpp tensor for edited tensor {name}")
        if ".attn_q." in g or ".attn_k." in g:
            raise NotBakeable(f"{name} is stored permuted in GGUF; baking q/k edits into a GGUF is not supported")
        return g

    files = dict(_tensors(baked_dir))
    by_name = {t.name: t for t in reader.tensors}
    replace = {gguf_name(e["tensor"]): e for e in edits}
    w = gguf.GGUFWriter(str(out), "llama")
    # a bake that adds MLP units (approximate: neurons) grows intermediate_size: the one metadata key it changes
    ff = json.loads((baked_dir / "config.json").read_text()).get("intermediate_size")
    for key, val, vtype, sub in _source_fields(reader):
        if key == "llama.feed_forward_length" and isinstance(ff, int):
            val = ff
        if key != "general.architecture":  # the writer adds it
            w.add_key_value(key, val, vtype, sub_type=sub)
    items, types = [], {}

    def copy(name: str, t):
        raw = t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        items.append((name, (tuple(t.data.shape), t.data.dtype, int(t.n_bytes), t.tensor_type if raw else None),
                      lambda: t.data))

    for t in reader.tensors:
        if t.name not in replace:
            copy(t.name, t)
            types[t.name] = t.tensor_type.name
    for gname, e in replace.items():  # edited and new tensors (after the copies: order is free in GGUF)
        src = gguf_name(e["source"]) if e.get("source") else None
        if not e["ops"] and src in by_name:  # a plain copy of a source tensor (as it was before the bake)
            copy(gname, by_name[src])
            types[gname] = f"{by_name[src].tensor_type.name} (new: copy of {src} as in the source)"
            continue
        name = e["tensor"]
        with safe_open(str(files[name]), "pt") as st:
            shape = tuple(st.get_slice(name).get_shape())
        info, tt = _info(shape, qt, len(shape) == 1)
        types[gname] = f"{tt.name} ({'edited' if gname in by_name else 'new'})"
        items.append((gname, info, lambda f=files[name], name=name: _encoded(_read(f, name), qt)[0]))
    _write(out, w, items, progress, "patching GGUF")
    return types


def llama_greedy(llm, ids: list[int], n_new: int, eos: list[int]) -> tuple[list[int], np.ndarray]:
    """Greedy tokens from a llama_cpp.Llama (logits_all=True), eos suppressed; and all logits."""
    llm.reset()
    llm.eval(ids)
    toks = []
    for _ in range(n_new):
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        last[eos] = -np.inf
        toks.append(int(last.argmax()))
        llm.eval([toks[-1]])
    return toks, np.array(llm.scores[: len(ids) + n_new - 1], dtype=np.float32)


def _llama(path: Path, n_ctx: int, kv: str):
    """llama.cpp (llama-cpp-python) on `path`, every position's logits kept, its KV cache in `kv`
    ("f16": llama.cpp's default; "f32")."""
    import llama_cpp

    cache = {"f32": {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}, "f16": {}}[kv]
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                           n_threads=os.cpu_count(), seed=0, **cache)


def verify_gguf(path: Path, model, inputs, qtype: str, exact: bool, n_steps: int = GEN_TOKENS,
                tokenizer=None, texts: list[str] = ()) -> dict:
    """llama.cpp (llama-cpp-python) against the baked PyTorch model on the probe inputs, compared on
    the same teacher-forced sequences (`verifier.against_reference`). `exact` (f32/f16 files): the
    max abs logit difference must be within LOGIT_RTOL of the largest reference logit (greedy tokens
    are reported, with the margins of any top-1 flips: only near ties can flip under that bound);
    otherwise agreement is reported, and a top-1 agreement under MIN_TOP1_QUANTIZED fails (a broken
    file, not quantization). llama.cpp's KV cache is in KV_CACHE[qtype] (an f32 file: f32, so the
    check measures the file, not the default f16 cache's rounding, which is reported apart). With a
    tokenizer, llama.cpp's tokenization of `texts` must equal transformers'."""
    base = {"against": "baked PyTorch checkpoint, float32", "type": qtype}
    try:
        import llama_cpp
    except ImportError:
        return {**base, "status": "unverified", "runtime": "none", "metrics": {}, "failures": [],
                "note": "llama-cpp-python is not installed (pip install 'bake[llama]'), so the GGUF was not run"}
    from ..model.loading import context_length, eos_ids
    from ..verification.verifier import against_reference

    eos, context = eos_ids(model), context_length(model)
    n_ctx = min(context, max(ids.shape[1] for _, ids in inputs) + n_steps + 1)
    # an exact (all-float) f32 file: f32 cache; a file patched into a quantized GGUF is compared with its
    # baseline (the unbaked file) under llama.cpp's default cache, as before
    kv = KV_CACHE.get(qtype, "f16") if exact else "f16"
    base["kv_cache"] = kv
    try:
        llm = _llama(path, n_ctx, kv)
    except ValueError as e:  # llama.cpp refused the file (its reason goes to its own log)
        return {**base, "status": "failed", "runtime": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
                "metrics": {}, "failures": [f"llama.cpp cannot load the file ({e})"]}
    runs = []
    for label, ids in inputs:
        ids = ids[:, : n_ctx - 1]
        runs.append((label, ids, *llama_greedy(llm, ids[0].tolist(), min(n_steps, n_ctx - ids.shape[1]), eos)))
    tok_same = [llm.tokenize(t.encode(), add_bos=False, special=False) == tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in texts] if tokenizer is not None else []
    del llm
    default_cache = None
    if kv != "f16":  # the same sequences with llama.cpp's default f16 KV cache, against this run (reported)
        llm = _llama(path, n_ctx, "f16")
        default_cache = 0.0
        for _, ids, toks, logits in runs:
            llm.reset()
            llm.eval(ids[0].tolist() + toks[:-1])
            got = np.array(llm.scores[: logits.shape[0]], dtype=np.float32)
            default_cache = max(default_cache, float(np.abs(got - logits).max()))
        del llm
    prompts = against_reference(model, runs)
    for p in prompts:
        p.pop("reference")
    identical = sum(p["tokens_identical"] for p in prompts)
    worst = max(p["max_abs_logit"] for p in prompts)
    agree = [p["token_agreement"] for p in prompts]
    top1 = sum(p["top1_agreement"] for p in prompts) / len(prompts)
    n_flips = sum(p["top1_flips"] for p in prompts)
    margins = [p["flip_margin_max"] for p in prompts if p["flip_margin_max"] is not None]
    rel = max(p["max_abs_logit"] / max(p["max_abs_reference_logit"], 1e-12) for p in prompts)
    failures = []
    if exact and not rel <= LOGIT_RTOL[qtype]:
        failures.append(f"max abs logit difference {worst:.3g} is {rel:.2g} of the largest logit, over the "
                        f"{LOGIT_RTOL[qtype]:g} a {qtype} file must meet")
    if not exact and top1 < MIN_TOP1_QUANTIZED:
        failures.append(f"top-1 agreement {top1:.2%} < {MIN_TOP1_QUANTIZED:.0%}: more than quantization would explain")
    if tok_same and not all(tok_same):
        failures.append(f"llama.cpp tokenizes {len(tok_same) - sum(tok_same)}/{len(tok_same)} probe texts differently "
                        "from transformers")
    return {
        **base,
        "status": "failed" if failures else ("passed" if exact else "approximate"),
        "runtime": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "tolerance": {"max_abs_logit": f"{LOGIT_RTOL[qtype]:g} x the largest reference logit, on teacher-forced "
                                       f"sequences, {kv} KV cache (greedy tokens may differ only at near ties)"
                      if exact else f"reported; top-1 agreement at least {MIN_TOP1_QUANTIZED:.0%} (quantized tensors)",
                      **({"tokenization": "identical to transformers"} if tok_same else {})},
        "metrics": {"greedy_identical_prompts": f"{identical}/{len(prompts)}",
                    "greedy_token_agreement": sum(agree) / len(agree), "max_abs_logit": worst,
                    "max_abs_logit_relative": rel, "top1_agreement": top1, "top1_flips": n_flips,
                    "flip_margin_max": max(margins) if margins else None,
                    **({"default_f16_kv_cache_max_abs_logit_change": default_cache} if default_cache is not None else {}),
                    **({"tokenization_identical": f"{sum(tok_same)}/{len(tok_same)}"} if tok_same else {})},
        "failures": failures,
        "prompts": prompts,
        **({"note": f"verified with an f32 KV cache; llama.cpp's default f16 cache moves these logits by up to "
                    f"{default_cache:.3g} (llama.cpp: --cache-type-k f32 --cache-type-v f32 runs the file as verified)"}
           if default_cache is not None else {}),
    }


def default_type(dtype: str | None) -> str:
    """f32 for float32 checkpoints (exact), f16 otherwise (`dtype`: what bake wrote, else the config's)."""
    return "f32" if dtype in ("float32", None) else "f16"


def default_name(name: str, qtype: str, source: str | None = None) -> str:
    """NAME.TYPE.gguf; a patched GGUF keeps its source's type label (edited tensors: TYPE)."""
    if source:
        import gguf

        ft = gguf.GGUFReader(source).fields.get("general.file_type")
        if ft is not None:
            label = gguf.LlamaFileType(int(ft.contents())).name.removeprefix("MOSTLY_")
            return f"{name}.{label}.gguf" if label == qtype.upper() else f"{name}.{label}+{qtype.upper()}.gguf"
    return f"{name}.{qtype.upper()}.gguf"


@register
class GgufExporter(Exporter):
    """One file (default FOLDER/NAME.TYPE.gguf): a patch of the GGUF the model was baked from, or
    the folder converted by llama.cpp's converter."""

    name, folder = "gguf", False
    help = "one GGUF file (a patch of the source GGUF, or llama.cpp's conversion), verified in llama.cpp"

    def arguments(self, sp) -> None:
        sp.add_argument("--type", dest="gguf_type", help="f32 | f16 | bf16 | q8_0 | q5_1 | q5_0 | q4_1 | q4_0 "
                        "(default f32 for float32 checkpoints, else f16; k-quants with --mode convert)")
        sp.add_argument("--mode", choices=["auto", "patch", "convert"], default="auto",
                        help="patch the GGUF the model was baked from (auto when there is one) or convert the folder")

    def given(self, args) -> dict:
        return {"gguf_type": args.gguf_type, "mode": args.mode}

    def from_recipe(self, recipe) -> dict:
        return {"gguf_type": recipe.gguf_type}

    def card_use(self, entry: dict) -> list[str]:
        source = f", baked into {Path(entry['source']).name}" if entry.get("source") else ""
        return [f"GGUF ({entry['type']}{source}): `llama-cli -m {entry['path']}` (llama.cpp), or Ollama / LM Studio."]

    def serving(self, config: dict, config_changes: dict) -> list[tuple[str, str, str]]:
        arch = (config.get("architectures") or ["?"])[0]
        try:
            check(config, "it")
        except BakeError as e:
            return [("llama.cpp", "no", str(e))]
        return [("llama.cpp", "yes", f"llama.cpp's converter registers {arch}: `bake export gguf` writes the GGUF "
                                     "and verifies it in llama.cpp")]

    def check(self, config: dict, model: Path, origin: dict, gguf_type: str | None = None, **given) -> None:
        if origin.get("gguf"):  # baked into the source GGUF (patch): llama architecture only
            check_patch(origin["gguf"], gguf_type)
        else:
            check(config, "the baked model", gguf_type, model)

    def options(self, folder: Path, report, gguf_type: str | None = None, mode: str = "auto", **given) -> dict:
        """mode "patch" bakes into the GGUF the model came from (named in its report), "convert"
        converts the HF folder, "auto" patches when there is a source GGUF."""
        origin = (report["model"].get("origin") if report else None) or {}
        source = origin.get("gguf") if mode != "convert" else None
        if mode == "patch" and not source:
            raise BakeError(f"{folder} was not baked from a GGUF (its bake_report.json names none); use --mode convert")
        if source:
            from ..model.source import sha256_file

            if not Path(source).is_file() or (origin.get("gguf_sha256") and sha256_file(Path(source)) != origin["gguf_sha256"]):
                raise BakeError(f"the source GGUF {source} is missing or changed since the bake; "
                                "use --mode convert to convert the baked folder instead")
        if report:
            dtype = report.get("dtype")
        else:
            cfg = json.loads((folder / "config.json").read_text())
            dtype = cfg.get("dtype", cfg.get("torch_dtype"))
        qtype = (gguf_type or default_type(dtype)).lower()
        _qtype(qtype, "patch" if source else "convert")
        return {"mode": "patch" if source else "convert", "source": source, "type": qtype,
                "edits": report.get("edits", []) if report else [],
                "base": report["model"].get("path") if report else None}

    def default_output(self, folder: Path, name: str, opts: dict) -> Path:
        return folder / default_name(name, opts["type"], opts["source"])

    def reads(self, opts: dict) -> list[Path]:
        return [Path(opts["source"])] if opts["source"] else []

    def write(self, folder: Path, out: Path, opts: dict, progress: bool, name: str, trust_remote_code: bool) -> dict:
        if opts["mode"] == "patch":
            return {"mode": "patch", "source": opts["source"],
                    "tensors": patch(opts["source"], folder, opts["edits"], out, opts["type"], progress)}
        conv = convert(folder, out, opts["type"], name=name, progress=progress, trust_remote_code=trust_remote_code)
        return {"mode": "convert", "tensors": conv["tensors"], "converter": conv["converter"],
                **({"converter_notes": conv["notes"]} if conv["notes"] else {})}

    def verify(self, folder: Path, out: Path, opts: dict, written: dict, progress: bool, prompts: list[str] | None,
               trust_remote_code: bool) -> dict:
        from ..model.loading import load_model, load_tokenizer, probe_inputs

        qtype, tensors = opts["type"], written["tensors"]
        model = load_model(folder, trust_remote_code=trust_remote_code, dtype=torch.float32,
                       on=torch.device("cpu"))  # beside the runtime, on the CPU
        tok = load_tokenizer(folder, trust_remote_code=trust_remote_code)
        inputs = probe_inputs(tok, prompts, model.config.get_text_config().vocab_size)
        if progress:
            print(f"verifying GGUF with llama.cpp: {GEN_TOKENS} greedy tokens on {len(inputs)} prompts ...", flush=True)
        exact = qtype in EXACT_TYPES and all(t.split()[0] in ("F32", "F16") for t in tensors.values())
        texts = (prompts or PROMPTS_CHAT + PROMPTS_PLAIN) if tok is not None else []
        result = verify_gguf(out, model, inputs, qtype, exact, tokenizer=tok, texts=texts)
        if opts["mode"] == "patch" and result["status"] == "approximate" and opts["base"] and Path(opts["base"]).is_dir():
            # how far llama.cpp's quantized kernels are from PyTorch on the unbaked source, for scale
            base_model = load_model(Path(opts["base"]), trust_remote_code=trust_remote_code, dtype=torch.float32,
                       on=torch.device("cpu"))  # beside the runtime, on the CPU
            base = verify_gguf(Path(opts["source"]), base_model, inputs, qtype, False)
            result["baseline"] = {"what": "the source GGUF, unbaked, in llama.cpp vs its dequantized weights in PyTorch",
                                  "metrics": base["metrics"]}
            result["note"] = ("untouched tensors keep the source's quantized types, so llama.cpp's quantized kernels "
                              "differ from PyTorch on the dequantized weights; the baseline shows the same gap "
                              "before the bake")
        return result

