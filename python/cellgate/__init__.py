"""cellgate: a cell router for financial-services platforms.

The hot path (tokens, profiles, placement, forwarding) is the compiled core ``cellgate._core``;
this package is the control plane around it: configuration, the RSGI gateway and the CLI.
"""

from cellgate._core import (
    Bridge,
    Clock,
    CoreConfigError,
    Decision,
    RequestVerifier,
    Router,
    SignatureError,
    __version__,
    sign_request,
    verify_request,
)
from cellgate.config import Config, ConfigError, build_router, load_config, parse_config

__all__ = [
    "Bridge",
    "Clock",
    "Config",
    "ConfigError",
    "CoreConfigError",
    "Decision",
    "RequestVerifier",
    "Router",
    "SignatureError",
    "__version__",
    "build_router",
    "load_config",
    "parse_config",
    "sign_request",
    "verify_request",
]
