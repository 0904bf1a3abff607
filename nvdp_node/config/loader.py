"""Build the effective :class:`Config` from file, environment and flags.

``nvdp serve`` calls :func:`load_config` at start and on reload; the
``nvdp config`` commands call it to show or check the result. Precedence is
flag > environment (``NVDP_<SECTION>__<KEY>``, plus upstream's
``DP_DISABLE_HEALTHCHECKS`` / ``DP_ENABLE_HEALTHCHECKS``) > file > default.
The file is read here rather than by pydantic-settings, which would ignore a
missing file and raise TOML syntax errors as a foreign exception.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from nvdp_node.config.errors import (
    ConfigError,
    did_you_mean,
    format_validation_error,
    show_value,
    toml_error_lines,
    utf8_error_line,
)
from nvdp_node.config.schema import Config, HealthConfig, config_keys, is_list_key

DEFAULT_CONFIG_PATH = Path("/etc/nvdp/config.toml")
CONFIG_PATH_ENV = "NVDP_CONFIG"
DISABLE_HEALTHCHECKS_ENV = "DP_DISABLE_HEALTHCHECKS"
ENABLE_HEALTHCHECKS_ENV = "DP_ENABLE_HEALTHCHECKS"
ENV_PREFIX: str = Config.model_config["env_prefix"]
ENV_DELIMITER: str = Config.model_config["env_nested_delimiter"] or "__"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with where it came from, for ``config show --sources`` and the start-up log."""

    config: Config
    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def resolve_config_path(path: Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``path`` if given, else $NVDP_CONFIG if set and non-empty, else /etc/nvdp/config.toml."""
    if path is not None:
        return Path(path)
    return Path(environ[CONFIG_PATH_ENV]) if environ.get(CONFIG_PATH_ENV) else DEFAULT_CONFIG_PATH


def env_var_name(key: str) -> str:
    """The variable that sets a dotted key: kubelet.socket_dir -> NVDP_KUBELET__SOCKET_DIR."""
    return ENV_PREFIX + key.upper().replace(".", ENV_DELIMITER)


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
) -> LoadedConfig:
    """Read, merge and validate; raise :class:`ConfigError` listing every problem.

    ``path`` None means $NVDP_CONFIG or /etc/nvdp/config.toml. ``overrides``
    maps dotted keys to command-line values; None values are skipped, so
    unset argparse options can be passed straight through.
    """
    path = resolve_config_path(path, environ)
    notices: list[str] = []
    file_data = read_config_file(path)
    if file_data is None:
        notices.append(f"no config file at {path}, using defaults")
    else:
        notices.extend(permission_notices(path))
    data = copy.deepcopy(file_data) if file_data is not None else {}
    sources = {key: "file" if _lookup(data, key)[0] else "default" for key in config_keys()}

    errors: list[str] = []
    env = _from_environ(environ, notices, errors)
    health = _from_healthcheck_env(environ, data, notices, errors)
    for key in sorted(set(health) & set(env)):
        errors.append(f"{env_var_name(key)} and {health[key][1].rpartition('env ')[2]} both set {key}; use one")
    for key, (value, source) in {**env, **health, **_from_overrides(overrides)}.items():
        if _assign(data, key, value):
            sources[key] = source

    header = f"invalid configuration in {path}" if file_data is not None else "invalid configuration"
    config = parse_config(data, header=header, sources=sources, path=path, errors=errors)
    return LoadedConfig(config=config, path=path, sources=sources, notices=notices)


def parse_config(
    data: Mapping[str, object],
    *,
    header: str = "invalid configuration",
    sources: Mapping[str, str] | None = None,
    path: Path | None = None,
    errors: list[str] | None = None,
) -> Config:
    """Validate an already-merged mapping (pure). ``errors`` found earlier are reported first."""
    lines = list(errors or [])
    clean: dict[object, object] = {}
    for key, value in data.items():
        # BaseSettings takes _env_file, _cli_parse_args, ... from its input as
        # its own arguments, even in model_validate; never let a file set those.
        if isinstance(key, str) and key.startswith("_"):
            hint = did_you_mean(key)
            lines.append(f"{key}: unknown key" + (f" ({hint})" if hint else ""))
        else:
            clean[key] = value
    try:
        config = Config.model_validate(clean)
    except ValidationError as exc:
        lines.extend(format_validation_error(exc, sources))
    else:
        if not lines:
            return config
    raise ConfigError(header, lines, path=path)


def read_config_file(path: Path) -> dict[str, object] | None:
    """The parsed TOML document, or None if there is no file at ``path``."""
    header = f"invalid configuration in {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(header, [f"{path} is a directory, expected a TOML file"], path=path) from None
    except OSError as exc:
        raise ConfigError(header, [f"cannot read {path}: {exc.strerror or exc}"], path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(header, [utf8_error_line(path, raw, exc)], path=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(header, toml_error_lines(path, text, exc), path=path) from None
    except RecursionError:
        raise ConfigError(header, [f"{path}: arrays or tables are nested too deeply"], path=path) from None


def writable_by_non_root(mode: int, uid: int, gid: int) -> bool:
    """Whether a file with this mode and owner can be changed by someone other than root."""
    return bool(
        mode & stat.S_IWOTH or (mode & stat.S_IWGRP and gid != 0) or (mode & stat.S_IWUSR and uid != 0)
    )


def permission_notices(path: Path) -> list[str]:
    try:
        st = path.stat()
    except OSError:
        return []
    if not writable_by_non_root(st.st_mode, st.st_uid, st.st_gid):
        return []
    return [
        f"config file {path} is writable by non-root users (mode {stat.S_IMODE(st.st_mode):04o}, "
        f"owner {st.st_uid}:{st.st_gid}); fix with: chown root:root {path} && chmod 644 {path}"
    ]


def split_list(raw: str) -> list[object]:
    """An env or flag value for a list key: a JSON array, or comma-separated words."""
    if raw.lstrip().startswith("["):
        value = json.loads(raw)
        if not isinstance(value, list):
            raise ValueError("not a JSON array")
        return value
    return [item.strip() for item in raw.split(",") if item.strip()]


def _from_environ(environ: Mapping[str, str], notices: list[str], errors: list[str]) -> dict[str, tuple[object, str]]:
    by_name = {env_var_name(key): key for key in config_keys() if key != "version"}
    out: dict[str, tuple[object, str]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        raw = environ[name]
        key = by_name.get(name)
        if key is None:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            notices.append(f"ignoring environment variable {name}: not a config setting{hint}")
            continue
        if not is_list_key(key):
            out[key] = (raw, f"env {name}")
            continue
        try:
            out[key] = (split_list(raw), f"env {name}")
        except ValueError:
            errors.append(f"{name}: expected a comma-separated list or a JSON array (got {show_value(raw)})")
    return out


def _xid_tokens(environ: Mapping[str, str], name: str, errors: list[str]) -> tuple[bool, list[int]]:
    """(all marker seen, XIDs) from a DP_* variable; upstream lower-cases and splits on commas."""
    everything, xids = False, []
    for token in environ.get(name, "").lower().split(","):
        token = token.strip()
        if token in ("all", "xids"):
            everything = True
        elif token.isascii() and token.isdigit() and int(token) > 0:
            xids.append(int(token))
        elif token:
            # Upstream logs and skips a malformed token; a typo here should not pass silently.
            errors.append(
                f"{name}: {token!r} is not an XID (expected \"all\", \"xids\" or "
                f"comma-separated positive integers, e.g. {name}=48,79)"
            )
    return everything, xids


def _from_healthcheck_env(
    environ: Mapping[str, str], data: Mapping[str, object], notices: list[str], errors: list[str]
) -> dict[str, tuple[object, str]]:
    """Upstream's DP_* health variables, with the semantics of its internal/rm/health.go."""
    disable_all, disabled = _xid_tokens(environ, DISABLE_HEALTHCHECKS_ENV, errors)
    enable_all, enabled = _xid_tokens(environ, ENABLE_HEALTHCHECKS_ENV, errors)
    disable_src, enable_src = f"env {DISABLE_HEALTHCHECKS_ENV}", f"env {ENABLE_HEALTHCHECKS_ENV}"
    out: dict[str, tuple[object, str]] = {}
    if enable_all:  # "all" enabled wins even over DP_DISABLE_HEALTHCHECKS=all
        out["health.ignored_xids"] = ([], enable_src)
        return out
    if disable_all:
        out["health.xid_events"] = (False, disable_src)
        if enabled:
            notices.append(
                f"{ENABLE_HEALTHCHECKS_ENV}={environ[ENABLE_HEALTHCHECKS_ENV]} has no effect: "
                f"{DISABLE_HEALTHCHECKS_ENV}={environ[DISABLE_HEALTHCHECKS_ENV]} turns XID health checks "
                "off entirely (as upstream does)"
            )
        return out
    for key, xids, source in (
        ("health.ignored_xids", disabled, disable_src),
        ("health.force_enabled_xids", enabled, enable_src),
    ):
        if not xids:
            continue
        found, base = _lookup(data, key)
        if not found:
            base = list(getattr(HealthConfig(), key.partition(".")[2]))
        if isinstance(base, list):  # otherwise leave the file's bad value for validation to report
            added_to = "file" if found else "default"
            out[key] = (base + [x for x in xids if x not in base], f"{added_to} + {source}")
    return out


def _from_overrides(overrides: Mapping[str, object] | None) -> dict[str, tuple[object, str]]:
    known = set(config_keys())
    out: dict[str, tuple[object, str]] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in known:
            raise ValueError(f"unknown config key {key!r} in command-line overrides")
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str) and is_list_key(key):
            value = [item.strip() for item in value.split(",") if item.strip()]
        out[key] = (value, "cli --" + key.rpartition(".")[2].replace("_", "-"))
    return out


def _lookup(data: Mapping[str, object], key: str) -> tuple[bool, object]:
    node: object = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _assign(data: dict[str, object], key: str, value: object) -> bool:
    """Set a dotted key; False if the file put a non-table where a table belongs (validation reports it)."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        node = child
    node[leaf] = value
    return True
