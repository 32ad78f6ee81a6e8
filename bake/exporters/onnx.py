"""ONNX export with a KV cache, verified by bake against the baked PyTorch model.

The graph comes from `torch.onnx.export(dynamo=True)` (optimum-onnx pins transformers < 4.58, see
DESIGN.md). Its inputs and outputs follow optimum's `ORTModelForCausalLM` layout:
`input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key|value` ->
`logits`, `present.{i}.key|value`, cache tensors `[batch, kv_heads, length, head_dim]`. A
`genai_config.json` beside it lets onnxruntime-genai's stock generator run the folder unchanged.

Verification never trusts the exporter: greedy generation through onnxruntime (a cache-fed loop)
must give the baked PyTorch model's tokens, and every step's logits must match PyTorch's on the
same sequence within 1e-3 (float32); onnxruntime-genai's generator is run too when installed: its
tokens must match where it runs the model, and where it cannot (GPT-2's input names, types it does
not know such as OLMo 2) the report states its error instead of failing the export.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import NotBakeable
from .base import Exporter, register

MODEL_FILE = "model.onnx"
LOGIT_TOL = 1e-3
GEN_TOKENS = 32
SIDE = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")


class _WithCache(torch.nn.Module):
    """The model as a function of flat tensors: (ids, mask, positions, *past) -> (logits, *present)."""

    def __init__(self, model, n_layers: int):
        super().__init__()
        self.model, self.n = model, n_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    kv = [f"{{}}.{i}.{k}" for i in range(n_layers) for k in ("key", "value")]
    return (["input_ids", "attention_mask", "position_ids"] + [s.format("past_key_values") for s in kv],
            ["logits"] + [s.format("present") for s in kv])


def check(cfg: dict, what: str = "this model") -> None:
    """Refuse what does not export, before anything is written (`bake apply` calls it first): a tiny
    random model of the same config is exported and compared with PyTorch first (`trial`)."""
    why = trial(cfg)
    if why:
        raise NotBakeable(f"ONNX export cannot be done for {what} (model_type={cfg.get('model_type')!r}): {why}; "
                          "leave `onnx` out of `export` to bake the checkpoint (and GGUF) without it")


TRIAL_TOKENS = 3


def trial(cfg: dict, run: bool = True) -> str | None:
    """'' when a tiny random model of `cfg` exports with torch.onnx and onnxruntime reproduces its logits
    (teacher-forced, with the cache fed back) within LOGIT_TOL; otherwise why not. What torch.onnx traces
    is decided by tracing, not by a list; the answer is cached per config and library versions
    (`run=False`: the cached answer, None when the trial has not run)."""
    import hashlib

    import onnxruntime as ort
    import transformers

    from ..model import tiny
    from ..model.source import cache_dir

    clean = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    tag = json.dumps([clean, torch.__version__, transformers.__version__, ort.__version__], sort_keys=True, default=str)
    cache = cache_dir() / "onnx-trial"
    hit = cache / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.json"
    if hit.is_file():
        try:
            return json.loads(hit.read_text())["why"]
        except (OSError, ValueError, KeyError, TypeError):  # a truncated entry: tried again
            pass
    if not run:
        return None
    why = _trial(cfg, tiny, ort)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        hit.write_text(json.dumps({"model_type": cfg.get("model_type"), "why": why}) + "\n")
    except OSError:
        pass
    return why


def _trace_failure(e: BaseException) -> str:
    """The root cause of a torch.onnx failure in one line (its outer errors only say "step 1/3 failed")."""
    import re

    from ..errors import first_line

    root = e
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", first_line(root))[:240]
    if "DataDependent" in type(root).__name__:
        return ("torch.onnx cannot trace it: its forward branches on tensor values (data-dependent control flow, "
                f"such as a loop over the experts a token is routed to), which a static graph cannot hold ({text})")
    return f"torch.onnx cannot trace it ({type(root).__name__}: {text})"


def _trial(cfg: dict, tiny, ort) -> str:
    from ..errors import first_line
    from ..files.tempdirs import temp_dir

    try:
        model = tiny.build(tiny.tiny_config(cfg), dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - a config whose tiny instance does not build
        return f"no tiny instance of its config builds to try the export on ({type(e).__name__}: {first_line(e)})"
    model.config._attn_implementation = "eager"
    with temp_dir("onnx-trial") as tmp:
        try:
            _export_graph(model, Path(tmp) / MODEL_FILE)
        except Exception as e:  # noqa: BLE001 - whatever the tracer says is the reason
            return _trace_failure(e)
        try:
            session = ort.InferenceSession(str(Path(tmp) / MODEL_FILE), providers=["CPUExecutionProvider"])
            ids = np.array([[1, 5, 9, 2, 7]], np.int64) % model.config.get_text_config().vocab_size
            toks, got = ort_greedy(session, ids, TRIAL_TOKENS)
        except Exception as e:  # noqa: BLE001
            return f"onnxruntime cannot run the exported graph ({type(e).__name__}: {first_line(e)[:300]})"
        del session
    with torch.no_grad():
        ref = model(torch.tensor([list(ids[0]) + toks[:-1]])).logits[0].numpy()
    err = float(np.abs(ref - got).max())
    if not err <= LOGIT_TOL:
        return f"the exported graph's logits differ from PyTorch's by {err:.3g} (> {LOGIT_TOL:g}) on a tiny model"
    return ""


def _load(model_dir: Path, trust_remote_code: bool):
    from ..model.loading import load_model

    model = load_model(model_dir, trust_remote_code=trust_remote_code, dtype=torch.float32,
                       on=torch.device("cpu"))  # beside the runtime, on the CPU
    model.config._attn_implementation = "eager"  # traces to plain MatMul/Softmax on every family
    return model


def _export_graph(model, path: Path):
    cfg = model.config.get_text_config()
    n, kvh = cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    names_in, names_out = io_names(n)
    b, s, p = 1, 3, 4  # example shapes; every axis but the head ones is dynamic
    example = (torch.zeros(b, s, dtype=torch.long), torch.ones(b, p + s, dtype=torch.long),
               torch.arange(p, p + s)[None], *[torch.zeros(b, kvh, p, hd) for _ in range(2 * n)])
    batch, seq, past, total = (torch.export.Dim(x) for x in ("batch", "sequence", "past_sequence", "total_sequence"))
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, tuple({0: batch, 2: past} for _ in range(2 * n)))
    # the exporter's registry logs one warning per torchvision operator it skips when torchvision is not
    # installed ("torchvision is not installed. Skipping torchvision::nms"): harmless for a language model
    import logging

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_WithCache(model, n), example, str(path), dynamo=True, dynamic_shapes=shapes,
                          input_names=names_in, output_names=names_out, external_data=True, optimize=True,
                          verbose=False)
    return dict(layers=n, kv_heads=kvh, head_dim=hd)


def genai_config(cfg: dict, dims: dict, gen: dict) -> dict:
    """onnxruntime-genai's config for the exported decoder (its stock generator reads this)."""
    text = cfg.get("text_config", cfg)
    eos = gen.get("eos_token_id", text.get("eos_token_id"))
    eos = [e for e in ([eos] if isinstance(eos, int) else eos or []) if e < text["vocab_size"]] or None
    model = {
        "bos_token_id": text.get("bos_token_id"),
        "eos_token_id": eos,
        "pad_token_id": text.get("pad_token_id") if text.get("pad_token_id") is not None else (eos or [None])[0],
        "context_length": text.get("max_position_embeddings", text.get("n_positions", 2048)),
        "type": text.get("model_type"),
        "vocab_size": text["vocab_size"],
        "decoder": {
            "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
            "filename": MODEL_FILE,
            "head_size": dims["head_dim"],
            "hidden_size": text.get("hidden_size", text.get("n_embd")),
            "num_attention_heads": text.get("num_attention_heads", text.get("n_head")),
            "num_hidden_layers": dims["layers"],
            "num_key_value_heads": dims["kv_heads"],
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                       "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                       "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"},
        },
    }
    return {
        "model": {k: v for k, v in model.items() if v is not None},
        "search": {"do_sample": False, "num_beams": 1, "top_k": 1, "past_present_share_buffer": False,
                   "max_length": text.get("max_position_embeddings", text.get("n_positions", 2048))},
    }


def ort_greedy(session, ids: np.ndarray, n_new: int, eos: list[int] = ()) -> tuple[list[int], np.ndarray]:
    """Greedy generation through an ONNX Runtime session with the cache fed back each step; `eos`
    ids are never chosen (as with transformers' `min_new_tokens`). Returns the new tokens and the
    logits of every position ([len(ids) + n_new - 1, vocab])."""
    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [k for k in inputs if k.startswith("past_key_values.")]
    past = {k: np.zeros((ids.shape[0], inputs[k].shape[1], 0, inputs[k].shape[3]), np.float32) for k in past_names}
    cur, start, toks, logits = ids.astype(np.int64), 0, [], []
    for _ in range(n_new):
        total = start + cur.shape[1]
        outs = session.run(None, {"input_ids": cur, "attention_mask": np.ones((ids.shape[0], total), np.int64),
                                  "position_ids": np.arange(start, total, dtype=np.int64)[None], **past})
        logits.append(outs[0][0])
        past = dict(zip(past_names, outs[1:]))  # present.{i} comes back in past_key_values.{i} order
        last = outs[0][0, -1].copy()
        last[list(eos)] = -np.inf
        toks.append(int(last.argmax()))
        cur, start = np.array([[toks[-1]]], np.int64), total
    return toks, np.concatenate(logits)[: ids.shape[1] + n_new - 1]


def genai_greedy(folder: Path, ids: np.ndarray, n_new: int) -> list[int]:
    """The same generation through onnxruntime-genai's stock generator."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    total = ids.shape[1] + n_new
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids.astype(np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)][ids.shape[1]:]


def verify_onnx(model, folder: Path, inputs, n_steps: int = GEN_TOKENS) -> dict:
    """Compare the ONNX folder against the (float32) PyTorch model on the probe inputs."""
    import onnxruntime as ort

    from ..model.loading import context_length, eos_ids
    from ..verification.verifier import against_reference

    try:
        import onnxruntime_genai  # noqa: F401
        has_genai = True
    except ImportError:
        has_genai = False
    eos, context = eos_ids(model), context_length(model)
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    runs, genai_runs, genai_error = [], [], None
    for label, ids in inputs:
        ids = ids[:, : context - 1]
        n_new = min(n_steps, context - ids.shape[1])  # a tiny test model's context may be shorter
        runs.append((label, ids, *ort_greedy(session, ids.numpy(), n_new, eos)))
        if has_genai and genai_error is None:
            try:
                genai_runs.append(genai_greedy(folder, ids.numpy(), n_new))
            except Exception as e:  # stated: genai does not run every type (gpt2's inputs, olmo2's type)
                genai_error = f"onnxruntime-genai could not run this model: {str(e).strip() or type(e).__name__}"
    del session
    prompts = against_reference(model, runs)  # PyTorch after the runtimes: their thread pools don't overlap
    for p, g in zip(prompts, genai_runs if genai_error is None else []):
        p["genai_tokens_identical"] = g == p["reference"]
    for p in prompts:
        p.pop("reference"), p.pop("top1_agreement")
    worst = max(p["max_abs_logit"] for p in prompts)
    identical = sum(p["tokens_identical"] for p in prompts)
    genai_identical = sum(p.get("genai_tokens_identical", False) for p in prompts)
    failures = []
    if not worst <= LOGIT_TOL:
        failures.append(f"max abs logit difference {worst:.3g} > {LOGIT_TOL:g}")
    if identical < len(prompts):
        failures.append(f"greedy tokens differ on {len(prompts) - identical}/{len(prompts)} prompts")
    if has_genai and genai_error is None and genai_identical < len(prompts):
        failures.append(f"onnxruntime-genai tokens differ on {len(prompts) - genai_identical}/{len(prompts)} prompts")
    return {
        "status": "failed" if failures else "passed",
        "against": "baked PyTorch checkpoint, float32",
        "runtime": f"onnxruntime {ort.__version__}" + (f", onnxruntime-genai {onnxruntime_genai.__version__}" if has_genai else ""),
        "tolerance": {"max_abs_logit": LOGIT_TOL, "greedy_tokens": f"{n_steps} identical"},
        "metrics": {"max_abs_logit": worst, "greedy_identical_prompts": f"{identical}/{len(prompts)}",
                    **({"genai_identical_prompts": genai_error or f"{genai_identical}/{len(prompts)}"}
                       if has_genai else {})},
        "failures": failures,
        "prompts": prompts,
    }


@register
class OnnxExporter(Exporter):
    """A folder (default FOLDER/onnx) with model.onnx, the tokenizer and genai_config.json."""

    name, folder = "onnx", True
    help = "an ONNX folder with KV cache (model.onnx, tokenizer, genai_config.json), verified in onnxruntime"

    def card_use(self, entry: dict) -> list[str]:
        return [f"ONNX (`{entry['path']}/`, optimum's `ORTModelForCausalLM` input names and a "
                "`genai_config.json`): `onnxruntime_genai.Model(\"<folder>/onnx\")`."]

    def serving(self, config: dict, config_changes: dict) -> list[tuple[str, str, str]]:
        why = trial(config, run=False)  # the trial takes seconds: the card states its cached answer
        if why is None:
            return [("ONNX Runtime", "untried", "`bake apply` with `export: [onnx]` first exports a tiny random model "
                                                "of this config and compares it in onnxruntime; `bake export onnx` "
                                                "writes and verifies the real one")]
        if why:
            return [("ONNX Runtime", "no", f"a tiny random model of this config does not export: {why}")]
        return [("ONNX Runtime", "yes", "`bake export onnx` writes and verifies it (onnxruntime, onnxruntime-genai); "
                                        "a tiny random model of this config exported and matched")]

    def check(self, config: dict, model: Path, origin: dict, **given) -> None:
        check(config, "the baked model")

    def default_output(self, folder: Path, name: str, opts: dict) -> Path:
        return folder / "onnx"

    def write(self, folder: Path, out: Path, opts: dict, progress: bool, name: str, trust_remote_code: bool) -> dict:
        model = _load(folder, trust_remote_code)
        if progress:
            print(f"exporting ONNX (torch.onnx, dynamo) from {folder} ...", flush=True)
        try:  # the real export is its own trial: a folder that does not trace gets the tracer's reason
            dims = _export_graph(model, out / MODEL_FILE)
        except Exception as e:  # noqa: BLE001
            raise NotBakeable(f"ONNX export cannot be done for {folder} "
                              f"(model_type={model.config.model_type!r}): {_trace_failure(e)}") from None
        for f in SIDE:
            if (folder / f).is_file():
                shutil.copyfile(folder / f, out / f)
        cfg = json.loads((folder / "config.json").read_text())
        gen_path = folder / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        (out / "genai_config.json").write_text(json.dumps(genai_config(cfg, dims, gen), indent=2) + "\n")
        return {}

    def verify(self, folder: Path, out: Path, opts: dict, written: dict, progress: bool, prompts: list[str] | None,
               trust_remote_code: bool) -> dict:
        from ..model.loading import load_tokenizer, probe_inputs

        model = _load(folder, trust_remote_code)
        tok = load_tokenizer(folder, trust_remote_code=trust_remote_code)
        inputs = probe_inputs(tok, prompts, model.config.get_text_config().vocab_size)
        if progress:
            print(f"verifying ONNX: {GEN_TOKENS} greedy tokens on {len(inputs)} prompts ...", flush=True)
        result = verify_onnx(model, out, inputs)
        (out / "bake_export.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

