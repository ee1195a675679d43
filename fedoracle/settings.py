"""Settings shared by every role, from flags or ``FEDORACLE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the chain, the broker and the blobs are, and who signs.

    Every field can be set as ``FEDORACLE_<FIELD>`` (e.g. ``FEDORACLE_RPC_URL``).
    """

    model_config = SettingsConfigDict(env_prefix="FEDORACLE_", extra="ignore")

    rpc_url: str = Field("http://127.0.0.1:8545", description="HTTP JSON-RPC URL of the chain")
    registry: str | None = Field(None, description="FLTaskRegistry address")
    broker_url: str = Field("mqtt://127.0.0.1:1883", description="MQTT broker URL")
    blob_store: str = Field(".fedoracle/blobs", description="blob store location (folder or URL)")
    key: SecretStr | None = Field(None, description="signing key source: 0x<hex>, dev:<n>, file:<path>, env:<VAR>")
    state_dir: Path = Field(Path(".fedoracle"), description="where a role keeps its local state")
    confirmations: int = Field(0, ge=0, description="blocks to wait before acting on an event")
    poll_interval: float = Field(0.25, gt=0, description="seconds between log polls")
    from_block: int = Field(0, ge=0, description="first block to follow when no checkpoint exists")
