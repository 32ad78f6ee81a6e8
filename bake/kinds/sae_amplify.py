"""`sae_amplify`: amplify SAE features at the SAE's hook point, `X' = X + a * ReLU(X S) S^T`
(S: the chosen features' decoder rows as unit columns; bake/sae/intervene.py).

The gated term is not a weight edit: a bake refuses it unless the recipe says `linearize: decoder`
(add `a * activation * sum_c s_c`, a steering vector) or `linearize: ablate` (remove the features'
span from every residual writer), each exact for what it is and reported as different from the hook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..sae import intervene
from .base import Float, Kind, register


class SaeAmplify(intervene.SaeFields):
    """X' = X + a * ReLU(X S) S^T at the SAE's hook point."""

    kind: Literal["sae_amplify"]
    a: Float = Field(allow_inf_nan=False)


ABOUT = "X + a * ReLU(X S) S^T"


@register
class SaeAmplifyKind(Kind):
    name = "sae_amplify"
    schema = SaeAmplify
    tag = "sae-steering"
    artifacts = {"sae": "SAE"}
    learners = {"sae": ("learn_sae", "")}  # sae: {learn: {data: ..., layer: L}} trains one while baking
    coverage = False  # linearized, it bakes where steer (decoder) or ablate (ablate) does: their columns say where

    def status(self, fam):
        return intervene.status(fam, "")

    def compile(self, b, idx, iv, where):
        return intervene.compile_sae(b, idx, iv, where, self.name, iv.a, lambda s: None, ABOUT)

    def hook_step(self, b, idx, iv, where):
        return intervene.hook_sae(b, idx, iv, where, self.name, iv.a, lambda s: None, ABOUT)
