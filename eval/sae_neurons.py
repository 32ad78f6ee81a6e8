"""Where an `approximate: neurons` bake departs from its hook: per position, the gated term the hook adds,
ReLU(X s), against what the added unit computes, SiLU(gain u) / gain with u = rms * (h . s) / rms(h) on the
stream h before the MLP, on the verification's probe prompts.

    .venv/bin/bake apply recipes/smollm2-sae-neurons.yaml
    .venv/bin/python eval/sae_neurons.py out/smollm2-sae-neurons     # prints the table, writes eval/sae_neurons.json

It splits the deviation the verification reports into its sources: the first position (the attention sink,
whose rms is about 100 times the others'), and elsewhere the constant rms and the reading point (h, not X).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main(folder: str) -> dict:
    from bake.model.loading import load_model, load_tokenizer, probe_inputs
    from bake.model.source import resolve_model
    from bake.artifacts import sae as sf

    out = Path(folder)
    report = json.loads((out / "bake_report.json").read_text())
    ran = yaml.safe_load((out / "recipe.yaml").read_text())
    step = next(s for s in report["steps"] if (s.get("details") or {}).get("neurons"))
    iv = ran["interventions"][step["index"]]
    n = step["details"]["neurons"]
    sae = sf.load(iv["sae"], out)
    s = sae.directions(step["details"]["features"]).double()
    ckpt = resolve_model(ran["model"])
    model = load_model(ckpt.path, trust_remote_code=False, dtype=torch.float64).eval()
    tok = load_tokenizer(ckpt.path, trust_remote_code=False)
    block = model.model.layers[n["block"]]
    cap = {}
    block.post_attention_layernorm.register_forward_pre_hook(lambda m, a: cap.__setitem__("h", a[0][0]))
    block.register_forward_hook(lambda m, a, o: cap.__setitem__("x", (o[0] if isinstance(o, tuple) else o)[0]))
    gamma = block.post_attention_layernorm.weight
    first, rest = [], []
    with torch.no_grad():
        for _, ids in probe_inputs(tok, None, model.config.vocab_size):
            model(input_ids=ids)
            h, x = cap["h"], cap["x"]
            hook = torch.relu(x @ s)  # [T, k]
            u = n["rho"] * (block.post_attention_layernorm(h) / gamma) @ s
            unit = torch.nn.functional.silu(n["gain"] * u) / n["gain"]
            rms = h.pow(2).mean(-1).sqrt()
            for t in range(ids.shape[1]):
                row = (float(rms[t]), float(hook[t].sum()), float(unit[t].sum()))
                (first if t == 0 else rest).append(row)
    rel = [abs(un - hk) / max(hk, 1e-9) for _, hk, un in rest if hk > 1.0]
    res = {
        "folder": str(out), "block": n["block"], "features": step["details"]["features"], "gain": n["gain"],
        "rho": n["rho"], "prompts": len(first),
        "first position": {"rms mean": statistics.mean(r for r, _, _ in first),
                           "hook term mean": statistics.mean(h for _, h, _ in first),
                           "unit term mean": statistics.mean(u for _, _, u in first)},
        "other positions": {"tokens": len(rest), "rms median": statistics.median(r for r, _, _ in rest),
                            "hook term mean": statistics.mean(h for _, h, _ in rest),
                            "unit term mean": statistics.mean(u for _, _, u in rest),
                            "|unit - hook| / hook, median (hook > 1)": statistics.median(rel),
                            "|unit - hook| / hook, p90 (hook > 1)": statistics.quantiles(rel, n=10)[-1],
                            "gate agreement (both > 1 or both <= 1)": statistics.mean(
                                float((h > 1) == (u > 1)) for _, h, u in rest)},
        "verification": {k: report["verification"]["metrics"][k] for k in ("max_abs_logit", "top1_agreement", "kl_mean")},
        "command": f".venv/bin/python eval/sae_neurons.py {folder}",
    }
    return res


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    result = main(sys.argv[1])
    print(json.dumps(result, indent=2))
    (ROOT / "eval" / "sae_neurons.json").write_text(json.dumps(result, indent=2) + "\n")
