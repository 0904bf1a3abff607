"""The pydantic-settings sources one configuration load is built from.

``loader.load_config`` makes one of each, highest priority first —
:class:`CommandLineSource` (flags, as init values), :class:`UpstreamHealthEnvSource`
(upstream's ``DP_*`` variables), :class:`NvdpEnvSource` (``NVDP_*``) and
:class:`TomlFileSource` — and passes them to ``Config.from_sources``, which
merges them the pydantic-settings way. Each source records a label per key it
set (what ``nvdp config show --sources`` prints) and collects its problems in
``errors`` instead of raising, so a load reports every problem at once.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from nvdp_node.config.errors import show_value, split_unknown
from nvdp_node.config.files import read_config_file
from nvdp_node.config.keys import SECTIONS, config_keys, text_kind
from nvdp_node.config.schema import Config, HealthConfig

CONFIG_PATH_ENV = "NVDP_CONFIG"
DISABLE_HEALTHCHECKS_ENV = "DP_DISABLE_HEALTHCHECKS"
ENABLE_HEALTHCHECKS_ENV = "DP_ENABLE_HEALTHCHECKS"
ENV_PREFIX: str = Config.model_config["env_prefix"]
ENV_DELIMITER: str = Config.model_config["env_nested_delimiter"] or "__"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TABLE_EXAMPLES = {
    "resources.gpus": '[{"pattern": "*A100*", "name": "nvidia.com/a100"}]',
    "resources.mig": '[{"pattern": "1g.10gb", "name": "nvidia.com/mig-small"}]',
    "sharing.time_slicing.resources": '[{"name": "nvidia.com/gpu", "replicas": 4}]',
    "sharing.mps.resources": '[{"name": "nvidia.com/gpu", "replicas": 4}]',
}


def env_var_name(key: str) -> str:
    """The variable that sets a dotted key: kubelet.socket_dir -> NVDP_KUBELET__SOCKET_DIR."""
    return ENV_PREFIX + key.upper().replace(".", ENV_DELIMITER)


def parse_text(key: str, raw: str) -> object:
    """An environment or flag value for ``key``, strictly: raises ValueError saying what is expected.

    Booleans are ``true`` or ``false`` (any case; not 1/0/yes/no), integers
    are decimal, lists a JSON array or comma-separated items (blanks skipped),
    lists of tables (``resources.gpus``) a JSON array only.
    """
    kind = text_kind(key)
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false for {key} (got {show_value(raw)})")
        return raw.lower() == "true"
    if kind == "int":
        if not (raw.isascii() and _INTEGER.fullmatch(raw)):
            raise ValueError(f"expected an integer for {key} (got {show_value(raw)})")
        return int(raw)
    if kind == "str":
        return raw
    if kind == "table list" and raw.strip() and not raw.lstrip().startswith("["):
        example = _TABLE_EXAMPLES.get(key, _TABLE_EXAMPLES["resources.gpus"])
        raise ValueError(f"expected a JSON array of tables, e.g. {example} (got {show_value(raw)})")
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise ValueError(f"expected a comma-separated list or a JSON array (got {show_value(raw)})")
        return value
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if kind == "int list":
        for item in items:
            if not (item.isascii() and _INTEGER.fullmatch(item)):
                raise ValueError(f"{item!r} is not an integer (expected comma-separated integers, e.g. 48,79)")
        return [int(item) for item in items]
    return items


class TomlFileSource(TomlConfigSettingsSource):
    """The config file, read by ``files.read_config_file`` (regular files only, capped, permissions)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, *, secure: bool, missing_ok: bool) -> None:
        self.path, self.found = path, False
        self._secure, self._missing_ok = secure, missing_ok
        self.labels: dict[str, str] = {}
        self.notices: list[str] = []
        self.unknown: list[tuple[str, ...]] = []
        self.blocked: frozenset[str] = frozenset()
        super().__init__(settings_cls, toml_file=path)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        read = read_config_file(self.path, secure=self._secure, missing_ok=self._missing_ok)
        if read is None:
            return {}
        self.found = True
        self.notices.extend(read.notices)
        data, self.unknown = split_unknown(read.data)
        # A value where a table belongs is the file's error; nothing may paper over it.
        self.blocked = frozenset(s for s in SECTIONS if (found := lookup(data, s))[0] and not isinstance(found[1], Mapping))
        self.labels = {key: "file" for key in config_keys() if lookup(data, key)[0]}
        return data


class NvdpEnvSource(EnvSettingsSource):
    """``NVDP_<SECTION>__<KEY>`` from an injected mapping; values parsed by :func:`parse_text`."""

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str], *, blocked: frozenset[str] = frozenset()
    ) -> None:
        self.labels: dict[str, str] = {}
        self.errors: list[str] = []
        self.notices: list[str] = []
        super().__init__(settings_cls)
        self.env_vars = self._select(environ, blocked)
        # Resolved now, not when pydantic-settings calls the source, so the
        # loader sees the labels and errors before it validates.
        self._values = self._typed(super().__call__())

    def _select(self, environ: Mapping[str, str], blocked: frozenset[str]) -> dict[str, str | None]:
        # Only variables that name a settable key reach pydantic-settings: an
        # unknown NVDP_* variable is a notice, not an unknown key of the file.
        by_name = {env_var_name(key): key for key in config_keys() if key != "version"}
        chosen: dict[str, str | None] = {}
        for name in sorted(environ):
            if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
                continue
            key = by_name.get(name)
            if key is None:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.notices.append(f"ignoring environment variable {name}: not a config setting{hint}")
            elif not is_blocked(key, blocked):
                chosen[name if self.case_sensitive else name.lower()] = environ[name]
        return chosen

    def __call__(self) -> dict[str, Any]:
        return self._values

    def _typed(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in config_keys():
            found, text = lookup(raw, key)
            if not found:
                continue
            name = env_var_name(key)
            try:
                value = parse_text(key, str(text))
            except ValueError as exc:
                self.errors.append(f"{name}: {exc}")
                continue
            assign(out, key, value)
            self.labels[key] = f"env {name}"
        return out


class UpstreamHealthEnvSource(PydanticBaseSettingsSource):
    """Upstream's DP_DISABLE_HEALTHCHECKS / DP_ENABLE_HEALTHCHECKS, with its internal/rm/health.go meaning.

    "all" or "xids" disables (or, enabled, un-ignores) every XID; a list adds
    to the file's (or the default) ``ignored_xids`` / ``force_enabled_xids``.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        environ: Mapping[str, str],
        file_data: Mapping[str, Any],
        *,
        blocked: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(settings_cls)
        self.labels: dict[str, str] = {}
        self.errors: list[str] = []
        self.notices: list[str] = []
        self._values: dict[str, Any] = {}
        decided = self._decide(environ, file_data)
        if "health" in blocked:  # the file's [health] is not a table; validation reports that alone
            return
        for key, (value, label) in decided.items():
            assign(self._values, key, value)
            self.labels[key] = label

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ answers for all fields at once

    def __call__(self) -> dict[str, Any]:
        return self._values

    def _decide(self, environ: Mapping[str, str], data: Mapping[str, Any]) -> dict[str, tuple[object, str]]:
        disable_all, disabled = self._xid_tokens(environ, DISABLE_HEALTHCHECKS_ENV)
        enable_all, enabled = self._xid_tokens(environ, ENABLE_HEALTHCHECKS_ENV)
        disable_src, enable_src = f"env {DISABLE_HEALTHCHECKS_ENV}", f"env {ENABLE_HEALTHCHECKS_ENV}"
        if enable_all:  # "all" enabled wins even over DP_DISABLE_HEALTHCHECKS=all
            return {"health.ignored_xids": ([], enable_src)}
        if disable_all:
            if enabled:
                self.notices.append(
                    f"{ENABLE_HEALTHCHECKS_ENV}={environ[ENABLE_HEALTHCHECKS_ENV]} has no effect: "
                    f"{DISABLE_HEALTHCHECKS_ENV}={environ[DISABLE_HEALTHCHECKS_ENV]} turns XID health checks "
                    "off entirely (as upstream does)"
                )
            return {"health.xid_events": (False, disable_src)}
        out: dict[str, tuple[object, str]] = {}
        for key, xids, source in (
            ("health.ignored_xids", disabled, disable_src),
            ("health.force_enabled_xids", enabled, enable_src),
        ):
            if not xids:
                continue
            found, base = lookup(data, key)
            if not found:
                base = list(getattr(HealthConfig(), key.partition(".")[2]))
            if isinstance(base, list):  # otherwise leave the file's bad value for validation to report
                out[key] = (base + [x for x in xids if x not in base], f"{'file' if found else 'default'} + {source}")
        return out

    def _xid_tokens(self, environ: Mapping[str, str], name: str) -> tuple[bool, list[int]]:
        """(all marker seen, XIDs); upstream lower-cases and splits on commas."""
        everything, xids = False, []
        for token in environ.get(name, "").lower().split(","):
            token = token.strip()
            if token in ("all", "xids"):
                everything = True
            elif token.isascii() and token.isdigit() and int(token) > 0:
                xids.append(int(token))
            elif token:
                # Upstream logs and skips a malformed token; a typo here should not pass silently.
                self.errors.append(
                    f"{name}: {token!r} is not an XID (expected \"all\", \"xids\" or "
                    f"comma-separated positive integers, e.g. {name}=48,79)"
                )
        return everything, xids


class CommandLineSource(InitSettingsSource):
    """``nvdp serve`` flags as init values; a None value is an unset flag and skipped."""

    def __init__(
        self, settings_cls: type[BaseSettings], overrides: Mapping[str, object] | None, *, blocked: frozenset[str]
    ) -> None:
        known = set(config_keys())
        self.labels: dict[str, str] = {}
        self.errors: list[str] = []
        values: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in known:
                raise ValueError(f"unknown config key {key!r} in command-line overrides")
            flag = "--" + key.rpartition(".")[2].replace("_", "-")
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if isinstance(value, str):
                try:
                    value = parse_text(key, value)
                except ValueError as exc:
                    self.errors.append(f"{flag}: {exc}")
                    continue
            if not is_blocked(key, blocked):
                assign(values, key, value)
                self.labels[key] = f"cli {flag}"
        super().__init__(settings_cls, values)


def is_blocked(key: str, blocked: frozenset[str]) -> bool:
    """Whether a table holding ``key`` is not a table in the file (so nothing may be merged into it)."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in blocked for n in range(1, len(parts)))


def lookup(data: Mapping[str, Any], key: str) -> tuple[bool, object]:
    node: object = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def assign(data: dict[str, Any], key: str, value: object) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
