"""The ``[serve]`` settings table: where `vsalmonn serve` listens and who may ask it."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_PORT = 8765


class ServeConfig(BaseModel):
    """Bound to loopback by default: a memory of cameras and meetings is not for the whole network."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port (0: any free one)")
    token: SecretStr | None = Field(
        None,
        description="when set, every route but /health/* needs 'Authorization: Bearer TOKEN'; "
        "required to listen on any address but loopback",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins a browser page may call from (none: no CORS headers)"
    )


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


__all__ = ["DEFAULT_PORT", "ServeConfig", "is_loopback"]
