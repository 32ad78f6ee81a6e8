"""`approximate: neurons`: the SAE kinds' gated term compiled into added units of the stock MLP.

The hook adds `coef * ReLU(X s_c) s_c` per feature c at block L's output X. A Llama-layout MLP
computes `down(SiLU(gate(x)) * up(x))` on `x = g * h / rms(h)` (its RMSNorm, weight g, of the
residual stream h after attention), so one added unit per feature with

    gate row   gain * rho * s_c / g         (gate bias 0)
    up row     0, up bias 1 / gain
    down column coef * s_c

adds `coef * SiLU(gain * u) / gain * s_c`, u = rho * (h . s_c) / rms(h). That is the hook's term up to
three stated differences, all measured by the verification (the hooked original against the baked
model): SiLU(gain u) / gain for ReLU(u) (at most 0.2785 / gain apart, in the residual stream's
units, and closer the larger |u|); the constant `rho` for the per-token rms(h); and h, the stream
before block L's MLP, for X, the stream after it. The other blocks get the same number of units with
zero weights (one `intermediate_size` for all blocks), which add exactly zero. The MLP biases come
from Llama's `mlp_bias` flag, written as zeros where the checkpoint has none.
"""

from __future__ import annotations

import math

import torch

from ..compile.planning import Op
from ..errors import BakeError, NotBakeable

GATE_ERROR = 0.2785  # max over u of |SiLU(u) - ReLU(u)| (at u = -1.278): SiLU(gain u) / gain is within GATE_ERROR / gain


def layout(b, layer: int, where: str) -> dict:
    """The Llama MLP names of every block ({gate, up, down, norm} templates with `#` for the block) after
    checking that the bake can add units there; refused with the reason otherwise."""
    fam = b.family
    cfg = {**b.config, **b.family.steer_config}
    mt = cfg.get("model_type")
    why = None
    if fam.moe:
        why = "its MLPs are routed experts"
    elif mt != "llama":
        why = f"it is a {fam.name} checkpoint that bake cannot re-declare as Llama (model_type {mt!r})"
    elif cfg.get("hidden_act", "silu") != "silu":
        why = f"its MLP activation is {cfg.get('hidden_act')!r}, not SiLU"
    elif not isinstance(cfg.get("intermediate_size"), int):
        why = "its intermediate_size is not one number for all blocks"
    names = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj", "norm": "post_attention_layernorm"}
    tmpl = {k: f"{fam.blocks_path}.#.{v}" for k, v in names.items()}
    if why is None:
        missing = [t.replace("#", str(i)) + ".weight" for i in range(fam.n_layers) for t in tmpl.values()
                   if b.key(t.replace("#", str(i)) + ".weight") is None]
        if missing:
            why = f"it has no {missing[0]}"
    if why is None:
        mlp = next((w for w in fam.blocks[layer] if w.module == f"{fam.blocks_path}.{layer}.mlp"), None)
        if mlp is None or not mlp.exact:
            why = f"block {layer}'s MLP output does not add to the residual stream as it is (a norm sits after it)"
    if why is None and not cfg.get("mlp_bias"):
        why = "it has no stock flag that gives its MLP the biases the units need"
    if why is not None:
        raise NotBakeable(f"{where}: approximate: neurons adds units to a Llama-layout MLP (gate_proj, up_proj, "
                          f"down_proj with SiLU, an RMSNorm in front, biases through mlp_bias), and {why}. Use "
                          "`linearize: decoder` or `linearize: ablate`, or run it as a hook")
    return tmpl


def measure_rms(b, layer: int, norm: str, data: str, where: str) -> dict:
    """The rms of the MLP norm's input at block `layer` over the real tokens of `data` (texts, one per
    line or a data file `bake learn` reads), the first token of each left out: {median, p10, p90, tokens}.
    Measured on the source model: interventions listed before this one are not applied."""
    from ..learn.collect import Runner
    from ..learn.data import load

    path = b.recipe.path(data)
    if not path.is_file():
        raise BakeError(f"{where}.rms: {data!r} is neither a number nor a file ({path} does not exist)")
    b.note_artifact(data, "texts the rms is measured on")
    texts = load(path).texts
    try:
        runner = Runner(b.ckpt, trust_remote_code=b.recipe.trust_remote_code)
    except BakeError as e:
        raise BakeError(f"{where}.rms: measuring it needs the model's tokenizer ({e}); give rms as a number") from None
    h, _ = runner.token_states(texts, layer, input_of=norm, progress=False)
    if not len(h):
        raise BakeError(f"{where}.rms: {data} has no token after the first of each text to measure on")
    r = h.double().pow(2).mean(-1).sqrt()
    q = torch.quantile(r, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"median": float(q[1]), "p10": float(q[0]), "p90": float(q[2]), "tokens": int(r.numel()), "data": data}


def compile_neurons(b, idx: int, iv, where: str, step, s: torch.Tensor, coef: float, layer: int) -> dict:
    """Add the units (one per column of S [d, m]) to block `layer`'s MLP and zero units to every other
    block's; returns the figures for the report."""
    tmpl = layout(b, layer, where)
    block = lambda t, i: t.replace("#", str(i))  # noqa: E731
    if isinstance(iv.rms, str):
        rms = measure_rms(b, layer, block(tmpl["norm"], layer), iv.rms, where)
        rho = rms["median"]
    else:
        rho, rms = float(iv.rms), {"given": float(iv.rms)}
    if not (math.isfinite(rho) and rho > 0):
        raise BakeError(f"{where}.rms: {rho} is not a positive number")
    g = b.ckpt.read(b.key(block(tmpl["norm"], layer) + ".weight")).to(torch.float64)
    if (g.abs() < 1e-6 * g.abs().max()).any():
        raise NotBakeable(f"{where}: block {layer}'s MLP norm scales some hidden units to zero, so its MLP cannot "
                          "read the feature activations there; use linearize: decoder or ablate, or a hook")
    d, m = s.shape
    if not b.config.get("mlp_bias"):
        b.create_zeros(b.family.steer_creates, b.family.steer_config, b.family.steer_how)
    gain = float(iv.gain)
    for i in range(b.family.n_layers):
        live = i == layer
        gate_rows = (gain * rho * s / g.unsqueeze(1)).T if live else torch.zeros(m, d, dtype=torch.float64)
        down_cols = coef * s if live else torch.zeros(d, m, dtype=torch.float64)
        up_bias = torch.full((m,), 1.0 / gain if live else 0.0, dtype=torch.float64)
        for name, vec, axis in ((block(tmpl["gate"], i) + ".weight", gate_rows, 0),
                                (block(tmpl["gate"], i) + ".bias", torch.zeros(m, dtype=torch.float64), 0),
                                (block(tmpl["up"], i) + ".weight", torch.zeros(m, d, dtype=torch.float64), 0),
                                (block(tmpl["up"], i) + ".bias", up_bias, 0),
                                (block(tmpl["down"], i) + ".weight", down_cols, 1)):
            key = b.key(name)
            if key is None:
                raise BakeError(f"{where}: {name} is stored split across checkpoint keys; approximate: neurons "
                                "needs it whole")
            b.append_units(key, Op(idx, "append", vec, axis), step)
    size = b.config_updates.get("intermediate_size", b.config["intermediate_size"])
    b.merge_config({"intermediate_size": size + m})
    return {"gain": gain, "rms": rms, "rho": rho, "units": m, "block": layer,
            "intermediate_size": [size, size + m], "gate_error_bound": GATE_ERROR / gain}
