"""Loading models and tokenizers from local folders, the probe prompts, and memory checks: what
verification, learning and the exporters share (so learning does not import the verifier)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BakeError, first_line

PROMPTS_CHAT = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How do I bake bread at home?",
    "Explain photosynthesis to a child in two sentences.",
]
PROMPTS_PLAIN = [
    "The quick brown fox",
    "Once upon a time, in a small village by the river,",
    "def fibonacci(n):\n",
    "In 1905, Albert Einstein published",
]

def _load_error(e: Exception, what: str, path: Path, trust: bool) -> BakeError:
    text = first_line(e) or type(e).__name__
    if not trust and ("trust_remote_code" in str(e) or "custom code" in str(e)):
        return BakeError(f"{path}: the {what} needs code shipped with it (an auto_map in its config); bake never "
                         "runs a checkpoint's code unless the command line says --trust-remote-code")
    return BakeError(f"{path}: cannot load the {what} with transformers ({type(e).__name__}: {text}); "
                     "is the folder complete and uncorrupted?")


def load_model(path: Path, *, trust_remote_code: bool, dtype: torch.dtype = torch.float32, moe: bool = False,
               on: torch.device | None = None):
    """A causal LM from a local folder, safetensors only (never a pickle), in eval mode, on the device of
    this command's forward passes (`device.for_dtype`; `on` names another), or spread over the
    command's memory budget (`device.spread`). Code shipped with the
    checkpoint runs only with `trust_remote_code` (always passed, so transformers never asks)."""
    from .device import for_dtype, spread

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # grouped-GEMM expert kernels take no float64: MoE models run their experts in eager loops
    extra = {"experts_implementation": "eager"} if moe else {}
    if on is None:  # under a memory budget, accelerate spreads the model over its devices, then disk
        extra.update(spread())
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=True, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, ImportError) as e:
        raise _load_error(e, "model", path, trust_remote_code) from None
    if "device_map" in extra:  # spread by accelerate: its hooks move each module's data where it runs
        return model.eval()
    return model.to(on or for_dtype(dtype)[0]).eval()


def load_tokenizer(path: Path, *, trust_remote_code: bool):
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:  # a corrupt tokenizer.json raises whatever the tokenizers library raises
        raise _load_error(e, "tokenizer", path, trust_remote_code) from None


def probe_inputs(tokenizer, prompts: list[str] | None, vocab_size: int) -> list[tuple[str, torch.Tensor]]:
    """(label, input_ids [1, T]) pairs: the recipe's prompts or the built-in chat + plain set."""
    if tokenizer is None:  # tiny test models have no tokenizer: fixed pseudo-random ids
        g = torch.Generator().manual_seed(0)
        return [(f"random ids (len {n})", torch.randint(0, vocab_size, (1, n), generator=g)) for n in (7, 12, 19)]
    out = []
    chat = prompts is None and getattr(tokenizer, "chat_template", None)
    for text in prompts or (PROMPTS_CHAT + PROMPTS_PLAIN):
        if chat and text in PROMPTS_CHAT:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]
            out.append((f"[chat] {text}", ids))
        else:
            out.append((text, tokenizer(text, return_tensors="pt")["input_ids"]))
    return out


def eos_ids(model) -> list[int]:
    """The model's end-of-sequence ids (those inside its vocabulary)."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return [e for e in eos if e < model.config.get_text_config().vocab_size]


def greedy_choice(logits: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """argmax over the last axis with the end-of-sequence ids masked out (what `min_new_tokens` does)."""
    if eos:
        logits = logits.clone()
        logits[..., eos] = float("-inf")
    return logits.argmax(-1)


def _cache_arg(model) -> str:
    """The keyword a model's forward takes its KV cache by (`cache` since transformers 5.2x)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy(model, ids: torch.Tensor, n_new: int, **first):
    """`n_new` greedy tokens of one prompt [1, T], decoded with the KV cache and no logits processor but
    the end-of-sequence mask: (the output of the first forward pass over `ids`, called with `first`
    keyword arguments such as output_hidden_states, and the tokens)."""
    from .device import to_model

    eos, name = eos_ids(model), _cache_arg(model)
    ids = to_model(model, ids)
    out = model(input_ids=ids, use_cache=bool(n_new), **first)
    head, tokens = out, []
    while len(tokens) < n_new:
        tokens.append(int(greedy_choice(out.logits[0, -1], eos)))
        if len(tokens) < n_new:
            cache = getattr(out, name, None)  # None: a model that returns no KV cache (GPT-1, RecurrentGemma)
            if cache is None:
                out = model(input_ids=torch.cat([ids, torch.tensor([tokens], dtype=ids.dtype, device=ids.device)], 1),
                            use_cache=False)
            else:
                out = model(input_ids=torch.tensor([[tokens[-1]]], dtype=ids.dtype, device=ids.device),
                            use_cache=True, **{name: cache})
    return head, tokens


@torch.no_grad()
def greedy_many(model, prompts: list[torch.Tensor], n_new: int, pad_id: int) -> list[list[int]]:
    """`n_new` greedy tokens for each prompt ([1, T] each), decoded together: left-padded into one
    batch with its attention mask and positions, so each step reads the weights once for every
    prompt (one prompt at a time, decoding is bound by reading the weights). End of sequence
    masked as in `greedy`."""
    eos, name = eos_ids(model), _cache_arg(model)
    n = max(p.shape[1] for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=prompts[0].dtype)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for k, p in enumerate(prompts):
        ids[k, n - p.shape[1]:], mask[k, n - p.shape[1]:] = p[0], 1
    from .device import to_model

    ids, mask = to_model(model, ids), to_model(model, mask)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    tokens = []
    while len(tokens) < n_new:
        tokens.append(greedy_choice(out.logits[:, -1], eos))
        if len(tokens) < n_new:
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype, device=mask.device)], 1)
            cache = getattr(out, name, None)  # None: a model that returns no KV cache
            if cache is None:
                ids = torch.cat([ids, tokens[-1][:, None].to(ids.dtype)], 1)
                pos = (mask.cumsum(-1) - 1).clamp_min(0)
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                continue
            pos = pos[:, -1:] + 1
            out = model(input_ids=tokens[-1][:, None].to(ids.dtype), attention_mask=mask, position_ids=pos,
                        use_cache=True, **{name: cache})
    return torch.stack(tokens, 1).tolist() if tokens else [[] for _ in prompts]


@torch.no_grad()
def reference_greedy(model, ids: torch.Tensor, n_new: int) -> list[int]:
    """`n_new` greedy tokens from a PyTorch model, end-of-sequence suppressed, the reference that
    exported formats are held to."""
    return greedy(model, ids, n_new)[1]


def context_length(model) -> int:
    text = model.config.get_text_config()
    return getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or 1 << 30


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_in_memory(need: int, max_memory: int | None = None) -> bool:
    """Do `need` bytes fit in `max_memory`, or when none is given, in 60% of the memory available now?"""
    return need <= (max_memory if max_memory is not None else 0.6 * available_memory())
