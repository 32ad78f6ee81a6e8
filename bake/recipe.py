"""The recipe: a YAML (or JSON) file validated by pydantic; errors name the YAML path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Learn(_Strict):
    """`{learn: {...}}` in place of an artifact path: learn it while baking (options as `bake learn`)."""

    learn: dict


Artifact = Union[str, Learn]


def _as_list(v):
    return [v] if isinstance(v, (str, int)) else v


class Aura(_Strict):
    """Multiply output unit j of each matched module by alpha[j] (ml-aura semantics)."""

    kind: Literal["aura"]
    modules: list[str] = Field(min_length=1)
    alphas: Artifact
    approximate: bool = False

    _modules_list = field_validator("modules", mode="before")(_as_list)


class Steer(_Strict):
    """Add scale * v to the hidden state returned by each listed decoder block, at every position."""

    kind: Literal["steer"]
    layers: list[int] = Field(min_length=1)
    vector: Artifact
    scale: float = Field(default=1.0, allow_inf_nan=False)
    approximate: bool = False

    _layers_list = field_validator("layers", mode="before")(_as_list)


class Ablate(_Strict):
    """Remove the component along unit r from every residual-stream write."""

    kind: Literal["ablate"]
    direction: Artifact
    layers: Union[Literal["all"], Annotated[list[int], Field(min_length=1)]] = "all"
    approximate: bool = False


Intervention = Annotated[Union[Aura, Steer, Ablate], Field(discriminator="kind")]


class Verify(_Strict):
    prompts: list[str] | None = None
    max_abs_logit: float | None = Field(default=None, gt=0)
    min_top1: float | None = Field(default=None, ge=0, le=1)
    generate_tokens: int = Field(default=32, ge=0)
    compute_dtype: Literal["float64", "float32"] = "float64"


class Recipe(_Strict):
    model: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    output: str | None = None
    interventions: list[Intervention] = Field(min_length=1)
    verify: Verify = Field(default_factory=Verify)
    trust_remote_code: bool = False
    # formats written by `bake apply`: the HF folder always; onnx -> <output>/onnx/, gguf -> <output>/<name>.<TYPE>.gguf
    export: list[Literal["hf", "onnx", "gguf"]] = Field(default_factory=lambda: ["hf"])
    gguf_type: str | None = None  # f32 | f16 | bf16 | q8_0 | ... (default: f32 for float32 checkpoints, else f16)
    provenance: dict | None = None  # written by bake into the output's recipe.yaml; ignored on input

    # where relative paths are resolved from (the recipe file's folder); not part of the YAML
    base_dir: Annotated[Path, Field(exclude=True)] = Path(".")

    def path(self, p: str) -> Path:
        """A recipe path made absolute (relative paths are relative to the recipe file)."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.base_dir / q)


def _loc(loc: tuple, kinds=("aura", "steer", "ablate")) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in kinds or part.startswith(("function-", "literal[", "list[")):
            continue  # pydantic's union tags are not part of the YAML path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid recipe"]
    seen = set()
    for e in err.errors():
        loc = e["loc"]
        msg = e["msg"]
        if loc and loc[-1] in ("str", "Learn") or (len(loc) > 1 and loc[-2] == "Learn"):
            if loc[-1] in ("str", "Learn"):  # an artifact: a path or {learn: {...}}
                loc, msg = loc[:-1], "expected a file path or {learn: {...options...}}"
            else:
                loc = loc[:-2] + loc[-1:]
        path = _loc(loc)
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind {e.get('input', {}).get('kind')!r}; expected aura, steer or ablate"
        elif e["type"] == "union_tag_not_found":
            msg = "missing `kind` (aura, steer or ablate)"
        line = f"  {path}: {msg}"
        if "input" in e and e["type"] not in ("missing", "extra_forbidden", "union_tag_invalid",
                                              "union_tag_not_found") and not isinstance(e["input"], dict):
            line += f" (got {e['input']!r})"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def parse(data, source: str = "<recipe>", base_dir: Path | str = ".") -> Recipe:
    """Validate a recipe given as a dict (already parsed YAML)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with keys model, interventions, ...; got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_validation(e, source)) from None
    recipe.base_dir = Path(base_dir).resolve()
    return recipe


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe file (YAML; JSON is YAML too)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    return parse(data, str(path), path.parent)


def dump(recipe: Recipe) -> dict:
    """The recipe as plain data (paths as written)."""
    return recipe.model_dump(mode="json", exclude={"base_dir"})
