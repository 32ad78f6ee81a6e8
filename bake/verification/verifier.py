"""Verification: the hooked original against the baked checkpoint reloaded from disk.

Both run on the same probe inputs in `verify.compute_dtype` (float64 by default when both models
are held in memory: then the difference measures what the bake changed, the rounding of the folded
weights, and not the float32 arithmetic noise of two different summation orders; float32 shows
what a runtime sees). Reported: max abs and max relative logit difference, top-1 agreement,
KL(hooked || baked), greedy-generation agreement, and the per-layer hidden-state difference with
the first layer that diverges.

A model pair that does not fit in memory is streamed (`streaming.load_streamed`: accelerate's
big-model hooks read each module's weights from the safetensors files when it runs and drop them
after), so memory holds about one module. All probe prompts then go through in one right-padded
batch (one read of each model), teacher-forced only: greedy generation would read both models
once per token.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..compile.hooks import hooked
from ..compile.planning import Plan
from ..model.loading import (eos_ids, fits_in_memory, greedy, greedy_choice, greedy_many, load_model, load_tokenizer,
                             probe_inputs, reference_greedy)
from ..files import interrupt
from ..model.device import describe, for_dtype, to_model
from .result import Verification

DEFAULTS = {  # dtype -> (max_abs_logit, min_top1)
    "float32": (1e-4, 0.99),
    "bfloat16": (None, 0.99),
    "float16": (None, 0.99),
}
HIDDEN_RTOL = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 5e-3}  # by checkpoint dtype


@torch.no_grad()
def _prompt(model, ids: torch.Tensor):
    """Logits and hidden states of one prompt, alone."""
    out = model(input_ids=to_model(model, ids), output_hidden_states=True)
    return out.logits[0].double().cpu(), [h[0].double().cpu() for h in out.hidden_states]


def _reference_tokens(model, inputs, firsts: list[int], gen_tokens: int, pad_id: int) -> list[list[int]]:
    """The hooked original's greedy tokens for every prompt, decoded as one batch; decoded one prompt
    at a time instead when the batch's first choices are not the ones each prompt makes alone (a
    family whose padding or masking the batch gets wrong) or its logits are not finite."""
    ids = [i for _, i in inputs]
    if gen_tokens and len(ids) > 1:
        try:
            gens = greedy_many(model, ids, gen_tokens, pad_id)
            if [g[0] for g in gens] == firsts:
                return gens
        except (RuntimeError, ValueError, TypeError, IndexError):  # a model whose forward refuses the batch
            pass
    return [greedy(model, i, gen_tokens)[1] for i in ids]


@torch.no_grad()
def _follow(model, ids: torch.Tensor, gen: list[int]):
    """The baked model on the reference's path, in one forward pass over the prompt and the
    reference's greedy tokens: its logits and hidden states on the prompt, and its greedy choice at
    each of the reference's steps. It generates what the reference generates exactly when every
    choice is the reference's token, which no second decoding loop is needed to tell."""
    seq = torch.cat([ids, torch.tensor([gen[:-1]], dtype=ids.dtype)], 1) if gen else ids
    out = model(input_ids=to_model(model, seq), output_hidden_states=True)
    n = ids.shape[1]
    choices = greedy_choice(out.logits[0, n - 1:], eos_ids(model)).tolist() if gen else []
    return out.logits[0, :n].double().cpu(), [h[0][..., :n, :].double().cpu() for h in out.hidden_states], choices


@torch.no_grad()
def _run_batch(model, ids: list[torch.Tensor], pad_id: int) -> list[tuple]:
    """(logits, hidden, []) per prompt from one forward pass over the prompts right-padded into one
    batch, without an attention mask: a causal model's real positions never see the padding after
    them, so each prompt's positions compute what they compute alone."""
    n = max(i.shape[1] for i in ids)
    batch = torch.full((len(ids), n), pad_id, dtype=ids[0].dtype)
    for k, i in enumerate(ids):
        batch[k, : i.shape[1]] = i[0]
    out = model(input_ids=to_model(model, batch), output_hidden_states=True)
    return [(out.logits[k, : i.shape[1]].double().cpu(), [h[k, : i.shape[1]].double().cpu() for h in out.hidden_states], [])
            for k, i in enumerate(ids)]


def against_reference(model, runs) -> list[dict]:
    """Per prompt, a runtime's greedy tokens and logits against the PyTorch model's: `runs` holds
    (label, ids [1, T], tokens, logits of every position of ids + tokens[:-1]). The reference's
    logits are taken on the runtime's own sequence (teacher-forced), so one early flip does not make
    every later token differ. Call it after the runtime is done: two thread
    pools spinning on the same cores slow each other badly."""
    import numpy as np

    rows = []
    for label, ids, toks, logits in runs:
        seq = reference_greedy(model, ids, len(toks))
        with torch.no_grad():
            forced = torch.cat([ids[0], torch.tensor(toks[:-1], dtype=ids.dtype)])[None]
            ref = model(input_ids=to_model(model, forced)).logits[0].cpu().numpy()
        same = sum(a == b for a, b in zip(toks, seq))
        n_flips, flip_margin = flips(ref, logits)
        rows.append({"prompt": label, "max_abs_logit": float(np.abs(ref - logits).max()),
                     "max_abs_reference_logit": float(np.abs(ref).max()), "tokens_identical": toks == seq,
                     "token_agreement": same / len(toks),
                     "top1_agreement": float((ref.argmax(-1) == logits.argmax(-1)).mean()),
                     "top1_flips": n_flips, "flip_margin_max": flip_margin, "reference": seq})
    return rows


def flips(ref, got) -> tuple[int, float | None]:
    """Positions where `got`'s top-1 token differs from `ref`'s (logits [T, vocab]), and the largest
    reference top-two margin among them (None when there is none). A flip at margin m needs logit
    errors summing to more than m, so with every logit within e of the reference only near ties
    (m < 2e) can flip: runtimes are judged on their logit error, and flips are reported with their
    margins to show they were near ties."""
    import numpy as np

    top2 = np.sort(ref, -1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    differ = ref.argmax(-1) != got.argmax(-1)
    return int(differ.sum()), (float(margin[differ].max()) if differ.any() else None)


def compare(ref, baked) -> dict:
    """Metrics of baked (logits, hidden, generated) against the hooked reference."""
    (lr, hr, gr), (lb, hb, gb) = ref, baked
    diff = (lr - lb).abs()
    lp_r, lp_b = torch.log_softmax(lr, -1), torch.log_softmax(lb, -1)
    kl = (lp_r.exp() * (lp_r - lp_b)).sum(-1).clamp_min(0.0)  # >= 0; rounding alone gave -3.5e-16
    n = min(len(gr), len(gb))
    return {
        "max_abs_logit": diff.max().item(),
        "max_rel_logit": (diff.max() / lr.abs().max().clamp_min(1e-30)).item(),
        "top1_agreement": (lr.argmax(-1) == lb.argmax(-1)).double().mean().item(),
        "kl_mean": kl.mean().item(),
        "kl_max": kl.max().item(),
        "greedy_agreement": (sum(a == b for a, b in zip(gr, gb)) / n) if n else None,
        "greedy_identical": (gr == gb) if n else None,
        "hidden_max_abs": [(a - b).abs().max().item() for a, b in zip(hr, hb)],
        "hidden_scale": [a.abs().max().item() for a in hr],
        "tokens": lr.shape[0],
    }


def _worst(values) -> float:
    """max() that lets a NaN through (Python's max may skip it, depending on order)."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def pair_bytes(plan: Plan, compute_dtype: str) -> int:
    """Bytes of the two whole models of the end-to-end pass in `compute_dtype`."""
    n = sum(math.prod(s) for s in plan.checkpoint.shapes.values())
    return 2 * n * torch.finfo(getattr(torch, compute_dtype)).bits // 8


def fits(plan: Plan, compute_dtype: str) -> bool:
    """Do the two whole models of the end-to-end pass fit in 60% of the memory available now?"""
    return fits_in_memory(pair_bytes(plan, compute_dtype))


def choose(plan: Plan, mode: str, compute_dtype: str) -> tuple[str, str]:
    """(mode, compute dtype) for an asked mode and dtype. `auto` mode: `full` when both models fit in
    memory in the compute dtype (float64 for `auto`), else `streamed`. `auto` dtype: float64 in
    memory; streamed, float64 for a float32 output and float32 for a 16-bit one, as the module-local
    checks use (float32's noise is 10^4 times below a 16-bit tolerance, and the largest module then
    takes half the memory)."""
    from .localcheck import dtype_for

    if mode == "auto":
        mode = "full" if fits(plan, "float64" if compute_dtype == "auto" else compute_dtype) else "streamed"
    if compute_dtype == "auto":
        compute_dtype = str(dtype_for(plan)).removeprefix("torch.") if mode == "streamed" else "float64"
    return mode, compute_dtype


def verify(plan: Plan, baked_dir: Path, progress: bool = True, mode: str | None = None) -> Verification:
    """Verify the baked checkpoint; return the verification section of the report.

    `mode` (else the recipe's `verify.mode`): `full` runs the hooked original and the baked model
    end to end in memory, then the module-local checks on random and recorded inputs; `streamed`
    runs the same end-to-end pass reading each module's weights from disk when it runs (memory:
    about one module); `local` runs only the module-local checks; `auto` is `full` when both models
    fit in memory, else `streamed`."""
    from . import localcheck

    vcfg = plan.recipe.verify
    asked = mode or vcfg.mode
    mode, dtype = choose(plan, asked, vcfg.compute_dtype)
    if mode == "local":
        local = localcheck.check(plan, Path(baked_dir))
        return Verification(
            status=local["status"] if plan.exact or local["status"] == "failed" else "approximate",
            mode="local", mode_asked=asked, exact=plan.exact, compute_dtype=local["compute_dtype"],
            tolerance={"max_abs_logit": None, "min_top1": None, "hidden_state_rel": local["tolerance_rel"]},
            metrics={}, failures=[f"local: {f}" for f in local["failures"]], local=local, prompts=[])
    recorded: dict = {}
    result = _end_to_end(plan, baked_dir, progress, recorded, dtype, streamed=mode == "streamed")
    local = localcheck.check(plan, Path(baked_dir), recorded)
    result["failures"] += [f"local: {f}" for f in local["failures"]]
    if local["failures"]:
        result["status"] = "failed"
    return Verification(**result, mode=mode, mode_asked=asked, local=local)


def _end_to_end(plan: Plan, baked_dir: Path, progress: bool, recorded: dict, dtype: str, streamed: bool) -> dict:
    """The hooked original against the baked checkpoint reloaded from disk, on the probe prompts
    (the inputs of the hooked modules on the first forward pass are kept in `recorded`)."""
    from .localcheck import record  # localcheck imports this module's tolerances

    logging.getLogger("transformers").setLevel(logging.ERROR)
    vcfg = plan.recipe.verify
    tol_abs, tol_top1 = DEFAULTS[plan.dtype]
    explicit_abs = vcfg.max_abs_logit is not None
    tol_abs = vcfg.max_abs_logit if explicit_abs else tol_abs
    tol_top1 = vcfg.min_top1 if vcfg.min_top1 is not None else tol_top1
    trust = plan.recipe.trust_remote_code

    compute = getattr(torch, dtype)
    dev, fallback = for_dtype(compute)
    if streamed:
        from ..model.streaming import load_streamed

        models = [load_streamed(path, plan.family.key_rules, trust_remote_code=trust, dtype=compute, moe=plan.family.moe)
                  for path in (plan.checkpoint.path, baked_dir)]
    else:
        models = [load_model(path, trust_remote_code=trust, dtype=compute, moe=plan.family.moe)
                  for path in (plan.checkpoint.path, baked_dir)]
    ref_model, baked_model = models
    tok = load_tokenizer(baked_dir, trust_remote_code=trust)
    inputs = probe_inputs(tok, vcfg.prompts, ref_model.config.get_text_config().vocab_size)
    pad = (tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0)
    names = sorted({h.module for h in plan.hooks})
    if streamed:  # one batch: each model's weights are read once; the bar counts blocks read
        n = plan.family.n_layers
        bar = tqdm(total=2 * n, desc="verifying (streamed)", unit="block", disable=not progress)
        blocks = [dict(m.named_modules()).get(plan.family.block(i)) for m in models for i in range(n)]

        def tick(*_):  # returns None: what a forward hook returns replaces the block's output, and
            bar.update(1)  # tqdm's update returns True whenever it redraws the bar

        ticks = [b.register_forward_hook(tick) for b in blocks if b is not None]
        try:
            with hooked(ref_model, plan.hooks), record(ref_model, names, recorded):
                refs = _run_batch(ref_model, [ids for _, ids in inputs], pad)
            interrupt.check()
            gots = _run_batch(baked_model, [ids for _, ids in inputs], pad)
        finally:
            for t in ticks:
                t.remove()
            bar.close()
        per_prompt = [{"prompt": label, **compare(r, g)} for (label, _), r, g in zip(inputs, refs, gots)]
    else:
        bar = tqdm(total=2 * len(inputs) + 1, desc="verifying", unit="pass", disable=not progress)
        refs = []
        for label, ids in inputs:
            with hooked(ref_model, plan.hooks), record(ref_model, names if not recorded else [], recorded):
                refs.append(_prompt(ref_model, ids))
            bar.update(1)
            interrupt.check()
        eos = eos_ids(ref_model)
        with hooked(ref_model, plan.hooks):
            gens = _reference_tokens(ref_model, inputs, [int(greedy_choice(r[0][-1], eos)) for r in refs],
                                     vcfg.generate_tokens, pad)
        bar.update(1)
        per_prompt = []
        for (label, ids), ref, gen in zip(inputs, refs, gens):
            per_prompt.append({"prompt": label, **compare((*ref, gen), _follow(baked_model, ids, gen))})
            bar.update(1)
            interrupt.check()
        bar.close()
    del models, ref_model, baked_model

    rtol = HIDDEN_RTOL[plan.dtype]
    n_h = len(per_prompt[0]["hidden_max_abs"])
    layer_abs = [max(p["hidden_max_abs"][k] for p in per_prompt) for k in range(n_h)]
    layer_rel = [max(p["hidden_max_abs"][k] / max(p["hidden_scale"][k], 1e-30) for p in per_prompt) for k in range(n_h)]
    first = next((k for k, r in enumerate(layer_rel) if r > rtol), None)
    greedy = [p["greedy_agreement"] for p in per_prompt if p["greedy_agreement"] is not None]
    tokens = sum(p["tokens"] for p in per_prompt)
    metrics = {
        "max_abs_logit": _worst(p["max_abs_logit"] for p in per_prompt),
        "max_rel_logit": _worst(p["max_rel_logit"] for p in per_prompt),
        "top1_agreement": sum(p["top1_agreement"] * p["tokens"] for p in per_prompt) / tokens,
        "kl_mean": sum(p["kl_mean"] * p["tokens"] for p in per_prompt) / tokens,
        "kl_max": max(p["kl_max"] for p in per_prompt),
        "greedy_agreement": (sum(greedy) / len(greedy)) if greedy else None,
        "greedy_identical_prompts": (f"{sum(bool(p['greedy_identical']) for p in per_prompt)}/{len(per_prompt)}"
                                     if greedy else "not run"),
        "first_divergent_hidden_state": first,
    }
    failures = []
    check_tol = plan.exact or explicit_abs
    if check_tol and tol_abs is not None and not metrics["max_abs_logit"] <= tol_abs:  # NaN fails too
        failures.append(f"max abs logit difference {metrics['max_abs_logit']:.3g} > tolerance {tol_abs:g}")
    if not math.isfinite(metrics["max_abs_logit"]):
        failures.append("non-finite logits in the baked or hooked model")
    elif (plan.exact or vcfg.min_top1 is not None) and not metrics["top1_agreement"] >= tol_top1:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {tol_top1:g}")
    if failures:
        where = (f"hidden state {first} ({'embeddings' if first == 0 else f'output of block {first - 1}'})"
                 if first is not None else "no hidden state over tolerance (only the logits)")
        failures.append(f"first divergence: {where}")
    status = "failed" if failures else ("passed" if plan.exact else "approximate")
    for p in per_prompt:
        p.pop("hidden_max_abs"), p.pop("hidden_scale")
    return {
        "status": status,
        "exact": plan.exact,
        "compute_dtype": dtype,
        "device": "cpu" if streamed else describe(dev) + (f" ({fallback})" if fallback else ""),
        "tolerance": {"max_abs_logit": tol_abs if check_tol else None, "min_top1": tol_top1,
                      "hidden_state_rel": rtol},
        "metrics": metrics,
        "failures": failures,
        "hidden_state_max_abs": layer_abs,
        "hidden_state_max_rel": layer_rel,
        "generate_tokens": 0 if streamed else vcfg.generate_tokens,
        "prompts": per_prompt,
    }
