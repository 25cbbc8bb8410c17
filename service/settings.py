"""One typed configuration object, read from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be configured with; validated once at start."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    bundle: Path = Field(Path("bundles/tiktok"), description="Bundle folder to serve.")
    reload_root: Path | None = Field(
        None, description="POST /admin/reload loads only folders inside it (default: the "
        "folder holding RECSYS_BUNDLE). Not the training CLI's RECSYS_BUNDLES_ROOT (the "
        "versions folder), though a deployment usually points both at one place."
    )
    feed_poll_s: float = Field(
        0.5, ge=0, description="How often to apply the other replicas' writes from the store's "
        "change feed (the bound on how stale a replica is); 0 never."
    )
    bundle_poll_s: float = Field(
        5.0, ge=0,
        description="How often to check whether RECSYS_BUNDLE resolves to another folder (a "
        "publish or rollback moved a `current` link) and load it; 0 never checks.",
    )
    bundle_failure_grace_s: float = Field(
        60.0, ge=0,
        description="How long RECSYS_BUNDLE may resolve to a folder the service refused to load "
        "(it keeps serving the previous bundle meanwhile) before GET /readyz answers 503.",
    )
    database_url: str = Field(
        "sqlite:///recsys.db", description="SQLAlchemy URL of the durable store."
    )
    table_prefix: str = Field("", pattern=r"^[a-z0-9_]*$", description="Prefix of SQL tables.")
    redis_url: str | None = Field(
        "redis://127.0.0.1:6379/0", description="Recommendation cache; empty disables it."
    )
    cache_prefix: str = Field("recsys", description="Namespace of every Redis key.")
    cache_ttl_s: int = Field(300, ge=1, description="Lifetime of a cached recommendation list.")
    local_cache_items: int = Field(
        10_000, ge=0,
        description="Recommendation lists also kept in process memory, in front of Redis "
        "(hot users without a network round trip); 0 keeps them in Redis only.",
    )
    redis_timeout_s: float = Field(0.2, gt=0, description="Redis connect and socket timeout.")
    redis_backoff_s: float = Field(3.0, ge=0, description="Pause after a Redis error.")
    api_key: SecretStr | None = Field(None, description="Required on mutating endpoints if set.")

    index_type: Literal["flat", "ivf", "hnsw"] = "flat"
    index_device: Literal["auto", "cpu", "gpu"] = "auto"
    ivf_nlist: int = Field(0, ge=0, description="IVF lists; 0 picks 4 * sqrt(items).")
    ivf_nprobe: int = Field(32, ge=1)
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)

    history_len: int = Field(50, ge=1, description="Most recent items fed to the user tower.")
    max_batch: int = Field(1024, ge=1, description="Largest POST /items batch.")
    max_body_bytes: int = Field(
        8 << 20, ge=1024, description="Largest request body; larger ones get 413 unparsed."
    )
    unknown_user: Literal["404", "popular"] = Field(
        "404", description="Answer for an unknown user without history."
    )
    verify_bundle: bool = Field(True, description="Check the sha256 of bundle files on load.")
    onnx_threads: int = Field(1, ge=1, description="Intra-op threads of each ONNX session.")
    text_tower_precision: Literal["int8", "fp32"] = Field(
        "int8", description="Which text tower a text bundle serves POST /items text with: "
        "int8 (the frozen encoder's weights quantised, faster) or fp32 (the exact one).")
    faiss_threads: int = Field(
        1, ge=1, description="OpenMP threads of FAISS; requests already run in parallel."
    )

    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = Field(True, description="uvicorn access log (costly under load).")
    # Connection limits of ``python -m service`` (service/server.py): it runs with no proxy in
    # front, so it must not let idle or half-sent requests hold connections for ever.
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must send a complete request head within this "
        "many seconds of opening or of its previous response, or it is closed.")
    body_timeout_s: float = Field(
        60.0, gt=0, description="A request's body must arrive within this many seconds of its "
        "head, or the connection is closed.")
    keep_alive_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long.")
    limit_concurrency: int = Field(
        0, ge=0, description="Open connections plus requests in progress beyond which new "
        "requests get 503 at once (uvicorn's limit_concurrency); 0: no limit.")

    @field_validator("redis_url", "api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


    def reload_boundary(self) -> Path:
        """The folder every POST /admin/reload target must lie in."""
        return (self.reload_root or self.bundle.absolute().parent).resolve()
