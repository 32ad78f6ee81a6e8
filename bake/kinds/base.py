"""What a kind is, the registry, and the recipe building blocks kinds share.

A kind is one class registered with `@register`: its recipe schema (a pydantic model whose `kind`
field is a Literal of its name), the artifact fields it reads, its exactness on a family, its
compile step (which records the hook realization beside the folds), its model-card tag, and the
learners that can produce its artifacts inside a recipe. The recipe union, compile dispatch,
learning, the card, provenance and `bake arch` all read `KINDS`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Strict

from ..errors import BakeError, close_file

# Numbers are strict: a YAML boolean (`yes`, `true`) or a string never becomes a layer index or a scale.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # ints are accepted (pydantic's strict float takes int), bools are not


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Learn(StrictModel):
    """`{learn: {...}}` in place of an artifact path: learn it while baking (options as `bake learn`)."""

    learn: dict
    key: str | None = None  # the tensor to take from the learned file, e.g. `candidates[-1, 12.5]` (else the kind's)


Artifact = Union[str, Learn]


def as_list(v):
    return [v] if isinstance(v, (str, int)) else v


class Kind:
    """One intervention kind. Subclasses set the class attributes and implement `status` and `compile`."""

    name: ClassVar[str]
    schema: ClassVar[type[BaseModel]]
    tag: ClassVar[str]  # the model card's tag for it
    artifacts: ClassVar[dict[str, str]] = {}  # recipe field -> role (provenance; a field may hold a list)
    # recipe field -> (learner name in bake.learn.learners, suffix of the learned file's reference)
    learners: ClassVar[dict[str, tuple[str, str]]] = {}
    # in the coverage table (`bake arch --table`, eval/coverage.py): a kind whose bake is another kind's fold
    # (the SAE kinds: steer's slot, ablate's projection) has no per-family status of its own
    coverage: ClassVar[bool] = True

    def status(self, family) -> tuple[str, str]:
        """(exact | approximate | refused, why) of this kind on a resolved family (`bake arch`)."""
        raise NotImplementedError

    def compile(self, b, idx: int, iv, where: str):
        """Add this intervention's folds and hooks to the builder `b` (compile._Builder); return its planning.Step.
        Raise BakeError / NotBakeable before the builder holds anything that cannot be baked."""
        raise NotImplementedError

    def hook_step(self, b, idx: int, iv, where: str):
        """The hook realization alone (`bake generate --hooks`, `bake eval --hooks`): a planning.Step whose
        hooks are the specification, with no folds required. Kinds whose bake is the hook's exact
        compilation compile as usual; kinds that bake only part of the hook (the SAE kinds) override it."""
        return self.compile(b, idx, iv, where)

    def learn_defaults(self, iv) -> dict:
        """Learner options implied by the recipe entry (e.g. aura's modules)."""
        return {}

    def precheck(self, iv, recipe, config: dict, where: str) -> None:
        """Checks that need only the recipe, its files and config.json, run before the family is probed
        and anything is learned (seconds earlier than `compile`): each artifact file the entry names
        exists (a number or an `hf:` id is not a file)."""
        from pathlib import Path

        for key in self.artifacts:
            value = getattr(iv, key, None)
            for j, x in enumerate(value if isinstance(value, list) else [value]):
                if not isinstance(x, str) or x.startswith("hf:") or _number(x):
                    continue
                path = recipe.path(x.partition("#")[0])
                if not Path(path).exists():
                    at = f"{where}.{key}" + (f"[{j}]" if isinstance(value, list) else "")
                    raise BakeError(f"{at}: no such file {path}{close_file(Path(path))}")

    def example(self, fam, dest, g) -> dict | None:
        """One intervention of this kind for a tiny checkpoint (eval/coverage.py bakes it on every type)."""
        return None


def _number(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


KINDS: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    """Register a kind (a class decorator). A name registered twice is a programming error."""
    name = cls.name
    if name in KINDS:
        raise RuntimeError(f"kind {name!r} is registered twice ({type(KINDS[name]).__module__} and {cls.__module__})")
    if cls.schema.model_fields["kind"].annotation.__args__ != (name,):
        raise RuntimeError(f"kind {name!r}: its schema's `kind` field must be Literal[{name!r}]")
    KINDS[name] = cls()
    return cls


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise BakeError(f"unknown intervention kind {name!r}; bake knows {', '.join(KINDS)}") from None


def names() -> str:
    """"aura, steer or ablate"."""
    ks = list(KINDS)
    return ", ".join(ks[:-1]) + (" or " if len(ks) > 1 else "") + ks[-1]


