"""GGUF output for llama.cpp (and Ollama, LM Studio), verified with llama.cpp itself.

Two ways in, both streaming one tensor at a time through `gguf.GGUFWriter`:

- `convert`: a Llama-family Hugging Face folder (bake's output) to a GGUF of llama.cpp's `llama`
  architecture. Names come from the gguf package's `TensorNameMap`, the vocabulary from its
  `BpeVocab`/`SpecialVocab`, quantization from `gguf.quants`; q/k rows are permuted as
  llama.cpp's converter does. The optional biases that llama.cpp's Llama graph loads
  (`ffn_{gate,up,down}.bias`, `attn_output.bias`) are written, so a steering bias survives.
- `patch`: bake into the GGUF the model came from. Only the tensors the bake edited are replaced
  (taken from the baked folder, stored as F32/F16 or requantized when asked); every other tensor is
  copied byte for byte, every metadata key unchanged.

Verification (`verify_gguf`): llama-cpp-python runs greedy generation on the probe prompts (token
ids, so the GGUF tokenizer is not in the loop) against the baked PyTorch model in float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from .errors import BakeError, NotBakeable
from .verifier import PROMPTS_CHAT, PROMPTS_PLAIN

GEN_TOKENS = 32
FAMILIES = ("llama", "mistral")  # model types that llama.cpp's `llama` architecture runs
TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")  # those gguf.quants can write
# greedy tokens must match PyTorch for these; others report agreement (bf16 too: llama.cpp rounds
# the activations to bf16 for bf16 weights, and greedy tokens then differ on tiny test models)
EXACT_TYPES = ("f32", "f16")
MIN_TOP1_QUANTIZED = 0.9  # a sanity floor for quantized files (the demo's Q4_1 patch: 97.5%)


def _qtype(name: str):
    import gguf

    if name.lower() not in TYPES:
        raise BakeError(f"GGUF type {name!r} is not one bake writes; choose one of {', '.join(TYPES)}")
    return gguf.GGMLQuantizationType[name.upper()]


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


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's q/k row order (its converter's `LlamaModel.permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check(cfg: dict, what: str = "this model", qtype: str | None = None) -> None:
    """Refuse what llama.cpp's `llama` graph cannot run, before anything is written."""
    mt = cfg.get("model_type")
    if mt not in FAMILIES:
        raise NotBakeable(f"GGUF export writes Llama-family checkpoints ({', '.join(FAMILIES)}); {what} is "
                          f"{mt!r}. Export ONNX instead, or convert with llama.cpp's convert_hf_to_gguf.py")
    if mt == "mistral" and cfg.get("sliding_window"):
        raise NotBakeable("llama.cpp's llama graph has no sliding window; this Mistral config sets sliding_window")
    _rope_theta(cfg)
    if qtype is not None:
        _qtype(qtype)


def _rope_theta(cfg: dict) -> float:
    rope = cfg.get("rope_parameters") or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
        raise NotBakeable(f"GGUF conversion handles plain RoPE only; this model uses rope_type "
                          f"{rope['rope_type']!r} (convert it with llama.cpp's convert_hf_to_gguf.py)")
    if cfg.get("rope_scaling"):
        raise NotBakeable("GGUF conversion handles plain RoPE only; this model sets rope_scaling "
                          "(convert it with llama.cpp's convert_hf_to_gguf.py)")
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    return float(theta if theta is not None else cfg.get("rope_theta", 10000.0))


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


def _add_tokenizer(w, model_dir: Path, n_vocab: int, source_gguf: Path | None):
    import gguf

    if source_gguf is not None:  # the model came from a GGUF: keep its tokenizer exactly
        for key, val, vtype, sub in _source_fields(gguf.GGUFReader(source_gguf), "tokenizer."):
            w.add_key_value(key, val, vtype, sub_type=sub)
        return
    try:
        vocab = gguf.vocab.BpeVocab(model_dir)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:  # gguf's reader indexes the JSON blindly
        raise NotBakeable(f"{model_dir}: GGUF conversion writes GPT-2 style byte-level BPE vocabularies "
                          f"(tokenizer.json); this tokenizer is not one ({type(e).__name__}: {e}); use "
                          "llama.cpp's convert_hf_to_gguf.py for it") from None
    tokens, types = [], []
    for text, _, ttype in vocab.all_tokens():
        tokens.append(text.encode() if isinstance(text, str) else text)
        types.append(ttype)
    for i in range(len(tokens), n_vocab):  # embedding rows past the tokenizer's vocabulary
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(w, quiet=True)


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


def convert(model_dir: str | Path, out: str | Path, qtype: str = "f32", source_gguf: Path | None = None,
            progress: bool = True, name: str | None = None) -> dict:
    """Write a llama.cpp `llama` GGUF of a Hugging Face folder. Returns {tensor: ggml type}."""
    import gguf

    model_dir, out = Path(model_dir), Path(out)
    cfg = json.loads((model_dir / "config.json").read_text())
    check(cfg, str(model_dir))
    qt = _qtype(qtype)
    n_layers, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(name or model_dir.name)
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type({"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "bf16": 32}[qtype.lower()])
    _add_tokenizer(w, model_dir, cfg["vocab_size"], source_gguf)  # a GGUF source's tokenizer, kept exactly

    items, types = [], {}
    for name, f in _tensors(model_dir):
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            raise NotBakeable(f"no llama.cpp tensor for {name}; GGUF export of this checkpoint is not supported")
        with safe_open(str(f), "pt") as st:
            shape = tuple(st.get_slice(name).get_shape())
        info, tt = _info(shape, qt, len(shape) == 1)
        types[gname] = tt.name
        perm = (n_head, n_head) if ".q_proj." in name else (n_head, n_kv) if ".k_proj." in name else None

        def produce(name=name, f=f, perm=perm):
            arr = _read(f, name)
            return _encoded(_permute(arr, *perm) if perm else arr, qt)[0]

        items.append((gname, info, produce))
    _write(out, w, items, progress, "writing GGUF")
    return types


def patch(source_gguf: str | Path, baked_dir: str | Path, edits: list[dict], out: str | Path,
          qtype: str = "f32", progress: bool = True) -> dict:
    """Bake into an existing GGUF: replace the edited tensors (`edits` as in bake_report.json, HF
    names; values read from the baked folder) and add new ones; copy every other tensor and all
    metadata unchanged. A tensor that is a plain copy of another (an untied lm_head) takes the
    source tensor's bytes, in its original type."""
    import gguf

    source_gguf, baked_dir, out = Path(source_gguf), Path(baked_dir), Path(out)
    qt = _qtype(qtype)
    reader = gguf.GGUFReader(source_gguf)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise NotBakeable(f"baking into a GGUF supports llama.cpp's llama architecture; {source_gguf.name} is {arch!r}")
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
    for key, val, vtype, sub in _source_fields(reader):
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


def _round_like(model, types: dict) -> int:
    """Round the reference model's weights that the GGUF stores as F16/BF16 the same way, so that an
    f16 file is held to the model it actually contains. Returns how many tensors were rounded."""
    import gguf

    cfg = model.config.get_text_config()
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            stored = types.get(tmap.get_name(name, try_suffixes=(".weight", ".bias")) or "", "").split(" ")[0]
            if stored in ("F16", "BF16"):
                p.copy_(p.to(torch.float16 if stored == "F16" else torch.bfloat16).to(p.dtype))
                n += 1
    return n


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


def verify_gguf(path: Path, model, inputs, qtype: str, exact: bool, n_steps: int = GEN_TOKENS,
                tokenizer=None, texts: list[str] = ()) -> dict:
    """llama.cpp (llama-cpp-python) against the baked PyTorch model on the probe inputs. `exact`:
    every tensor is F32/F16, so greedy tokens must match; otherwise agreement is reported, and a
    top-1 agreement under MIN_TOP1_QUANTIZED fails (a broken file, not quantization). With a
    tokenizer, llama.cpp's tokenization of `texts` must equal transformers'."""
    base = {"against": "baked PyTorch checkpoint, float32", "type": qtype}
    try:
        import llama_cpp
    except ImportError:
        return {**base, "status": "unverified", "runtime": "none", "metrics": {}, "failures": [],
                "note": "llama-cpp-python is not installed (pip install 'bake[llama]'), so the GGUF was not run"}
    from .verifier import against_reference, context_length, eos_ids

    eos, context = eos_ids(model), context_length(model)
    n_ctx = min(context, max(ids.shape[1] for _, ids in inputs) + n_steps + 1)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=os.cpu_count(),
                          seed=0)
    runs = []
    for label, ids in inputs:
        ids = ids[:, : n_ctx - 1]
        runs.append((label, ids, *llama_greedy(llm, ids[0].tolist(), min(n_steps, n_ctx - ids.shape[1]), eos)))
    tok_same = [llm.tokenize(t.encode(), add_bos=False, special=False) == tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in texts] if tokenizer is not None else []
    del llm
    prompts = against_reference(model, runs)
    for p in prompts:
        p.pop("reference")
    identical = sum(p["tokens_identical"] for p in prompts)
    worst = max(p["max_abs_logit"] for p in prompts)
    agree = [p["token_agreement"] for p in prompts]
    top1 = sum(p["top1_agreement"] for p in prompts) / len(prompts)
    failures = []
    if exact and identical < len(prompts):
        failures.append(f"greedy tokens differ on {len(prompts) - identical}/{len(prompts)} prompts")
    if not exact and top1 < MIN_TOP1_QUANTIZED:
        failures.append(f"top-1 agreement {top1:.2%} < {MIN_TOP1_QUANTIZED:.0%}: more than quantization would explain")
    if tok_same and not all(tok_same):
        failures.append(f"llama.cpp tokenizes {len(tok_same) - sum(tok_same)}/{len(tok_same)} probe texts differently "
                        "from transformers")
    return {
        **base,
        "status": "failed" if failures else ("passed" if exact else "approximate"),
        "runtime": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "tolerance": {"greedy_tokens": f"{n_steps} identical" if exact
                      else f"reported; top-1 agreement at least {MIN_TOP1_QUANTIZED:.0%} (quantized tensors)",
                      **({"tokenization": "identical to transformers"} if tok_same else {})},
        "metrics": {"greedy_identical_prompts": f"{identical}/{len(prompts)}",
                    "greedy_token_agreement": sum(agree) / len(agree), "max_abs_logit": worst,
                    "top1_agreement": top1,
                    **({"tokenization_identical": f"{sum(tok_same)}/{len(tok_same)}"} if tok_same else {})},
        "failures": failures,
        "prompts": prompts,
    }


def default_type(model_dir: Path) -> str:
    """f32 for float32 checkpoints (exact), f16 otherwise (the dtype bake wrote, else the config's)."""
    from .integrity import read_report

    report = read_report(Path(model_dir), required=False)
    if report:
        dtype = report.get("dtype")
    else:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        dtype = cfg.get("dtype", cfg.get("torch_dtype"))
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


def resolve(model_dir: Path, qtype: str | None, mode: str) -> tuple[str, str | None, str]:
    """(mode, source GGUF or None, type) for exporting a baked folder. mode "patch" bakes into the
    GGUF the model came from (named in its bake_report.json), "convert" converts the HF folder,
    "auto" patches when there is a source GGUF."""
    from .integrity import read_report

    report = read_report(model_dir, required=False)
    origin = report.get("model", {}).get("origin") or {}
    source = origin.get("gguf") if mode != "convert" else None
    if mode == "patch" and not source:
        raise BakeError(f"{model_dir} was not baked from a GGUF (its bake_report.json names none); use --mode convert")
    if source:
        from .source import sha256_file

        if not Path(source).is_file() or (origin.get("gguf_sha256") and sha256_file(Path(source)) != origin["gguf_sha256"]):
            raise BakeError(f"the source GGUF {source} is missing or changed since the bake; "
                            "use --mode convert to convert the baked folder instead")
    qtype = (qtype or default_type(model_dir)).lower()
    _qtype(qtype)
    return ("patch" if source else "convert"), source, qtype


def export(model_dir: Path, out: Path, qtype: str, mode: str, source: str | None, progress: bool = True,
           prompts: list[str] | None = None, name: str | None = None, trust_remote_code: bool = False) -> dict:
    """Write the GGUF (`resolve` gives mode, source and type) to the path `out` (bake's staging picks
    it and renames it into place) and verify it with llama.cpp. `name`: the model's name
    (general.name). Returns the verification."""
    from .integrity import read_report
    from .verifier import load_model, load_tokenizer, probe_inputs

    report = read_report(model_dir, required=False)
    if mode == "patch":
        tensors = patch(source, model_dir, report.get("edits", []), out, qtype, progress)
    else:
        gguf_origin = (report.get("model", {}).get("origin") or {}).get("gguf")
        tensors = convert(model_dir, out, qtype, name=name or model_dir.name, progress=progress,
                          source_gguf=Path(gguf_origin) if gguf_origin and Path(gguf_origin).is_file() else None)
    model = load_model(model_dir, trust_remote_code=trust_remote_code, dtype=torch.float32)
    rounded = _round_like(model, tensors)
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    inputs = probe_inputs(tok, prompts, model.config.get_text_config().vocab_size)
    if progress:
        print(f"verifying GGUF with llama.cpp: {GEN_TOKENS} greedy tokens on {len(inputs)} prompts ...", flush=True)
    exact = qtype in EXACT_TYPES and all(t.split()[0] in ("F32", "F16") for t in tensors.values())
    texts = (prompts or PROMPTS_CHAT + PROMPTS_PLAIN) if tok is not None else []
    result = verify_gguf(out, model, inputs, qtype, exact, tokenizer=tok, texts=texts)
    if rounded:
        result["against"] += f", its {rounded} tensors stored as 16-bit rounded as in the file"
    if mode == "patch" and result["status"] == "approximate" and Path(report["model"]["path"]).is_dir():
        # how far llama.cpp's quantized kernels are from PyTorch on the unbaked source, for scale
        base_model = load_model(Path(report["model"]["path"]), trust_remote_code=trust_remote_code, dtype=torch.float32)
        base = verify_gguf(Path(source), base_model, inputs, qtype, False)
        result["baseline"] = {"what": "the source GGUF, unbaked, in llama.cpp vs its dequantized weights in PyTorch",
                              "metrics": base["metrics"]}
        result["note"] = ("untouched tensors keep the source's quantized types, so llama.cpp's quantized kernels "
                          "differ from PyTorch on the dequantized weights; the baseline shows the same gap "
                          "before the bake")
    return {"file": out.name, "mode": mode, **({"source": source} if mode == "patch" else {}), **result,
            "tensors": tensors}
