"""Model families: what bake must know about an architecture, derived rather than tabled.

`probe` reads it off a tiny random model of the checkpoint's own config class (where the residual
stream is written, by which tensors along which axis, post-norms, steering slots); `keys` maps the
model's parameters onto the checkpoint's keys through transformers' own save path; `adapter`
applies both to one checkpoint; `overrides` holds the few hand-written entries, each with its
reason; `coverage` runs all of it over every decoder-only type the installed transformers ships.
"""

from .adapter import Adapter, Slot, Writer, resolve

__all__ = ["Adapter", "Slot", "Writer", "resolve"]
