"""Architecture adapters: each supported family described as data.

A `Family` says where the residual-stream writers are (module names to hook, tensor names to
fold, and which axis of each tensor is the model's hidden axis), how the tensors are laid out,
whether a norm sits between a writer and the residual add, and how a steering bias can be given
a slot that stock loaders read. `resolve(config)` picks the family from `config.json` alone; no
weights are loaded. `FAMILIES` is the one registration point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from .errors import BakeError

OUT_IN = "out_in"  # torch.nn.Linear: weight [out, in]
IN_OUT = "in_out"  # GPT-2 Conv1D: weight [in, out]


@dataclass(frozen=True)
class Tensor:
    """A tensor pattern (regex, `{i}` = block index) and the axis that holds the hidden size."""

    pattern: str
    axis: int


@dataclass(frozen=True)
class Writer:
    """A module that writes the residual stream: hook `module`, fold `tensors`.

    `post_norm` names the norm that sits between the module and the residual add (Gemma 3), in
    which case the hook goes on the norm's output and a fold is not exact.
    """

    module: str
    tensors: tuple[Tensor, ...]
    post_norm: str | None = None


@dataclass(frozen=True)
class BiasSlot:
    """How to give the MLP output projection a bias that a stock loader reads.

    `config` is merged into config.json; every tensor in `creates` that the checkpoint lacks is
    written as explicit zeros (shape = the weight's output size). `blocked(config)` returns a
    reason when the change would not be exactly equivalent (e.g. a sliding window Llama lacks).
    """

    config: dict
    creates: tuple[str, ...]
    note: str
    blocked: Callable[[dict], str | None] = lambda config: None


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    layout: str
    embed: Writer
    attn: Writer
    mlp: Writer
    extra_embeds: tuple[Writer, ...] = ()
    block: str = "model.layers.{i}"  # the decoder block whose output is the residual stream after block i
    lm_head: str = "lm_head.weight"
    bias_slot: BiasSlot | None = None  # None: no slot; steering refused unless the bias exists
    native_mlp_bias: bool = False  # the MLP output projection always has a bias (GPT-2)
    norm_offset: float = 0.0  # effective norm scale = offset + weight (Gemma: 1 + w)
    moe: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def post_norm(self) -> bool:
        return self.attn.post_norm is not None or self.mlp.post_norm is not None

    def mlp_bias_name(self, i: int) -> str:
        """The name of block i's MLP output bias."""
        return f"{self.mlp.module.format(i=i)}.bias"


def _linear(module: str, layout: str) -> tuple[Tensor, ...]:
    """Weight and bias of a projection whose output is the hidden size."""
    esc = re.escape(module).replace(r"\{i\}", "{i}")
    w_axis = 0 if layout == OUT_IN else 1
    return (Tensor(esc + r"\.weight", w_axis), Tensor(esc + r"\.bias", 0))


def _embedding(module: str) -> Writer:
    return Writer(module, (Tensor(re.escape(module) + r"\.weight", 1),))


def _dense(name, model_types, *, attn_out="model.layers.{i}.self_attn.o_proj",
           mlp_out="model.layers.{i}.mlp.down_proj", **kw) -> Family:
    return Family(
        name=name,
        model_types=model_types,
        layout=OUT_IN,
        embed=_embedding("model.embed_tokens"),
        attn=Writer(attn_out, _linear(attn_out, OUT_IN)),
        mlp=Writer(mlp_out, _linear(mlp_out, OUT_IN)),
        **kw,
    )


_LLAMA_MLP_BIASES = tuple(f"model.layers.{{i}}.mlp.{p}.bias" for p in ("gate_proj", "up_proj", "down_proj"))


def _needs_no_window(config: dict) -> str | None:
    windowed = config.get("sliding_window") is not None and config.get("use_sliding_window", True) is not False
    if windowed:
        return (f"its sliding_window={config.get('sliding_window')} has no Llama equivalent, so it cannot be "
                "re-declared as Llama to gain an MLP bias")
    return None


def _gemma_post(module: str, norm: str) -> Writer:
    return Writer(module, _linear(module, OUT_IN), post_norm=norm)


FAMILIES: tuple[Family, ...] = (
    _dense(
        "llama", ("llama",),
        bias_slot=BiasSlot({"mlp_bias": True}, _LLAMA_MLP_BIASES,
                           "set mlp_bias: true (also creates gate/up biases, written as zeros)"),
    ),
    _dense(
        "mistral", ("mistral",),
        bias_slot=BiasSlot({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "mlp_bias": True},
                           _LLAMA_MLP_BIASES,
                           "re-declared as Llama with mlp_bias: true when sliding_window is null (then Mistral "
                           "and Llama compute the same function); refused with a sliding window",
                           blocked=_needs_no_window),
    ),
    _dense(
        "qwen2", ("qwen2",),
        bias_slot=BiasSlot({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                            "attention_bias": True, "mlp_bias": True},
                           ("model.layers.{i}.self_attn.o_proj.bias",) + _LLAMA_MLP_BIASES,
                           "re-declared as Llama with attention_bias and mlp_bias (Qwen2 is Llama with q/k/v "
                           "biases; the o_proj and MLP biases Llama adds are written as zeros); refused when "
                           "use_sliding_window is true",
                           blocked=_needs_no_window),
    ),
    _dense(
        "qwen3", ("qwen3",),
        notes=("Qwen3 normalizes q and k per head; no stock family with an MLP bias does, so steering has no slot",),
    ),
    Family(
        name="gemma3",
        model_types=("gemma3_text",),
        layout=OUT_IN,
        embed=_embedding("model.embed_tokens"),
        attn=_gemma_post("model.layers.{i}.self_attn.o_proj", "model.layers.{i}.post_attention_layernorm"),
        mlp=_gemma_post("model.layers.{i}.mlp.down_proj", "model.layers.{i}.post_feedforward_layernorm"),
        norm_offset=1.0,
        notes=("post-norms sit between each projection and the residual add",),
    ),
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layout=IN_OUT,
        embed=_embedding("transformer.wte"),
        extra_embeds=(_embedding("transformer.wpe"),),
        attn=Writer("transformer.h.{i}.attn.c_proj", _linear("transformer.h.{i}.attn.c_proj", IN_OUT)),
        mlp=Writer("transformer.h.{i}.mlp.c_proj", _linear("transformer.h.{i}.mlp.c_proj", IN_OUT)),
        native_mlp_bias=True,
        block="transformer.h.{i}",
    ),
    Family(
        name="mixtral",
        model_types=("mixtral",),
        layout=OUT_IN,
        embed=_embedding("model.embed_tokens"),
        attn=Writer("model.layers.{i}.self_attn.o_proj", _linear("model.layers.{i}.self_attn.o_proj", OUT_IN)),
        # the MoE block's output is the MLP write; every expert's down projection folds.
        # Checkpoints hold either per-expert `w2` [d, inter] or a fused `down_proj` [E, d, inter].
        mlp=Writer("model.layers.{i}.mlp", (
            Tensor(r"model\.layers\.{i}\.block_sparse_moe\.experts\.\d+\.w2\.weight", 0),
            Tensor(r"model\.layers\.{i}\.mlp\.experts\.down_proj", 1),
        )),
        moe=True,
        notes=("sparse MoE: experts have no bias slot, so steering is refused",),
    ),
)


def writers(fam: Family, n_layers: int, blocks="all") -> list[tuple[Writer, int | None]]:
    """Residual writers of `blocks` ("all" adds the embeddings): (writer, block index or None)."""
    out = [(w, None) for w in (fam.embed,) + fam.extra_embeds] if blocks == "all" else []
    return out + [(w, i) for i in (range(n_layers) if blocks == "all" else blocks) for w in (fam.attn, fam.mlp)]


def hook_module(w: Writer, i: int | None) -> str:
    """Where the hook of writer `w` in block `i` goes: after its post-norm when it has one."""
    if i is None:
        return w.module
    return (w.post_norm or w.module).format(i=i)


# config.json keys that bake and transformers read as sizes or flags: a wrong type is refused here,
# with the key named, instead of failing somewhere inside a model constructor
CONFIG_SIZES = ("num_hidden_layers", "n_layer", "hidden_size", "n_embd", "intermediate_size", "num_attention_heads",
                "n_head", "num_key_value_heads", "vocab_size", "max_position_embeddings", "n_positions",
                "num_local_experts", "num_experts_per_tok")
CONFIG_OPTIONAL_SIZES = ("head_dim", "sliding_window", "n_inner")  # may be null
CONFIG_FLAGS = ("tie_word_embeddings", "mlp_bias", "attention_bias")


def check_config(config: dict) -> None:
    """Refuse a config.json whose sizes are not positive integers or whose flags are not booleans."""
    def size(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 31

    bad = [f"{k}={config[k]!r} (expected a positive integer)" for k in CONFIG_SIZES if k in config and not size(config[k])]
    bad += [f"{k}={config[k]!r} (expected a positive integer or null)" for k in CONFIG_OPTIONAL_SIZES
            if config.get(k) is not None and not size(config[k])]
    bad += [f"{k}={config[k]!r} (expected true or false)" for k in CONFIG_FLAGS
            if k in config and not isinstance(config[k], bool)]
    if bad:
        raise BakeError(f"config.json: {'; '.join(bad)}; the config does not describe this checkpoint")


def resolve(config: dict) -> Family:
    """The family of a checkpoint, from its config.json (a dict)."""
    mt = config.get("model_type")
    check_config(config)
    for fam in FAMILIES:
        if mt in fam.model_types:
            return fam
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise BakeError(f"unknown model family: model_type={mt!r} (architectures={config.get('architectures')}); "
                    f"bake supports {supported}")


def num_layers(config: dict) -> int:
    for key in ("num_hidden_layers", "n_layer"):
        if key in config:
            return int(config[key])
    raise BakeError("config.json has no num_hidden_layers / n_layer")


def hidden_size(config: dict) -> int:
    for key in ("hidden_size", "n_embd"):
        if key in config:
            return int(config[key])
    raise BakeError("config.json has no hidden_size / n_embd")


def tied(config: dict) -> bool:
    return bool(config.get("tie_word_embeddings", True))


def match_tensors(tensor: Tensor, names, i: int | None = None) -> list[str]:
    """Names in `names` (checkpoint keys) that match a tensor pattern for block `i`."""
    pat = tensor.pattern.replace("{i}", str(i)) if i is not None else tensor.pattern
    rx = re.compile(pat + r"\Z")
    return [n for n in names if rx.match(n)]


def steer_slot(fam: Family, config: dict, names) -> tuple[bool, str]:
    """Can a constant be added to block outputs exactly?  (ok, how or why not)."""
    if fam.post_norm:
        return False, ("a norm sits between the MLP output projection and the residual add, so no bias "
                       "adds a constant to the block output; run it as a hook")
    bias = fam.mlp_bias_name(0)
    if bias in names:
        return True, "adds scale*v to the existing MLP output bias"
    if fam.bias_slot is None:
        why = fam.notes[0] if fam.notes else f"{fam.name} has no MLP output bias and no stock flag that adds one"
        return False, f"{why}; run it as a hook"
    blocked = fam.bias_slot.blocked(config)
    if blocked:
        return False, blocked + "; run it as a hook, or remove the window first"
    return True, fam.bias_slot.note


def exactness(fam: Family, config: dict | None = None, names=()) -> dict[str, str]:
    """One line per kind: how it bakes on this family (exact / approximate / refused)."""
    units = "weight columns (Conv1D)" if fam.layout == IN_OUT else "weight rows"
    out = {"aura": f"exact: scales the module's output units ({units} and bias)"}
    if fam.post_norm:
        out["ablate"] = ("approximate only (`approximate: true`): writers are orthogonalized against r*g, "
                         "g = the post-norm's scale; the deviation is measured")
    else:
        extra = " (experts' down projections)" if fam.moe else ""
        out["ablate"] = "exact: orthogonalizes every residual writer" + extra + "; unties tied embeddings"
    if config is None:
        if fam.post_norm:
            out["steer"] = "refused: no bias slot before the residual add (post-norm)"
        elif fam.native_mlp_bias:
            out["steer"] = "exact: adds to the existing MLP output bias"
        elif fam.bias_slot is not None:
            out["steer"] = "exact: " + fam.bias_slot.note
        else:
            out["steer"] = "refused: " + (fam.notes[0] if fam.notes else "no MLP output bias")
    else:
        ok, how = steer_slot(fam, config, names)
        out["steer"] = ("exact: " if ok else "refused: ") + how
    return out
