"""docs/spec-reference.md names every field a spec has, so the reference cannot fall behind the code."""

from __future__ import annotations

import typing
from types import UnionType

from pydantic import BaseModel

from cormorant.config import PROJECT_ROOT
from cormorant.spec import ModelSpec


def _models(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(model, prefix=""):
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        yield path
        mapping = typing.get_origin(info.annotation) is dict
        if typing.get_origin(info.annotation) in (typing.Union, UnionType):
            mapping = False
        for nested in _models(info.annotation):
            yield from _fields(nested, f"{path}.<name>." if mapping else f"{path}.")


def test_every_spec_field_is_in_the_reference():
    page = (PROJECT_ROOT / "docs" / "spec-reference.md").read_text()
    fields = list(_fields(ModelSpec))
    assert "target.source.partition_column" in fields and "validation.columns.<name>.min" in fields
    # a row of its own, or (a section such as `training`) a heading
    missing = [f for f in fields if f"| `{f}` |" not in page and f"## `{f}`" not in page]
    assert missing == []
