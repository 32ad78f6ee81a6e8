"""Model families: what bake must know about an architecture, derived rather than tabled.

`probe` reads it off a tiny random model of the checkpoint's own config class (where the residual
stream is written, by which tensors along which axis, post-norms, steering slots); `adapter`
applies it, with the key map (bake.model.keys), to one checkpoint; `overrides` holds the few
hand-written entries, each with its reason. bake.evaluation.coverage runs all of it over every
decoder-only type the installed transformers ships.
"""

from .adapter import Adapter, Slot, Writer, resolve

__all__ = ["Adapter", "Slot", "Writer", "resolve"]
