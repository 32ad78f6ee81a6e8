"""Text generation from a baked folder, any model, or a recipe's model with its hooks attached
(`bake generate`, through the generation `bake eval` uses). Greedy by default; sampling is seeded
per prompt, so a reply does not depend on the prompts before it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.loading import load_model, load_tokenizer
from ..recipe.schema import is_recipe
from .subjects import Subject
from .subjects import generate as subjects_generate


def generate(model, tokenizer, prompts: list[str], *, hooks=(), max_new_tokens: int = 64, sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, chat: bool = True) -> list[dict]:
    """[{prompt, reply, tokens}] for each prompt; `hooks`: planning.Hooks attached while generating.
    The replies of `bake eval`'s generation (bake.evaluation.subjects.generate), one prompt a batch,
    so prompt i samples with seed + i whatever the prompts before it."""
    s = Subject("generate", model, tokenizer, list(hooks))
    replies = subjects_generate(s, prompts, chat=chat, max_new_tokens=max_new_tokens, sample=sample, seed=seed,
                                temperature=temperature, top_p=top_p, batch_size=1)
    return [{"prompt": p, "reply": tokenizer.decode(r[0], skip_special_tokens=True), "tokens": r[0]}
            for p, r in zip(prompts, replies)]


def subject(source: str | Path, hooks: bool | None = None, trust_remote_code: bool = False, progress: bool = True):
    """(model, tokenizer, hooks, description) for `source`: a recipe (its model with the recipe's
    hooks, or without them when `hooks` is False), or a model (a baked folder, a folder, .gguf,
    Hub id or builtin:NAME) as it is."""
    from ..errors import BakeError
    from ..model.source import resolve_model

    path = Path(source)
    if not is_recipe(path):
        if hooks is not None:  # --hooks or --base: both are about a recipe's hooks
            raise BakeError(f"--{'hooks' if hooks else 'base'} needs a recipe (recipe.yaml) to take the hooks from; "
                            f"{source} is a model, which runs as it is: drop the option")
        ckpt = resolve_model(str(source), Path.cwd())
        hook_list, what = [], f"{ckpt.spec} as it is"
    elif hooks is False:
        from ..recipe.schema import load

        r = load(path)
        ckpt = resolve_model(r.model, r.base_dir)
        hook_list, what = [], f"{ckpt.spec} (the recipe's model, no hooks)"
    else:
        from ..planner import plan

        p = plan(path, progress=progress, trust_remote_code=trust_remote_code, hooks_only=True)
        ckpt, hook_list = p.checkpoint, p.hooks
        what = f"{ckpt.spec} with the hooks of {path.name} ({p.hook_count()})"
    model = load_model(ckpt.path, trust_remote_code=trust_remote_code, dtype=torch.float32)
    tok = load_tokenizer(ckpt.path, trust_remote_code=trust_remote_code)
    if tok is None:
        raise BakeError(f"{ckpt.path} has no tokenizer; `bake generate` needs one to read prompts")
    return model, tok, hook_list, what
