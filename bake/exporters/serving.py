"""Which stock runtimes serve a (baked) checkpoint unchanged, per runtime, family and kind.

What the exporters can decide is asked of them (llama.cpp's converter registry, the ONNX export
check). What can be neither run nor derived here (vLLM and SGLang need a GPU, and none of this
project's machines has one with a package registry) is hand-written below, each fact with the
source it was read from; such rows say "untested here".
"""

from __future__ import annotations


# (runtime, model_type, created config flag) -> fact. Read from vllm/model_executor/models/llama.py
# (LlamaMLP: bias=getattr(config, "mlp_bias", False) on gate_up_proj and down_proj) and
# sglang/srt/models/llama.py (LlamaMLP: bias=False; the weight loader skips unknown `.bias` names).
FACTS = {
    ("vllm", "llama", "mlp_bias"): ("yes (untested here)", "vLLM's Llama reads `mlp_bias` and loads the gate/up/down "
                                    "biases, which bake writes (zeros for gate/up), and keeps lm_head untied unless "
                                    "`tie_word_embeddings`"),
    ("sglang", "llama", "mlp_bias"): ("NO", "SGLang's Llama MLP is built with bias=False and its loader skips the "
                                      "unknown `.bias` tensors without an error: the steering vector would be "
                                      "silently dropped"),
}


def _flags(config_changes: dict) -> list[str]:
    return [k for k, v in config_changes.items() if v is True and "bias" in k]


def notes(config: dict, config_changes: dict | None = None) -> list[tuple[str, str, str]]:
    """[(runtime, serves it?, why)] for the checkpoint whose config.json is `config` (after the bake:
    `config_changes` are the flags bake set, e.g. {"mlp_bias": True})."""
    from .base import EXPORTERS, formats

    changes = config_changes or {}
    arch = (config.get("architectures") or ["?"])[0]
    mt = config.get("model_type")
    rows = [("transformers", "yes", f"the stock {arch} class, no custom code (every bake is reloaded from disk "
                                    "with it and verified)")]
    for fmt in formats():  # each exporter speaks for its runtime
        rows += EXPORTERS[fmt].serving(config, changes)
    flags = _flags(changes)
    for runtime in ("vllm", "sglang"):
        fact = next((FACTS[(runtime, mt, f)] for f in flags if (runtime, mt, f) in FACTS), None)
        name = {"vllm": "vLLM", "sglang": "SGLang"}[runtime]
        if fact:
            rows.append((name, *fact))
        elif flags:
            rows.append((name, "unknown (untested here)", f"bake set {', '.join(flags)}; check that {name}'s {arch} "
                                                         "builds those biases before serving it there"))
        else:
            rows.append((name, "likely (untested here)", f"no new tensors or flags: the checkpoint has {arch}'s own "
                                                        f"layout, which {name} serves if it supports {arch}"))
    return rows
