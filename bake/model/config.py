"""config.json helpers: the sizes bake reads, checked before any model code sees them.

What bake knows about an architecture (residual writers, tensors, slots) is derived per
checkpoint in `bake.families`; this module only validates and reads the config.
"""

from __future__ import annotations

import re

from ..errors import BakeError

# config.json keys that bake and transformers read as sizes or flags: a wrong type is refused here,
# with the key named, instead of failing somewhere inside a model constructor
CONFIG_SIZES = ("num_hidden_layers", "n_layer", "hidden_size", "n_embd", "num_attention_heads", "n_head", "vocab_size")
# may be null (several config classes default them to None and derive them)
CONFIG_OPTIONAL_SIZES = ("head_dim", "sliding_window", "n_inner", "intermediate_size", "num_key_value_heads",
                         "max_position_embeddings", "n_positions", "num_local_experts", "num_experts_per_tok")
CONFIG_PER_LAYER_SIZES = ("intermediate_size",)  # or a list of them, one per layer
CONFIG_FLAGS = ("tie_word_embeddings", "mlp_bias", "attention_bias")


def check_config(config: dict) -> None:
    """Refuse a config.json whose sizes are not positive integers or whose flags are not booleans."""
    def size(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 31

    bad = [f"{k}={config[k]!r} (expected a positive integer)" for k in CONFIG_SIZES if k in config and not size(config[k])]
    def per_layer(v):  # Gemma 3n: one intermediate size per layer
        return isinstance(v, list) and len(v) == config.get("num_hidden_layers") and all(map(size, v))

    bad += [f"{k}={config[k]!r} (expected a positive integer, 0 or null)" for k in CONFIG_OPTIONAL_SIZES
            if config.get(k) not in (None, 0) and not size(config[k])
            and not (k in CONFIG_PER_LAYER_SIZES and per_layer(config[k]))]
    bad += [f"{k}={config[k]!r} (expected true or false)" for k in CONFIG_FLAGS
            if k in config and not isinstance(config[k], bool)]
    sub = config.get("text_config")
    if isinstance(sub, dict) and sub is not config:
        check_config(sub)
    if bad:
        raise BakeError(f"config.json: {'; '.join(bad)}; the config does not describe this checkpoint")


def text(config: dict) -> dict:
    """The language model's config: `text_config` of a multimodal wrapper, else the config itself."""
    sub = config.get("text_config")
    return sub if isinstance(sub, dict) and sub else config


def num_layers(config: dict) -> int:
    config = text(config)
    for key in ("num_hidden_layers", "n_layer"):
        if key in config:
            return int(config[key])
    raise BakeError("config.json has no num_hidden_layers / n_layer")


def hidden_size(config: dict) -> int:
    config = text(config)
    for key in ("hidden_size", "n_embd"):
        if key in config:
            return int(config[key])
    raise BakeError("config.json has no hidden_size / n_embd")


def tied(config: dict) -> bool:
    return bool(text(config).get("tie_word_embeddings", config.get("tie_word_embeddings", True)))




MAX_LAYERS = 10_000  # beyond any model; a larger count is a corrupt config (and would build for hours)
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")


def check_layers(config: dict, keys) -> None:
    """Refuse a config whose layer count the weights cannot hold, before any model is built from it
    (a million layers in config.json would build a million meta layers). The weights may hold more
    layers than the config counts (DeepSeek's multi-token-prediction layer), never fewer."""
    t = text(config)
    name = next((k for k in ("num_hidden_layers", "n_layer") if isinstance(t.get(k), int)), None)
    if name is None:
        return
    n = t[name]
    found = {int(m.group(1)) for k in keys for m in [_LAYER_INDEX.search(k)] if m}
    stored = max(found) + 1 if found else None
    if n > MAX_LAYERS or (stored is not None and n > stored):
        held = f"the weights hold {stored} layers" if stored is not None else "no model has that many"
        raise BakeError(f"config.json: {name}={n}, but {held}; the config does not describe this checkpoint")


def size_keys(config: dict) -> dict:
    """The config's integer sizes (of the text model), by name."""
    t = text(config)
    return {k: v for k, v in t.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}


def mismatch_message(config: dict, name: str, by_config: tuple, stored: tuple) -> str:
    """The error for a parameter whose shape by the config differs from the checkpoint's, naming the
    config keys that make that shape."""
    sizes = size_keys(config)
    wrong = [d for d, e in zip(by_config, stored) if d != e] if len(by_config) == len(stored) else list(by_config)
    keys = [k for k, v in sizes.items() if v in wrong and k not in ("bos_token_id", "eos_token_id", "pad_token_id")]
    if not keys and re.search(r"attn|attention", name):
        keys = [k for k in ("num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size") if k in text(config)]
    said = ", ".join(f"{k}={text(config).get(k)}" for k in keys) or "its sizes"
    return (f"config.json disagrees with the weights: {name} is {tuple(stored)} in the checkpoint but "
            f"{tuple(by_config)} by the config ({said}); the config does not describe this checkpoint")
