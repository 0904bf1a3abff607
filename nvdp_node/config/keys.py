"""The schema's keys as dotted paths, and how each is written as text.

``errors``, ``render``, ``sources`` and ``loader`` (and ``nvdp config``'s
tests and docs checks) walk the configuration key by key: ``version``,
``resource_name``, ``kubelet.socket_dir``, ... in file order.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from nvdp_node.config.schema import Config

def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            path = f"{prefix}.{name}" if prefix else name
            yield path, field.annotation
            yield from _sections(field.annotation, path)


# Every table by its dotted path, in file order; a table may hold tables ("sharing.mps").
SECTIONS: dict[str, type[BaseModel]] = dict(_sections(Config))


def config_keys() -> list[str]:
    """Every leaf key as a dotted path, in file order: ``version``, ..., ``logging.format``."""
    keys = [name for name in Config.model_fields if name not in SECTIONS]
    for section, model in SECTIONS.items():
        keys.extend(f"{section}.{name}" for name in model.model_fields if f"{section}.{name}" not in SECTIONS)
    return keys


def field_info(key: str) -> Any:
    """The pydantic FieldInfo of a dotted leaf key."""
    section, _, name = key.rpartition(".")
    model: type[BaseModel] = SECTIONS[section] if section else Config
    return model.model_fields[name]


def model_at(path: str) -> type[BaseModel] | None:
    """The model of the table at ``path``: "" -> Config, "health" -> HealthConfig,
    "resources.gpus[0]" -> the entry model; None where there is no table."""
    model: type[BaseModel] = Config
    for part in re.sub(r"\[\d+\]", "", path).split(".") if path else ():
        field = model.model_fields.get(part)
        found = _table_model(field.annotation) if field else None
        if found is None:
            return None
        model = found
    return model


def _table_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds: itself, or the item of a tuple of models."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _table_model(typing.get_args(annotation)[0])
    if origin is tuple:
        return _table_model(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


TextKind = Literal["bool", "int", "str", "int list", "str list", "table list"]


def text_kind(key: str) -> TextKind:
    """How an environment variable or flag (text) for ``key`` is read: see sources.parse_text."""
    return _kind(field_info(key).annotation)


def is_list_key(key: str) -> bool:
    """True for keys whose value is a list (an env var or flag then holds a comma-separated list)."""
    return text_kind(key).endswith(" list")


def _kind(annotation: object) -> TextKind:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin is tuple:
        item = _kind(typing.get_args(annotation)[0])
        return "table list" if _table_model(annotation) else "int list" if item == "int" else "str list"
    if origin in (typing.Union, types.UnionType):
        kinds = [_kind(arg) for arg in typing.get_args(annotation)]
        return next((k for k in kinds if k.endswith(" list")), kinds[0])
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    return "str"
