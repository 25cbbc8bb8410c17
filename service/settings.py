"""One typed configuration object, read from ``RECSYS_*`` environment variables; the help text
of ``python -m service --help``; the check that names unknown ``RECSYS_*`` variables."""

from __future__ import annotations

import difflib
import os
import textwrap
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "RECSYS_"
# RECSYS_* variables the project's other programs read (the retrain scheduler's settings, the
# training CLI's options and its dataset/cache folders): deployments set them for every
# container, so the service must not call them unknown. The service never imports training:
# tests/service/test_service_config.py checks this list against training's source.
OTHER_PROGRAMS_VARIABLES = frozenset({
    "RECSYS_BUNDLES_ROOT", "RECSYS_CACHE_DIR", "RECSYS_CLIP_DIR", "RECSYS_DATA",
    "RECSYS_DATABASE_URL", "RECSYS_DATA_DIR", "RECSYS_METRICS_PORT", "RECSYS_RETRAIN_ARGS",
    "RECSYS_RETRAIN_CRON", "RECSYS_RETRAIN_GRACE_S", "RECSYS_RETRAIN_TIMEZONE",
    "RECSYS_STOP_TIMEOUT_S", "RECSYS_TABLE_PREFIX", "RECSYS_TRAIN_CONFIG",
})


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
    api_key: SecretStr | None = Field(
        None, description="Key of the writes (POST /items, DELETE /items/{id}, POST "
        "/interactions, POST /admin/reload), sent as the X-API-Key header. Unset: writes are "
        "refused (403) unless RECSYS_OPEN_WRITES is true.")
    open_writes: bool = Field(
        False, description="For local development only: with no RECSYS_API_KEY, accept writes "
        "from anyone who can reach the port. Ignored when RECSYS_API_KEY is set.")

    index_type: Literal["auto", "flat", "ivf", "ivfpq", "hnsw"] = Field(
        "auto", description="FAISS index of the bundle's items: exact inner product (flat), "
        "IVF-Flat (ivf), IVF with product-quantised codes (ivfpq) or HNSW; auto picks flat up "
        "to RECSYS_INDEX_EXACT_MAX_ITEMS items, ivf while the vectors fit "
        "RECSYS_INDEX_MEMORY_GB, ivfpq above (service/index_plan.py).")
    index_device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="Where FAISS searches; auto uses a GPU when FAISS sees one.")
    index_recall: float = Field(
        0.95, gt=0, le=1, description="Recall@100 an approximate index is calibrated to on "
        "load (its nprobe or efSearch, unless set), measured on a sample of the bundle's users.")
    index_exact_max_items: int = Field(
        50_000, ge=0, description="index_type=auto: exact search up to this many items.")
    index_memory_gb: float = Field(
        8.0, gt=0, description="index_type=auto: above this much float32 vector memory the "
        "index keeps compressed codes (ivfpq) instead of the vectors (ivf).")
    index_hnsw_max_items: int = Field(
        1_000_000, ge=0, description="index_type=auto: where IVF would have to probe half its "
        "lists to reach RECSYS_INDEX_RECALL, HNSW is built instead up to this many items (its "
        "build is the slowest), exact search above or if HNSW misses the target too.")
    ivf_nlist: int = Field(0, ge=0, description="IVF lists; 0 picks a power of two near "
                           "sqrt(items), at most 4,096.")
    ivf_nprobe: int = Field(0, ge=0, description="IVF lists searched per query; 0 calibrates "
                            "it to RECSYS_INDEX_RECALL.")
    pq_bytes: int = Field(0, ge=0, description="Bytes of an ivfpq code; 0: half the dimension.")
    hnsw_m: int = Field(32, ge=4, description="HNSW neighbours per node.")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build-time search depth.")
    hnsw_ef_search: int = Field(0, ge=0, description="HNSW query-time search depth; 0 "
                                "calibrates it to RECSYS_INDEX_RECALL.")

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
    # Online evaluation (service/served.py, eventlog/served.py)
    served_sample: float = Field(
        0.1, ge=0, le=1, description="Share of the users whose served lists are logged "
        "(written in batches off the request path) for the online evaluation; 0 logs none, "
        "1 every list (each logged list costs the miss path: benchmarks/serving.py).")
    online_window_s: float = Field(
        86_400.0, gt=0, description="An interaction counts against the lists served to its "
        "user at most this long before it; the hit-rate gauge covers the interactions of the "
        "last window.")
    online_eval_s: float = Field(
        300.0, ge=0, description="How often recsys_online_hit_rate is computed from the "
        "store; 0 never.")
    served_keep_days: float = Field(
        30.0, gt=0, description="Logged served lists older than this are deleted.")

    host: str = Field("127.0.0.1", description="Address python -m service listens on.")
    port: int = Field(8000, description="Port python -m service listens on.")
    access_log: bool = Field(
        False, description="uvicorn's plain access log as well (costly under load); the "
        "service's own line per request (route, status, latency, request id) is always logged.")
    log_format: Literal["json", "console"] = Field(
        "json", description="Log lines of python -m service: one JSON object a line, or "
        "human-readable console lines.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level logged by python -m service.")
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


def variable(field: str) -> str:
    return PREFIX + field.upper()


def service_variables() -> frozenset[str]:
    return frozenset(variable(field) for field in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``RECSYS_*`` names in ``environ`` that neither the service nor the project's other
    programs read, each with the closest known name (None when nothing is close)."""
    environ = os.environ if environ is None else environ
    service = service_variables()
    known = service | OTHER_PROGRAMS_VARIABLES
    unknown = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads names case-insensitively
        if upper.startswith(PREFIX) and upper not in known:
            unknown.append((name, _closest(upper, sorted(service))
                            or _closest(upper, sorted(OTHER_PROGRAMS_VARIABLES))))
    return unknown


def _closest(name: str, names: list[str]) -> str | None:
    """The known name most like ``name``, compared without the prefix they all share."""
    bare = {known[len(PREFIX):]: known for known in names}
    close = difflib.get_close_matches(name[len(PREFIX):], list(bare), n=1, cutoff=0.6)
    return bare[close[0]] if close else None


def unknown_variable_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    return [f"unknown environment variable {name} ignored"
            + (f": did you mean {close}?" if close else "")
            for name, close in unknown_variables(environ)]


def _type_name(annotation: object) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in args)
    if args and type(None) in args:  # X | None
        return " | ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    return {SecretStr: "secret"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def settings_help() -> str:
    """Every setting: its variable, type, default and description (``--help``)."""
    lines = []
    for field, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = ("unset" if default is None else str(default).lower()
                 if isinstance(default, bool) else repr(default) if default == "" else default)
        lines.append(f"  {variable(field)}  ({_type_name(info.annotation)}, default {shown})")
        lines.extend(textwrap.wrap(info.description or "", 92, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))
    return "\n".join(lines)
