"""bake: compile inference-time interventions (AURA, steering, ablation) into checkpoints."""

__version__ = "0.1.0"

from .api import apply, arch_info, export, plan, verify  # noqa: E402
from .errors import BakeError, NotBakeable, RecipeError, VerificationFailed  # noqa: E402
from .hub import push  # noqa: E402
from .recipe import load as load_recipe  # noqa: E402

__all__ = ["apply", "plan", "verify", "export", "push", "arch_info", "load_recipe",
           "BakeError", "NotBakeable", "RecipeError", "VerificationFailed"]
