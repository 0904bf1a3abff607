"""The strict value types the config sections are built from.

``schema.py`` and ``naming.py`` build their sections on :class:`Section`
(frozen, no unknown keys, no lax conversions) and these annotated types;
``quote`` writes a value the way the error lines show it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


def _reject_bool(value: object) -> object:
    # pydantic's lax int accepts true/false as 1/0; an XID of `true` is a typo, not 1.
    if isinstance(value, bool):
        raise ValueError("expected a positive integer XID, not a boolean")
    return value


def _sorted_unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


Xid = Annotated[int, BeforeValidator(_reject_bool), Field(ge=1)]
# strict=False lets a TOML array stand for the tuple; its items stay strict.
XidList = Annotated[tuple[Xid, ...], AfterValidator(_sorted_unique), Field(strict=False)]


def _absolute_path(value: Path) -> Path:
    if "\0" in str(value):
        raise ValueError("a path must not contain a NUL character")
    if not value.is_absolute():
        raise ValueError("expected an absolute path (starting with /)")
    return value


def _absolute_or_empty(value: str) -> str:
    if value and ("\0" in value or not PurePosixPath(value).is_absolute()):
        raise ValueError('expected an absolute path, or "" for the default')
    return value


# strict=False: a TOML string stands for a Path.
AbsolutePath = Annotated[Path, AfterValidator(_absolute_path), Field(strict=False)]
AbsolutePathOrEmpty = Annotated[str, AfterValidator(_absolute_or_empty)]


class Section(BaseModel):
    # Strict: "no" is not a boolean, " 79" not an XID, true not a number of seconds.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def choices(values: tuple[str, ...]) -> str:
    return ", ".join(quote(v) for v in values)


def quote(value: object) -> str:
    """Quote like TOML (and like the "got ..." part of error lines)."""
    return json.dumps(value, ensure_ascii=False, default=str)
