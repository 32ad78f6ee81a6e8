"""Hand-written data, only where the probe cannot decide: each entry with its reason.

Adding a family the probe cannot handle is one entry here plus its tiny test (tests/tiny.py).
"""

from __future__ import annotations

# model_type -> why bake refuses it (checked before any probe)
REFUSED: dict[str, str] = {}


def refused(config: dict) -> str | None:
    mt = config.get("model_type")
    why = REFUSED.get(mt)
    return f"model_type={mt!r}: {why}" if why else None
