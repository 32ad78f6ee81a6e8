"""What the SAE kinds share: their recipe fields, the feature directions S, and the split of an SAE
intervention into what bakes exactly and what does not.

Both kinds act at the SAE's hook point (the output of block L for `blocks.L.hook_resid_post`) on
the hidden state X, with S [d, k] the chosen features' decoder rows as unit columns:

    sae_amplify     X' = X + a * ReLU(X S) S^T
    sae_calibrate   X' = X - ReLU(X S) S^T + b * mean(s)      (mean(s): the mean of S's columns)

Each is `gate * ReLU(X S) S^T + constant` (amplify: gate a, no constant; calibrate: gate -1,
constant b * mean(s)). The constant bakes exactly into the hook point's bias slot (where `steer`
bakes). The gated term is a ReLU of the residual stream: no stock weight computes it, so a bake
refuses it unless the recipe opts into a stated replacement, exact for what it is and reported as
a different intervention from the hook version:

- `linearize: decoder`: ReLU(X s_c) is replaced by the constant `activation` (default 1), so the
  gated term becomes the steering vector `gate * activation * sum_c s_c`, added with the constant;
- `linearize: ablate`: the features' span is removed from every residual-stream writer (the `ablate`
  kind on S), the constant added after it;

or into an approximation whose deviation the verification measures:

- `approximate: neurons`: one added MLP unit per feature computes the gated term with a steep SiLU
  gate (`gain`) on the MLP's normalized input, rescaled by an rms estimate (`rms`): bake/kinds/sae_neurons.py.

The hook realization (`bake generate --hooks`, `bake eval --hooks`) is the formula itself.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from pydantic import Field, model_validator

from ..compile.planning import Hook, Op, Step
from ..errors import BakeError, NotBakeable
from .base import Artifact, Float, Int, Kind, StrictModel


class SaeFields(StrictModel):
    """The fields both SAE kinds share."""

    sae: Artifact                       # a SAELens folder, hf:owner/repo[/subfolder][@rev], or {learn: {...}}
    features: list[Union[Int, str]] = Field(min_length=1)  # indices, or words: the feature each word points to most
    linearize: Literal["decoder", "ablate"] | None = None
    activation: Float = Field(default=1.0, allow_inf_nan=False)  # linearize: decoder, what stands in for ReLU(X s_c)
    approximate: Literal["neurons"] | None = None  # the gated term as added MLP units (bake/kinds/sae_neurons.py)
    gain: Float = Field(default=16.0, gt=0, allow_inf_nan=False)  # neurons: SiLU(gain u) / gain stands in for ReLU(u)
    rms: Union[Float, str, None] = None  # neurons: the rms of the MLP's input, or a text file to measure it on

    @model_validator(mode="after")
    def _one_replacement(self):
        if self.linearize is not None and self.approximate is not None:
            raise ValueError(f"linearize: {self.linearize} and approximate: {self.approximate} are two replacements "
                             "of the gated term; choose one")
        if self.approximate == "neurons" and self.rms is None:
            raise ValueError("approximate: neurons needs rms: the typical rms of the residual stream in front of the "
                             "MLP that gets the units (a number), or a text file (one text per line) bake measures "
                             "it on (the median over its tokens)")
        if isinstance(self.rms, (int, float)) and not 0 < self.rms < float("inf"):
            raise ValueError(f"rms: {self.rms} is not a positive number")
        return self


class SaeKind(Kind):
    """What both SAE kinds do; each sets its name, schema, formula (`about`) and the split: the gate
    of the ReLU term and the constant (None, or a function of S)."""

    tag = "sae-steering"
    artifacts = {"sae": "SAE", "rms": "texts the rms is measured on"}  # rms: a number, or a file (its path is resolved)
    learners = {"sae": ("learn_sae", "")}  # sae: {learn: {data: ..., layer: L}} trains one while baking
    coverage = False  # linearized, it bakes where steer (decoder) or ablate (ablate) does: their columns say where
    about = ""
    constant_note = ""

    def gate(self, iv) -> float:
        raise NotImplementedError

    def constant(self, iv, s):
        return None

    def status(self, fam):
        return status(fam, self.constant_note)

    def compile(self, b, idx, iv, where):
        return compile_sae(b, idx, iv, where, self.name, self.gate(iv), lambda s: self.constant(iv, s), self.about)

    def hook_step(self, b, idx, iv, where):
        return hook_sae(b, idx, iv, where, self.name, self.gate(iv), lambda s: self.constant(iv, s), self.about)


def status(fam, extra: str = "") -> tuple[str, str]:
    """`bake arch`'s cell for an SAE kind at a block output: its gated term is hook-only; linearized,
    it bakes where `steer` (decoder) and `ablate` do."""
    from .steer import block_out_status

    steer, why = block_out_status(fam)
    if steer != "exact":
        return "refused", why
    return "linearized", (f"the gated term runs as a hook{extra}; linearize: decoder or ablate bakes exactly; "
                          "approximate: neurons approximates it in a Llama-layout MLP")


def load_sae(b, iv, where: str):
    """The recipe's SAE, checked against the model; its files are recorded as read."""
    from ..artifacts.sae import CFG, WEIGHTS, load

    if not isinstance(iv.sae, str):
        raise BakeError(f"{where}.sae: an inline learn: block must be learned before compiling")
    sae = load(iv.sae, b.recipe.base_dir)
    if sae.d_in != b.family.d:
        raise BakeError(f"{where}.sae: the SAE reads {sae.d_in}-wide activations; the model's hidden size is "
                        f"{b.family.d}: it was trained on another model")
    if not iv.sae.startswith("hf:"):
        for f in (CFG, WEIGHTS):
            b.note_artifact(f"{iv.sae.rstrip('/')}/{f}", "SAE")
    bad = [f for f in iv.features if isinstance(f, int) and not 0 <= f < sae.d_sae]
    if bad:
        raise BakeError(f"{where}.features: {bad} out of range; the SAE has {sae.d_sae} features (0..{sae.d_sae - 1})")
    return sae


def features(b, iv, sae, where: str) -> tuple[list[int], dict]:
    """The recipe's features as indices, and {word: feature} for those given as words: the feature the
    word points to most, argmax_c p(c | w) of bake explain's method (output space; the temperature
    does not change the argmax)."""
    words = [f for f in iv.features if isinstance(f, str)]
    chosen = {}
    if words:
        chosen = _word_features(b, sae, words, where)
    out = [chosen[f] if isinstance(f, str) else f for f in iv.features]
    if len(set(out)) != len(out):
        raise BakeError(f"{where}.features: a feature is listed twice: {iv.features} -> {out}")
    return out, chosen


def _word_features(b, sae, words: list[str], where: str) -> dict[str, int]:
    from ..model.loading import load_tokenizer
    from ..learn import explain as ex

    tok = load_tokenizer(b.ckpt.path, trust_remote_code=b.recipe.trust_remote_code)
    if tok is None:
        raise BakeError(f"{where}.features: words need the model's tokenizer; the checkpoint has none")
    try:  # the output embedding and the final norm, read from the checkpoint: not the whole model
        emb, fvecs = ex.feature_vectors(b.ckpt, b.family, sae.W_dec, "output", b.recipe.trust_remote_code)
    except ValueError as e:
        raise BakeError(f"{where}.features: {e}; give feature indices") from None
    out = {}
    for w in words:
        ids = tok.encode(" " + w.strip(), add_special_tokens=False)
        if not w.strip() or not ids:
            raise BakeError(f"{where}.features: {w!r} is not a word")
        out[w] = int(torch.argmax(ex.conditionals(ex.word_vectors(emb, [ids]), fvecs).row(0)))
    return out


def site(b, sae, where: str):
    """(block, site, hook module, bias slot or a str: why there is none) of the SAE's hook point."""
    from .steer import site_slots
    from ..artifacts.sae import hook_site

    try:
        layer, where_site = hook_site(sae.hook_name, b.family.n_layers)
    except BakeError as e:
        raise BakeError(f"{where}.sae: {e}") from None
    found = site_slots(b.family, where_site)
    if where_site == "block_out":
        module = b.family.block(layer)
    elif isinstance(found, str):
        raise NotBakeable(f"{where}: the SAE reads {sae.hook_name}, and bake finds no module of {b.family.name} "
                          f"whose output is that hook point ({found})")
    else:
        module = found[0][layer].module
    return layer, where_site, module, found


def _resolve(b, iv, where: str):
    """(SAE, feature indices, {word: feature}, S, site(...)): what both realizations start from."""
    sae = load_sae(b, iv, where)
    feats, from_words = features(b, iv, sae, where)
    return sae, feats, from_words, sae.directions(feats), site(b, sae, where)


def compile_sae(b, idx: int, iv, where: str, kind: str, gate: float, constant, about: str) -> Step:
    """The bake: the constant exactly, the gated term refused or linearized as the recipe declares.
    `constant(S)` -> [d] or None; `about` names the formula for messages."""
    sae, feats, from_words, s, (layer, where_site, _, found) = _resolve(b, iv, where)
    named = ", ".join(f"{w} -> {c}" for w, c in from_words.items())
    const = constant(s)
    if iv.linearize is None and iv.approximate is None:
        part = (" Its constant part (b * mean(s)) alone would bake exactly as a bias." if const is not None else "")
        raise NotBakeable(
            f"{where}: {kind} computes {about}; its gated term ReLU(X S) S^T is a ReLU of the residual stream, which "
            f"no weight of a stock checkpoint computes, so it cannot be baked.{part} Run it as a hook (`bake generate "
            f"--hooks`, `bake eval --hooks`), or opt into a replacement that bakes exactly for what it is: "
            f"`linearize: decoder` (a steering vector along the features' summed decoder rows) or `linearize: ablate` "
            f"(remove the features' directions from every residual writer); or `approximate: neurons` (added MLP "
            f"units, with the measured deviation in the report).")
    if isinstance(found, str) and (const is not None or iv.linearize == "decoder"):
        raise NotBakeable(f"{where}: the hook point {sae.hook_name} has no bias slot in a {b.family.name} checkpoint "
                          f"({found}); run {kind} as a hook")
    step = Step(idx, kind, iv.approximate is None, "")
    vec = const
    extra = {}
    if iv.approximate == "neurons":
        if where_site != "block_out":
            raise NotBakeable(f"{where}: approximate: neurons adds MLP units that write at a block's output; the SAE "
                              f"reads {sae.hook_name} ({where_site}). Use linearize: decoder or ablate, or a hook")
        from .sae_neurons import compile_neurons

        extra = compile_neurons(b, idx, iv, where, step, s, gate, layer)
        rho = extra["rho"]
        what = (f"approximated (neurons): {s.shape[1]} MLP unit(s) in block {layer} compute {gate:g} * SiLU(gain * u) "
                f"/ gain * s_c, u = {rho:.4g} * (h . s_c) / rms(h) (h: the stream before the MLP; gain {extra['gain']:g}, "
                f"so the gate is within {extra['gate_error_bound']:.3g} of ReLU; rms {rho:.4g} "
                + ("given" if "given" in extra["rms"] else f"the median over {extra['rms']['tokens']} tokens of "
                   f"{extra['rms']['data']}, p10-p90 {extra['rms']['p10']:.4g}-{extra['rms']['p90']:.4g}") + ")")
    elif iv.linearize == "decoder":
        lin = gate * iv.activation * s.sum(dim=1)
        vec = lin if vec is None else vec + lin
        what = (f"linearized (decoder): ReLU(X s_c) replaced by {iv.activation:g}, i.e. add "
                f"{gate * iv.activation:g} * sum of {s.shape[1]} decoder direction(s)")
    else:
        _ablate(b, idx, s, where, step)
        what = f"linearized (ablate): remove the span of {s.shape[1]} feature direction(s) from every residual writer"
    if vec is not None:
        _add(b, idx, vec, layer, found, step)
    if extra:  # what the verification measures the units against: the hook version itself
        step.hooks = _formula(idx, b.family.block(layer), s, gate, const)
    step.summary = (f"{what}" + (f" (features {feats}" + (f": {named}" if named else "") + ")")
                    + (" + the constant b * mean(s)" if const is not None else "")
                    + f" at {sae.hook_name} (block {layer}, {where_site}); "
                    + ("the verification measures its deviation from the hook version " + about if extra else
                       f"a different intervention from the hook version {about}, which `bake eval --hooks` measures"))
    step.details = {"features": feats, "hook_name": sae.hook_name, "linearize": iv.linearize,
                    "approximate": iv.approximate, "hook_version": about, **({"neurons": extra} if extra else {}),
                    **({"from_words": from_words} if from_words else {})}
    return step


def hook_sae(b, idx: int, iv, where: str, kind: str, gate: float, constant, about: str) -> Step:
    """The hook realization: X + gate * ReLU(X S) S^T (+ constant) on the hook point's module."""
    sae, feats, from_words, s, (layer, _, module, _) = _resolve(b, iv, where)
    named = ", ".join(f"{w} -> {c}" for w, c in from_words.items())
    step = Step(idx, kind, False, f"hook: {about} at {sae.hook_name} ({module}), features {feats}"
                + (f" ({named})" if named else ""),
                details={"features": feats, "hook_name": sae.hook_name, "block": layer})
    step.hooks = _formula(idx, module, s, gate, constant(s))
    return step


def _formula(idx: int, module: str, s, gate: float, const) -> list[Hook]:
    """X + gate * ReLU(X S) S^T (+ const) on `module`'s output."""
    hooks = [Hook(idx, module, "sae_gate", s, (torch.tensor(float(gate), dtype=torch.float64),))]
    return hooks + ([Hook(idx, module, "add", const)] if const is not None else [])


def _add(b, idx, vec, layer, found, step):
    """Add vec at the hook point's bias slot of `layer` (steer's slots; a stock flag may create the bias)."""
    slots, flags, creates, how = found
    if creates and not any(k in b.tensor_names() for k in creates):
        b.create_zeros(creates, flags, how)
    slot = slots[layer]
    b.writes_also(slot.module, slot.tensors)
    v = vec / slot.coef
    for name, axis in slot.tensors:
        b.add_op(name, Op(idx, "add", v, axis), step)
    step.hooks.append(Hook(idx, slot.module, "add", v))


def _ablate(b, idx, s, where, step):
    """Project the span of S out of every residual writer (the ablate kind's exact fold and hooks)."""
    from ..compile import fold
    from .ablate import AblateKind

    fam = b.family
    bad = [w for w in fam.writers() if not w.exact]
    if fam.broken or bad:
        raise NotBakeable(f"{where}: linearize: ablate needs writers that bake orthogonalizes exactly; "
                          f"{fam.broken or bad[0].module + ' has a norm after it'}. Use linearize: decoder, or a hook")
    q = fold.orthonormal(s.T)[0] if s.shape[1] > 1 else s[:, 0]
    for w in [*fam.embeds, *(w for blk in fam.blocks for w in blk)]:
        AblateKind._project(b, idx, b.writes_of(w), q, 1.0, step)
        step.hooks.append(Hook(idx, w.module, "project_out", q))
