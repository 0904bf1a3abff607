"""nvdp's configuration: /etc/nvdp/config.toml, NVDP_* environment, command-line overrides.

The daemon calls :func:`load_config` and reads the frozen :class:`Config`
(:func:`naming_from_config` turns it into the planner's resource naming,
:func:`sharing_from_config` into its sharing mode);
a :class:`ConfigError` means "exit 78 (EX_CONFIG) with ``str(error)``".
See docs/configuration.md for every key.
"""

from nvdp_node.config.errors import ConfigError
from nvdp_node.config.loader import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATH,
    LoadedConfig,
    env_var_name,
    load_config,
    parse_config,
    resolve_config_path,
)
from nvdp_node.config.keys import config_keys
from nvdp_node.config.naming import NamePatternConfig, ResourcesConfig, naming_from_config
from nvdp_node.config.schema import (
    Config,
    HealthConfig,
    KubeletConfig,
    LoggingConfig,
    PluginConfig,
    RuntimeCheckConfig,
)
from nvdp_node.config.sharing import (
    MpsConfig,
    SharedResourceConfig,
    SharingConfig,
    TimeSlicingConfig,
    sharing_from_config,
)

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "HealthConfig",
    "KubeletConfig",
    "LoadedConfig",
    "LoggingConfig",
    "MpsConfig",
    "NamePatternConfig",
    "PluginConfig",
    "ResourcesConfig",
    "RuntimeCheckConfig",
    "SharedResourceConfig",
    "SharingConfig",
    "TimeSlicingConfig",
    "config_keys",
    "env_var_name",
    "load_config",
    "naming_from_config",
    "parse_config",
    "resolve_config_path",
    "sharing_from_config",
]
