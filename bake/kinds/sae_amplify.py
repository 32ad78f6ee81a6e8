"""`sae_amplify`: amplify SAE features at the SAE's hook point, `X' = X + a * ReLU(X S) S^T`
(S: the chosen features' decoder rows as unit columns; bake/kinds/sae.py).

The gated term is not a weight edit: a bake refuses it unless the recipe says `linearize: decoder`
(add `a * activation * sum_c s_c`, a steering vector) or `linearize: ablate` (remove the features'
span from every residual writer), each exact for what it is and reported as different from the hook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .sae import SaeFields, SaeKind
from .base import Float, register


class SaeAmplify(SaeFields):
    """X' = X + a * ReLU(X S) S^T at the SAE's hook point."""

    kind: Literal["sae_amplify"]
    a: Float = Field(allow_inf_nan=False)


@register
class SaeAmplifyKind(SaeKind):
    name = "sae_amplify"
    schema = SaeAmplify
    about = "X + a * ReLU(X S) S^T"

    def gate(self, iv):
        return iv.a
