"""Build the effective :class:`Config` from file, environment and flags.

``nvdp serve`` calls :func:`load_config` at start (``secure=True``) and on
reload (``secure=True, missing_ok=False``); the ``nvdp config`` commands and
``nvdp check`` call it with the defaults to show or check the result.
Precedence is flag > environment (``NVDP_<SECTION>__<KEY>``, plus upstream's
``DP_DISABLE_HEALTHCHECKS`` / ``DP_ENABLE_HEALTHCHECKS``) > file > default;
the layers are pydantic-settings sources (``sources.py``) merged by
pydantic-settings itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import InitSettingsSource

from nvdp_node.config.errors import ConfigError, format_validation_error, problem_lines, split_unknown
from nvdp_node.config.files import writable_by_non_root
from nvdp_node.config.keys import config_keys
from nvdp_node.config.schema import Config
from nvdp_node.config.sharing_checks import sharing_notices
from nvdp_node.config.sources import (
    CONFIG_PATH_ENV,
    DISABLE_HEALTHCHECKS_ENV,
    ENABLE_HEALTHCHECKS_ENV,
    ENV_DELIMITER,
    ENV_PREFIX,
    CommandLineSource,
    NvdpEnvSource,
    TomlFileSource,
    UpstreamHealthEnvSource,
    env_var_name,
)

DEFAULT_CONFIG_PATH = Path("/etc/nvdp/config.toml")

__all__ = [
    "CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "DISABLE_HEALTHCHECKS_ENV", "ENABLE_HEALTHCHECKS_ENV",
    "ENV_DELIMITER", "ENV_PREFIX", "LoadedConfig", "config_keys", "env_var_name", "load_config",
    "parse_config", "resolve_config_path", "writable_by_non_root",
]


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


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
    secure: bool = False,
    missing_ok: bool = True,
) -> LoadedConfig:
    """Read, merge and validate; raise :class:`ConfigError` listing every problem.

    ``path`` None means $NVDP_CONFIG or /etc/nvdp/config.toml. ``overrides``
    maps dotted keys to command-line values; None values are skipped, so
    unset argparse options can be passed straight through. ``secure``: a
    file or directory that users other than root can change is an error, not
    a notice. ``missing_ok`` False: a missing file is an error, not the
    defaults (a reload must not silently fall back).
    """
    path = resolve_config_path(path, environ)
    file = TomlFileSource(Config, path, secure=secure, missing_ok=missing_ok)
    env = NvdpEnvSource(Config, environ, blocked=file.blocked)
    health = UpstreamHealthEnvSource(Config, environ, file.toml_data, blocked=file.blocked)
    cli = CommandLineSource(Config, overrides, blocked=file.blocked)

    notices = list(file.notices) if file.found else [f"no config file at {path}, using defaults"]
    errors = [*env.errors, *health.errors, *cli.errors]
    for key in sorted(set(health.labels) & set(env.labels)):
        errors.append(f"{env_var_name(key)} and {health.labels[key].rpartition('env ')[2]} both set {key}; use one")
    sources = dict.fromkeys(config_keys(), "default")
    for layer in (file, env, health, cli):  # lowest priority first: later labels win
        sources.update(layer.labels)

    header = f"invalid configuration in {path}" if file.found else "invalid configuration"
    config: Config | None = None
    try:
        config = Config.from_sources(cli, health, env, file)
    except ValidationError as exc:
        errors += format_validation_error(exc, sources)
    if config is None or errors or file.unknown:
        raise ConfigError(header, problem_lines(errors, file.unknown), path=path)
    notices += [*env.notices, *health.notices, *_unused_settings(config)]
    return LoadedConfig(config=config, path=path, sources=sources, notices=notices)


def _unused_settings(config: Config) -> list[str]:
    notices = sharing_notices(config)
    if config.resources.mig and config.plugin.mig_strategy == "none":
        notices.insert(
            0,
            'resources.mig has no effect while plugin.mig_strategy is "none": MIG-enabled GPUs are '
            "advertised whole, named by resources.gpus",
        )
    return notices


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
    known, unknown = split_unknown(data)
    config: Config | None = None
    try:
        config = Config.from_sources(InitSettingsSource(Config, known))
    except ValidationError as exc:
        lines.extend(format_validation_error(exc, sources))
    if config is None or lines or unknown:
        raise ConfigError(header, problem_lines(lines, unknown), path=path)
    return config
