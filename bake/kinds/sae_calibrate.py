"""`sae_calibrate`: calibrate toward SAE features at the SAE's hook point,
`X' = X - ReLU(X S) S^T + b * mean(s)` (S: the chosen features' decoder rows as unit columns,
mean(s) the mean of those columns; bake/sae/intervene.py).

The constant `b * mean(s)` bakes exactly as a bias (where `steer` bakes). The gated term does not:
a bake refuses the intervention unless the recipe says `linearize: decoder` (replace ReLU(X s_c)
by `activation`) or `linearize: ablate` (remove the features' span from every residual writer,
then add the constant), each exact for what it is and reported as different from the hook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..sae import intervene
from .base import Float, Kind, register


class SaeCalibrate(intervene.SaeFields):
    """X' = X - ReLU(X S) S^T + b * mean(s) at the SAE's hook point."""

    kind: Literal["sae_calibrate"]
    b: Float = Field(default=1.0, allow_inf_nan=False)


ABOUT = "X - ReLU(X S) S^T + b * mean(s)"


@register
class SaeCalibrateKind(Kind):
    name = "sae_calibrate"
    schema = SaeCalibrate
    tag = "sae-steering"
    artifacts = {"sae": "SAE"}
    learners = {"sae": ("learn_sae", "")}  # sae: {learn: {data: ..., layer: L}} trains one while baking
    coverage = False  # linearized, it bakes where steer (decoder) or ablate (ablate) does: their columns say where

    def status(self, fam):
        return intervene.status(fam, " (its constant b * mean(s) bakes as a bias)")

    def compile(self, b, idx, iv, where):
        return intervene.compile_sae(b, idx, iv, where, self.name, -1.0, lambda s: iv.b * s.mean(dim=1), ABOUT)

    def hook_step(self, b, idx, iv, where):
        return intervene.hook_sae(b, idx, iv, where, self.name, -1.0, lambda s: iv.b * s.mean(dim=1), ABOUT)
