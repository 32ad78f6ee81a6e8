"""The recipe: a YAML (or JSON) file validated by pydantic; errors name the YAML path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, model_validator

from ..errors import RecipeError, did_you_mean
from ..exporters.base import formats
from ..kinds import KINDS
from ..kinds import names as kind_names
from ..kinds.base import Artifact, Float, Int, Learn  # noqa: F401  (the recipe's vocabulary)
from ..kinds.base import StrictModel as _Strict

# one tagged union of the kinds' own schemas (bake.kinds)
Intervention = Annotated[Union[tuple(k.schema for k in KINDS.values())], Field(discriminator="kind")]


def _export_format(v: str) -> str:
    """The HF folder, or a registered exporter (bake/exporters/, plug-ins included)."""
    known = ("hf", *formats())
    if v not in known:
        raise ValueError(f"unknown export format {v!r}; expected one of {', '.join(known)}")
    return v


ExportFormat = Annotated[str, AfterValidator(_export_format)]


class Verify(_Strict):
    prompts: list[str] | None = None
    max_abs_logit: Float | None = Field(default=None, gt=0)
    min_top1: Float | None = Field(default=None, ge=0, le=1)
    generate_tokens: Int = Field(default=32, ge=0, le=4096)
    # auto: float64 in memory; streamed, float64 for a float32 output and float32 for a 16-bit one
    compute_dtype: Literal["auto", "float64", "float32"] = "auto"
    # full: end to end with both models in memory, then the module-local checks; streamed: the same
    # end-to-end pass with each module's weights read from the safetensors files when it runs (memory:
    # about one module; teacher-forced logits only, no generation); local: module-local checks only;
    # auto: full when both models fit in memory, else streamed
    mode: Literal["auto", "full", "streamed", "local"] = "auto"


class Recipe(_Strict):
    model: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    output: str | None = None
    interventions: list[Intervention] = Field(min_length=1)
    verify: Verify = Field(default_factory=Verify)
    # formats written by `bake apply`: the HF folder always; onnx -> <output>/onnx/, gguf -> <output>/<name>.<TYPE>.gguf
    export: list[ExportFormat] = Field(default_factory=lambda: ["hf"])
    gguf_type: str | None = None  # f32 | f16 | bf16 | q8_0 | ... (default: f32 for float32 checkpoints, else f16)
    # where `bake apply`, `bake tune` and `bake eval RECIPE` run their forward passes (--device overrides it)
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")] | None = None
    provenance: dict | None = None  # written by bake into the output's recipe.yaml; ignored on input
    # `bake tune`'s search (bake/tune/spec.py validates it); bake apply and the others ignore it
    tune: dict | None = None

    # not part of the YAML: where relative paths are resolved from (the recipe file's folder), and
    # whether transformers may run code shipped with the model (only the command line says so)
    _base_dir: Path = PrivateAttr(default_factory=lambda: Path(".").resolve())
    _trust_remote_code: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _no_trust_key(cls, data):
        if isinstance(data, dict) and "trust_remote_code" in data:
            if data["trust_remote_code"] is not False:
                raise ValueError("trust_remote_code cannot be set in a recipe (a recipe or a downloaded folder must "
                                 "not decide to run code); pass --trust-remote-code on the command line")
            data = {k: v for k, v in data.items() if k != "trust_remote_code"}  # written by bake 0.1 as false
        return data

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @base_dir.setter
    def base_dir(self, value: Path) -> None:
        self._base_dir = Path(value)

    @property
    def trust_remote_code(self) -> bool:
        return self._trust_remote_code

    def with_trust(self, trust: bool) -> "Recipe":
        """A copy that lets transformers run the model's own code when `trust` (the caller's decision)."""
        new = self.model_copy()
        new._trust_remote_code = bool(trust)
        return new

    def path(self, p: str) -> Path:
        """A recipe path made absolute (relative paths are relative to the recipe file)."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.base_dir / q)


def _loc(loc: tuple) -> str:
    out = ""
    kinds = set(KINDS) | {k.schema.__name__ for k in KINDS.values()}
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in kinds or part.startswith(("function-", "literal[", "list[")):
            continue  # pydantic's union tags are not part of the YAML path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _keys_of(model, seen=None) -> set[str]:
    """The field names of a pydantic model and of the models nested in its fields."""
    import typing

    from pydantic import BaseModel

    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    out = set(model.model_fields)
    for f in model.model_fields.values():
        stack = [f.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                out |= _keys_of(t, seen)
            stack += list(typing.get_args(t))
    return out


def _unknown_key(loc: tuple) -> str:
    kind = next((KINDS[p] for p in loc if isinstance(p, str) and p in KINDS), None)
    return "unknown key" + did_you_mean(loc[-1], _keys_of(kind.schema if kind else Recipe))


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
            msg = _unknown_key(e["loc"])
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind {e.get('input', {}).get('kind')!r}; expected {kind_names()}"
        elif e["type"] == "union_tag_not_found":
            msg = f"missing `kind` ({kind_names()})"
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


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core scalars and no duplicate keys.

    YAML 1.1 (PyYAML's default) reads `yes`/`no`/`on`/`off` as booleans and `1:30` (as 90) and
    `1_000` as ints: in a recipe those are typos, not numbers, so they stay strings and the schema
    names them. A key given twice is an error (PyYAML keeps the last one silently).
    """

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
            except TypeError:  # an unhashable key: the base class reports it
                pass
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in
            ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))

MAX_BYTES = 10 << 20  # a recipe is a few lines; prompts lists stay far below this
MAX_NODES = 100_000  # after expanding aliases: a "billion laughs" document is refused, not built


def _expanded_size(node, memo: dict) -> int:
    """The number of nodes `node` becomes once every alias is expanded (memoized: aliases share nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a recursive alias counts as too big
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


def load_yaml(text: str, source: str):
    """One YAML document, read with `_Loader`; a document that expands past MAX_NODES is refused."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise RecipeError(f"{source}: the YAML expands to more than {MAX_NODES:,} values (aliases "
                              "referencing aliases?); a recipe is small: write it out")
        return loader.construct_document(node)
    except yaml.YAMLError as e:  # one line naming the file and the place, not PyYAML's "<unicode string>"
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise RecipeError(f"{source}{where}: not valid YAML ({what})") from None
    finally:
        loader.dispose()


def is_recipe(source) -> bool:
    """A recipe file (YAML, or JSON, which YAML reads) rather than a model."""
    p = Path(source)
    return p.suffix.lower() in (".yaml", ".yml", ".json") and p.is_file()


def load(path: str | Path) -> Recipe:
    """Read and validate a recipe file (YAML; JSON is YAML too)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe file")
        if path.stat().st_size > MAX_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size:,} bytes; a recipe is at most {MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); is it a recipe?") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e.strerror or e}") from None
    # relative paths are read beside the recipe file itself: a recipe reached through a symlink reads the files
    # beside its target, as it does when run directly
    return parse(load_yaml(text, str(path)), str(path), path.resolve().parent)


def dump(recipe: Recipe) -> dict:
    """The recipe as plain data (paths as written)."""
    return recipe.model_dump(mode="json")  # base_dir and trust are private attributes, never dumped
