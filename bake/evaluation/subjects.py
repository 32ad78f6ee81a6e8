"""The models a `bake eval` compares, one in memory at a time, and the two ways suites run them:
batched generation (greedy or seeded sampling) and teacher-forced log-probabilities.

A subject is the base model, a recipe's model with the recipe's hooks (`hooked`), or a baked
model (`baked`: a folder, or a recipe baked into a temporary folder). Each suite runs the same
prompts, batches and seeds on every subject, so base, hooked and baked differ only in the model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..compile.hooks import hooked
from ..errors import BakeError
from ..model.device import to_model
from ..model.loading import load_model, load_tokenizer
from ..recipe.schema import is_recipe


def prompt_ids(tokenizer, text: str, chat: bool) -> torch.Tensor:
    """[1, T] ids of `text`, through the chat template when `chat` and the tokenizer has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)["input_ids"]
    return tokenizer(text, return_tensors="pt")["input_ids"]



@dataclass
class Subject:
    role: str          # base | hooked | baked
    model: torch.nn.Module
    tokenizer: object
    hooks: list = field(default_factory=list)
    description: str = ""

    def context(self):
        return hooked(self.model, self.hooks)


def base_of(target: str | Path) -> str:
    """The model a target was made from: a recipe's `model`, or the one a baked folder's recipe.yaml
    names (builtin:NAME, a Hub id, or a local folder relative to the baked folder)."""
    from ..recipe.schema import load

    rpath = Path(target) if is_recipe(target) else Path(target) / "recipe.yaml"
    if rpath.is_file():
        r = load(rpath)
        return str(r.path(r.model)) if not r.model.startswith("builtin:") and r.path(r.model).exists() else r.model
    raise BakeError(f"{target}: not a recipe or a folder written by `bake apply`; say what to compare it with "
                    "(--against MODEL)")


def _load(path: Path, role: str, hooks: list, what: str, trust: bool) -> Subject:
    model = load_model(path, trust_remote_code=trust, dtype=torch.float32)
    tok = load_tokenizer(path, trust_remote_code=trust)
    if tok is None:
        raise BakeError(f"{path} has no tokenizer; `bake eval` needs one to read prompts")
    return Subject(role, model.eval(), tok, hooks, what)


def load_model_subject(source: str | Path, role: str, trust: bool = False) -> Subject:
    """A model as it is: a folder, .gguf, Hub id or builtin:NAME."""
    from ..model.source import resolve_model

    ckpt = resolve_model(str(source), Path.cwd())
    return _load(ckpt.path, role, [], f"{ckpt.spec}", trust)


def hooked_subject(plan, trust: bool = False) -> Subject:
    return _load(plan.checkpoint.path, "hooked", plan.hooks, f"{plan.checkpoint.spec} + hooks of the recipe "
                 f"({plan.hook_count()})", trust)


@contextmanager
def baked_subject(plan, trust: bool = False, progress: bool = True):
    """The plan baked into a temporary folder (rewritten, not verified: `bake apply` verifies) and
    loaded; the folder is removed afterwards."""
    from ..write.rewrite import rewrite

    from ..files.tempdirs import temp_dir

    with temp_dir("eval") as tmp:  # under bake's temp root: what a killed run leaves, the next one sweeps
        rewrite(plan, Path(tmp), progress=progress)
        yield _load(Path(tmp), "baked", [], f"{plan.checkpoint.spec} baked with the recipe", trust)


def _eos(model, tok) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


def check_generation_memory(model, rows: int, length: int, k: int) -> None:
    """Refuse, before generating, a batch whose logits and KV cache cannot fit in the memory available
    (rows sequences of `length` tokens at once; `k` replies per prompt)."""
    from ..model.loading import available_memory

    cfg = model.config.get_text_config()
    width = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
    per_row = 3 * 4 * int(getattr(cfg, "vocab_size", 0) or 0) + 2 * width * length * int(
        getattr(cfg, "num_hidden_layers", 0) or 0) * int(getattr(cfg, "hidden_size", 0) or 0)
    need, have = rows * per_row, available_memory()
    if need > have:
        what = f"--samples {k}: " if k > 1 else ""
        raise BakeError(f"{what}generating {rows:,} sequences of {length:,} tokens at once needs about "
                        f"{need / 2**30:,.1f} GiB (logits and KV cache), {have / 2**30:,.1f} GiB available; "
                        "ask for fewer samples or tokens")


def generate(s: Subject, prompts: list[str], *, chat: bool, max_new_tokens: int, k: int = 1, sample: bool = False,
             seed: int = 0, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 16,
             progress: bool = False, desc: str = "generating") -> list[list[list[int]]]:
    """k replies per prompt, each the list of its new token ids up to (not including) the first end
    of sequence. Prompts are left-padded in batches of `batch_size`; batch b samples with seed
    `seed + b`, so every subject draws from the same random stream on the same batches."""
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    tok, model = s.tokenizer, s.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = _eos(model, tok)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=pad,
                           eos_token_id=sorted(eos) or None, num_return_sequences=k,
                           **({"temperature": temperature, "top_p": top_p, "top_k": 0} if sample else {}))
    ids = [prompt_ids(tok, p, chat)[0] for p in prompts]
    out: list[list[list[int]]] = []
    batches = range(0, len(ids), batch_size)
    if ids:
        check_generation_memory(model, min(batch_size, len(ids)) * k, max(map(len, ids)) + max_new_tokens, k)
    with s.context(), torch.no_grad():
        for b, start in enumerate(tqdm(batches, desc=f"{desc} ({s.role})", unit="batch", disable=not progress)):
            chunk = ids[start:start + batch_size]
            width = max(len(x) for x in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, x in enumerate(chunk):
                input_ids[i, width - len(x):] = x
                mask[i, width - len(x):] = 1
            torch.manual_seed(seed + b)  # (on CUDA too: manual_seed seeds every device)
            seq = model.generate(input_ids=to_model(model, input_ids), attention_mask=to_model(model, mask),
                                 generation_config=cfg)[:, width:]
            for i in range(len(chunk)):
                replies = []
                for row in seq[i * k:(i + 1) * k].tolist():
                    cut = next((j for j, t in enumerate(row) if t in eos), len(row))
                    replies.append(row[:cut])
                out.append(replies)
    return out


def log_probs(s: Subject, ids: torch.Tensor) -> torch.Tensor:
    """log-softmax of the logits [T, vocab] for one sequence of ids [T] (float32)."""
    with s.context(), torch.no_grad():
        logits = s.model(input_ids=to_model(s.model, ids[None])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def versions() -> dict:
    import platform

    import transformers

    from .. import __version__

    return {"bake": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}

