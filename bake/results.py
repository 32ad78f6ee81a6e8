"""The typed results bake writes and prints (the report, a verification, an export, an evaluation):
pydantic models that read like the JSON objects they are stored as, so the CLI, the model card and
scripts written against the files read one object."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A result with declared fields (and room for more: a newer bake's keys are kept, not refused)
    that reads like its JSON object: `r["key"]`, `"key" in r`, `r.get("key")`; fields never set stay
    out of the JSON (`to_dict`)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), validate_assignment=False)

    def __contains__(self, key: str) -> bool:
        return key in self.model_fields_set or key in (self.model_extra or {})

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        setattr(self, key, value)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self else default

    def to_dict(self) -> dict:
        """The JSON object, as written."""
        return self.model_dump(exclude_unset=True)

    def __eq__(self, other) -> bool:
        if isinstance(other, dict):  # compared with the JSON object it reads like
            return self.to_dict() == other
        return super().__eq__(other)
