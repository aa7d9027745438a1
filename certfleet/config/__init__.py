"""Config loading for the sync (``certfleet``) and the node agent (``certfleet-agent``).

Both files are HCL read by one loader (``certfleet.config.hcl``); every error names the
file, the line and the option, and says what would be valid. docs/config.md is the
reference of every option.
"""

from __future__ import annotations

from certfleet.config.agent import (
    AgentConfig,
    ClusterTrust,
    OrderOverride,
    OrderSettings,
    load_agent_config,
    parse_agent_config,
)
from certfleet.config.duration import format_duration, parse_duration
from certfleet.config.errors import (
    ConfigError,
    ConfigErrors,
    DurationError,
    UnknownClusterError,
    UnsafeFilesPathError,
)
from certfleet.config.hcl import load_hcl, read_config_text
from certfleet.config.path_template import (
    FILE_TYPES,
    ORDER_NAME_VARIABLE,
    expand_files_path,
    template_directory,
)
from certfleet.config.section import Section
from certfleet.config.sync import (
    DEFAULT_API_ENDPOINT,
    ClusterSyncConfig,
    OrderSyncConfig,
    SyncConfig,
    load_sync_config,
    parse_sync_config,
)

__all__ = [
    "DEFAULT_API_ENDPOINT",
    "FILE_TYPES",
    "ORDER_NAME_VARIABLE",
    "AgentConfig",
    "ClusterSyncConfig",
    "ClusterTrust",
    "ConfigError",
    "ConfigErrors",
    "DurationError",
    "OrderOverride",
    "OrderSettings",
    "OrderSyncConfig",
    "Section",
    "SyncConfig",
    "UnknownClusterError",
    "UnsafeFilesPathError",
    "expand_files_path",
    "format_duration",
    "load_agent_config",
    "load_hcl",
    "load_sync_config",
    "parse_agent_config",
    "parse_duration",
    "parse_sync_config",
    "read_config_text",
    "template_directory",
]
