"""`sae_calibrate`: calibrate toward SAE features at the SAE's hook point,
`X' = X - ReLU(X S) S^T + b * mean(s)` (S: the chosen features' decoder rows as unit columns,
mean(s) the mean of those columns; bake/kinds/sae.py).

The constant `b * mean(s)` bakes exactly as a bias (where `steer` bakes). The gated term does not:
a bake refuses the intervention unless the recipe says `linearize: decoder` (replace ReLU(X s_c)
by `activation`) or `linearize: ablate` (remove the features' span from every residual writer,
then add the constant), each exact for what it is and reported as different from the hook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .sae import SaeFields, SaeKind
from .base import Float, register


class SaeCalibrate(SaeFields):
    """X' = X - ReLU(X S) S^T + b * mean(s) at the SAE's hook point."""

    kind: Literal["sae_calibrate"]
    b: Float = Field(default=1.0, allow_inf_nan=False)


@register
class SaeCalibrateKind(SaeKind):
    name = "sae_calibrate"
    schema = SaeCalibrate
    about = "X - ReLU(X S) S^T + b * mean(s)"
    constant_note = " (its constant b * mean(s) bakes as a bias)"

    def gate(self, iv):
        return -1.0

    def constant(self, iv, s):
        return iv.b * s.mean(dim=1)
