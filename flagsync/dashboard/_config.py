"""How the dashboard is configured, and the check that runs before it listens anywhere.

Free of the web stack on purpose: `check_config` is what refuses a non-loopback address
without a token, and the tests call it without binding a socket.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Final

from flagsync.errors import FlagsyncError

__all__ = [
    "DEFAULT_PORT",
    "SIGNING_KEY_ENV",
    "TOKEN_ENV",
    "DashboardConfig",
    "DashboardConfigError",
    "check_config",
    "is_loopback",
    "split_token",
]

DEFAULT_PORT: Final = 8600
TOKEN_ENV: Final = "FLAGSYNC_DASHBOARD_TOKEN"  # noqa: S105 - the variable's name, not a secret
SIGNING_KEY_ENV: Final = "FLAGSYNC_SIGNING_KEY"
"""Where the publisher (and so the CLI and the dashboard) finds the signing key's path."""
MIN_TOKEN_CHARS: Final = 8


class DashboardConfigError(FlagsyncError):
    """The dashboard would start unsafely or cannot start as configured."""


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads and writes, where it listens, and who may use it."""

    url: str
    namespace: str = "default"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    """`SECRET`, or `NAME:SECRET` to record NAME as the operator of every write."""
    actor: str | None = None
    """The operator's name in the change log when the token names nobody (default: OS user)."""
    wait_s: float = 2.0
    """How long a write waits for the live workers to apply it before answering."""
    signing_key: str | None = None
    """The operator's Ed25519 signing key file (signed mode); None: `$FLAGSYNC_SIGNING_KEY`,
    else unsigned writes (and read-only against a signed store)."""
    read_only: str | None = None
    """Why writes are refused (e.g. signed mode without a key), or None: writes allowed."""

    @property
    def secret(self) -> str | None:
        """The token's secret part (what clients must present), or None."""
        return None if self.token is None else split_token(self.token)[1]

    @property
    def operator(self) -> str | None:
        """The name the token carries, else `actor`; None means the OS user."""
        named = None if self.token is None else split_token(self.token)[0]
        return named or self.actor


def split_token(token: str) -> tuple[str | None, str]:
    """`NAME:SECRET` -> (NAME, SECRET); a token without a colon names nobody."""
    name, colon, secret = token.partition(":")
    if not colon:
        return None, token
    return name or None, secret


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1): only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_from_environment(given: str | None) -> str | None:
    """`--token`, else `$FLAGSYNC_DASHBOARD_TOKEN`, else None (an empty value is None)."""
    return given or os.environ.get(TOKEN_ENV) or None


def check_config(config: DashboardConfig) -> None:
    """Refuse a configuration that would expose the kill switch: a host other than
    loopback without a token, or a token too short to resist guessing."""
    if config.token is not None:
        secret = split_token(config.token)[1]
        if len(secret) < MIN_TOKEN_CHARS:
            raise DashboardConfigError(
                f"--token: the secret must have at least {MIN_TOKEN_CHARS} characters "
                f"(got {len(secret)})"
            )
    elif not is_loopback(config.host):
        raise DashboardConfigError(
            f"--host {config.host}: not a loopback address, so a token is required "
            f"(--token or {TOKEN_ENV}); refusing to start"
        )
    if not 0 < config.port < 65536:
        raise DashboardConfigError(f"--port {config.port}: not a TCP port (1-65535)")
