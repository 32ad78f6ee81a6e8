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


def load_model(path: Path, *, trust_remote_code: bool, dtype: torch.dtype = torch.float32, moe: bool = False):
    """A causal LM from a local folder, safetensors only (never a pickle), in eval mode. Code shipped
    with the checkpoint runs only with `trust_remote_code` (always passed, so transformers never asks)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # grouped-GEMM expert kernels take no float64: MoE models run their experts in eager loops
    extra = {"experts_implementation": "eager"} if moe else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=True, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, ImportError) as e:
        raise _load_error(e, "model", path, trust_remote_code) from None
    return model.eval()


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


@torch.no_grad()
def reference_greedy(model, ids: torch.Tensor, n_new: int) -> list[int]:
    """`n_new` greedy tokens from a PyTorch model, end-of-sequence suppressed (`min_new_tokens`),
    the reference that exported formats are held to."""
    seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, min_new_tokens=n_new,
                         do_sample=False, pad_token_id=model.generation_config.pad_token_id or 0)
    return seq[0, ids.shape[1]:].tolist()


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
