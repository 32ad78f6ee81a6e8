"""Refusal direction (Arditi et al. 2024): difference in means, chosen on a validation split.

Candidates are the harmful-minus-harmless mean of block outputs at each layer and each
post-instruction token position (the template tokens after the user's text). Each candidate is
ablated with hooks (removed from every residual writer); its refusal score on harmful prompts
(log-odds of the refusal tokens at the first response position) and its KL on harmless prompts
(next-token distribution at the last position) are measured. Candidates with KL above a
threshold or in the last 20% of layers are discarded; the lowest refusal score wins.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..compile.hooks import hooked
from ..compile.planning import Hook
from ..errors import BakeError
from ..families import Adapter
from .collect import Runner, shared

REFUSAL_STARTS = ("I", "Sorry", "As", "Unfortunately", "No")


def ablation_hooks(family: Adapter, r: torch.Tensor) -> list[Hook]:
    """The hook realization of `ablate` with `layers: all` for direction r (unit)."""
    return [Hook(0, w.module, "project_out", r) for w in family.writers()]


def post_instruction_length(runner: Runner) -> int:
    """How many template tokens follow the user's text in a formatted chat prompt."""
    marker = "XYZZY"
    text = runner.chat(marker)
    if marker not in text:
        raise BakeError("the chat template drops the instruction text")
    suffix = text.split(marker, 1)[1]
    return max(1, len(runner.tok(suffix, add_special_tokens=False)["input_ids"]))


def refusal_token_ids(tok) -> list[int]:
    ids = []
    for word in REFUSAL_STARTS:
        t = tok(word, add_special_tokens=False)["input_ids"]
        if t and t[0] not in ids:
            ids.append(t[0])
    return ids


def last_logprobs(runner: Runner, prompts: list[str], hooks=(), batch_size: int = 16) -> torch.Tensor:
    """log-softmax of the next-token logits after each (formatted) prompt -> [N, vocab] (data parallel
    under `accelerate launch`)."""
    return shared(prompts, lambda part, _: _last_logprobs(runner, part, hooks, batch_size))


@torch.no_grad()
def _last_logprobs(runner: Runner, prompts: list[str], hooks=(), batch_size: int = 16) -> torch.Tensor:
    side = runner.tok.padding_side
    runner.tok.padding_side = "left"
    out = []
    try:
        with hooked(runner.model, list(hooks)):
            for enc in runner.batches(prompts, batch_size, None, "scoring", False):
                logits = runner.model(**enc).logits[:, -1].double()
                out.append(torch.log_softmax(logits, -1).cpu())
    finally:
        runner.tok.padding_side = side
    return torch.cat(out)


def refusal_score(logprobs: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Mean log-odds that the response starts with a refusal token."""
    p = logprobs[:, token_ids].exp().sum(-1).clamp(1e-12, 1 - 1e-12)
    return (p.log() - (1 - p).log()).mean()


def kl(base: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Mean KL(base || other) between rows of log-probabilities."""
    return (base.exp() * (base - other)).sum(-1).mean()


@torch.no_grad()
def candidate_directions(runner: Runner, harmful: list[str], harmless: list[str], progress: bool = True):
    """[positions, layers, d] harmful-minus-harmless means at the post-instruction positions."""
    k = post_instruction_length(runner)
    layers = list(range(runner.n_layers))
    hf = [runner.chat(t) for t in harmful]
    hl = [runner.chat(t) for t in harmless]
    positions = list(range(-k, 0))
    a = runner.residuals(hf, layers, position=positions, progress=progress).mean(0)
    b = runner.residuals(hl, layers, position=positions, progress=progress).mean(0)
    return a - b, positions


def select(runner: Runner, cands: torch.Tensor, positions: list[int], harmful_val: list[str],
           harmless_val: list[str], kl_max: float = 0.1, prune_last: float = 0.2, layers=None,
           progress: bool = True) -> tuple[dict, list[dict]]:
    """Score every candidate; returns (best, table rows)."""
    hf = [runner.chat(t) for t in harmful_val]
    hl = [runner.chat(t) for t in harmless_val]
    ids = refusal_token_ids(runner.tok)
    base_hl = last_logprobs(runner, hl)
    base_score = refusal_score(last_logprobs(runner, hf), ids).item()
    limit = int(runner.n_layers * (1 - prune_last))
    layers = [i for i in (layers if layers is not None else range(runner.n_layers)) if i < limit]
    rows = []
    todo = [(pi, li) for pi in range(len(positions)) for li in layers]
    for pi, li in tqdm(todo, desc="candidates", disable=not progress):
        r = cands[pi, li]
        r = r / r.norm()
        hooks = ablation_hooks(runner.family, r)
        score = refusal_score(last_logprobs(runner, hf, hooks), ids).item()
        div = kl(base_hl, last_logprobs(runner, hl, hooks)).item()
        rows.append({"position": positions[pi], "layer": li, "refusal_score": score, "kl_harmless": div,
                     "kept": div <= kl_max})
    kept = [r for r in rows if r["kept"]]
    if not kept:
        raise BakeError(f"every candidate has KL > {kl_max} on harmless prompts; raise --kl-max")
    best = min(kept, key=lambda r: r["refusal_score"])
    best = dict(best, baseline_refusal_score=base_score,
                direction=cands[positions.index(best["position"]), best["layer"]])
    return best, rows


def project_harmless(direction: torch.Tensor, harmless_mean: torch.Tensor) -> torch.Tensor:
    """The `projected` variant: remove the harmless-mean component from the direction."""
    u = harmless_mean / harmless_mean.norm()
    return direction - (direction @ u) * u
