"""Intervention kinds, one module each: schema, compile step, hook realization, exactness, card tag,
learners. Adding a kind is one module here plus its import below (and its tests); everything else
(the recipe union, compile dispatch, learning in recipes, the card, `bake arch`) reads `KINDS`.
`sae.py` holds what the two SAE kinds share (reading the SAE, its hook site, the linearizations),
`sae_neurons.py` their `approximate: neurons` compilation into added MLP units.
"""

from .base import KINDS, Kind, get, names, register  # noqa: F401

from . import aura, steer, ablate, lineas, sae_amplify, sae_calibrate  # noqa: E402,F401  (each registers itself)
