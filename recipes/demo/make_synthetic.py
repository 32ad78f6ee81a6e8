"""Write the seeded synthetic artifacts of recipes/smollm2-demo.yaml (SmolLM2-135M shapes).

SYNTHETIC: these are not learned from data. They exist so that the demo exercises all three
kinds of intervention until learned artifacts ship (`bake learn`). Re-run to regenerate:
    .venv/bin/python recipes/demo/make_synthetic.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTER, LAYERS = 576, 1536, 30
here = Path(__file__).parent
g = torch.Generator().manual_seed(2024)

# AURA: damp 2% of the up_proj units of every block to alpha = 0.5, the rest stay at 1
alphas = {}
for i in range(LAYERS):
    a = torch.ones(INTER)
    a[torch.randperm(INTER, generator=g)[: INTER // 50]] = 0.5
    alphas[f"model.layers.{i}.mlp.up_proj"] = a
save_file(alphas, str(here / "synthetic-aura-alphas.safetensors"), metadata={"synthetic": "seeded, not learned"})

# steering vector: a random unit direction
v = torch.randn(HIDDEN, generator=g)
save_file({"vector": v / v.norm()}, str(here / "synthetic-steer.safetensors"), metadata={"synthetic": "seeded"})

# ablation direction: another random direction (normalized on load)
r = torch.randn(HIDDEN, generator=g)
save_file({"direction": r}, str(here / "synthetic-direction.safetensors"), metadata={"synthetic": "seeded"})
print("wrote", *sorted(p.name for p in here.glob("synthetic-*")))
