"""bake: compile inference-time interventions (AURA, steering, ablation) into checkpoints.

The public API is imported lazily, so that `bake --help` (and the CLI's signal handlers) come up
before torch and transformers load.
"""

__version__ = "0.1.0"

_API = {"apply": "api", "arch_info": "api", "export": "api", "plan": "api", "verify": "api", "push": "publish.hub",
        "load_recipe": "recipe.schema", "BakeError": "errors", "NotBakeable": "errors", "RecipeError": "errors",
        "VerificationFailed": "errors"}
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        module = importlib.import_module(f".{_API[name]}", __name__)
        return getattr(module, "load" if name == "load_recipe" else name)
    raise AttributeError(f"module 'bake' has no attribute {name!r}")
