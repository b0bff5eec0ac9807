"""Configuration as one frozen value: what ``twistd vibews`` options and the embedding API both build."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs

DEFAULT_PORT = 3001


# Connections the kernel holds for us to accept. Twisted's default (50) overflows when a few hundred
# clients connect at once (a restart, a reconnect storm): their handshakes then stall or are reset.
LISTEN_BACKLOG = 1024


@attrs.frozen
class Config:
    """Every option of the contract's table, with its default."""

    port: int = DEFAULT_PORT
    interface: str = "127.0.0.1"
    endpoints: tuple[str, ...] = ()
    tokens: str | None = None
    data: str = "./vibews-data"
    redis: str | None = None
    allow_origins: tuple[str, ...] = ()
    max_message_size: int = 65536
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 10.0
    rate: float = 100.0
    burst: int = 200
    max_write_buffer: int = 1 << 20
    max_refused: int = 50
    history: int = 100_000
    durability: Literal["full", "process"] = "full"
    presence_grace: float = 5.0
    claim_ttl: float = 60.0
    max_connections: int = 10_000
    max_open_questions: int = 1000
    dashboard: bool = True

    @property
    def listen(self) -> tuple[str, ...]:
        """Endpoint descriptions to listen on: ``--endpoint`` values, else ``--port``/``--interface``."""
        if self.endpoints:
            return self.endpoints
        interface = self.interface.replace(":", "\\:")
        return (f"tcp:{self.port}:interface={interface}:backlog={LISTEN_BACKLOG}",)

    @property
    def data_dir(self) -> Path:
        return Path(self.data)

    @property
    def default_tokens_path(self) -> Path:
        return self.data_dir / "tokens"

    @property
    def tokens_path(self) -> Path:
        return Path(self.tokens) if self.tokens else self.default_tokens_path

    @property
    def initial_tokens_path(self) -> Path:
        return self.data_dir / "initial-tokens"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "vibews.sqlite3"
