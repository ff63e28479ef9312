"""Settings for every process, read from FACEPROOF_* environment variables (and a .env file).

One class, so a deployment has one table of knobs (README, .env.example). Secrets are
`SecretStr` so they never show up in reprs or logs.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.commands import MAX_OFFER_SDP, MAX_REFERENCES

#: The seeds' temporary token; refused in production by the security layer.
DEVELOPMENT_TOKEN = "faceproof-dev-token"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class TlsTermination(StrEnum):
    NONE = "none"
    PROXY = "proxy"
    NATIVE = "native"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEPROOF_", env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Field(default=Path("var"), description="Where embedded defaults keep their files.")

    # Adapters: embedded defaults (SQLite, local directory) unless a URL says otherwise.
    database_url: str = Field(default="", description="Empty: SQLite under data_dir.")
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    storage_url: str = Field(default="", description="Empty: a local directory under data_dir.")

    # Gateway
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: SecretStr | None = Field(
        default=SecretStr(DEVELOPMENT_TOKEN),
        description="Static bearer token (the seeds' temporary token). Empty disables it.",
    )
    compare_timeout_s: float = 15.0
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Ceiling of any request body (the image routes' own limits are capped by it) and of "
        "a public command's message body.",
    )
    max_small_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Body limit of routes that take no image (calls, admin, anything unlisted); the image "
        "routes get this plus their images (docs/security.md, 'Input limits').",
    )
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    session_ttl_s: int = Field(default=180, description="Default liveness session expiry.")
    public_url: str = Field(
        default="", description="Base URL of the gateway as browsers see it (hosted page links)."
    )
    offer_timeout_s: float = Field(default=15.0, description="Gateway's deadline for a call agent's answer.")
    max_sdp_bytes: int = Field(
        default=MAX_OFFER_SDP,
        ge=1024,
        le=MAX_OFFER_SDP,
        description="Longest SDP offer (413 SDP_TOO_LARGE); at most what StartSession carries (above it an "
        "offer the gateway accepted failed with a 500).",
    )
    reject_virtual_cameras: bool = Field(
        default=True,
        description="A session whose page reports a virtual or fake camera (OBS, ManyCam, Chromium's fake "
        "device...) fails at its offer with VIRTUAL_CAMERA (docs/liveness.md). Off only for test stacks "
        "whose browser streams Chromium's fake camera.",
    )
    max_json_depth: int = Field(default=32, ge=2, description="Deepest nesting of a JSON request body.")
    max_json_values: int = Field(
        default=10_000,
        ge=100,
        description="Values a JSON request body may hold (arrays and objects opened, plus commas; strings "
        "count once whatever their length): 28 MiB of '[{},{},...' parsed into 9.8 million objects, 715 MB.",
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Time a request's body may take to arrive, from its headers (408 REQUEST_TIMEOUT past "
        "it): a client trickling a byte at a time no longer holds a connection and its buffer for ever.",
    )
    failed_logins_per_second: float = Field(
        default=1.0,
        gt=0,
        description="Failed authentications (API keys, client tokens) one client address may make per second "
        "in a gateway process; past the burst, its requests that need one are refused 429 "
        "AUTHENTICATION_THROTTLED before any lookup.",
    )
    failed_logins_burst: int = Field(
        default=20, ge=1, description="Failed authentications in a row per address."
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections (and requests in progress) a gateway process serves at once; past "
        "it a request is answered 503 at once (file descriptors and memory stay bounded).",
    )

    # Security (docs/security.md)
    tls_termination: TlsTermination = Field(
        default=TlsTermination.NONE,
        description="none | proxy (a reverse proxy terminates TLS) | native (uvicorn, with the cert and "
        "key files). Production refuses none.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate for tls_termination=native."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_termination=native.")
    allow_static_token_in_production: bool = Field(
        default=False,
        description="Production refuses any static API token unless this is true (the development "
        "token is refused regardless).",
    )
    accept_noncommercial_models: bool = Field(
        default=False, description="Production refuses a non-commercial model pack unless this is true."
    )
    rate_limits: bool = Field(default=True, description="Per-client rate limits and monthly quotas.")
    static_rate_per_second: float = Field(
        default=50.0, gt=0, description="Steady rate of the static token (client 'static')."
    )
    static_burst: int = Field(default=100, ge=1, description="Burst of the static token.")
    static_monthly_quota: int = Field(
        default=100_000, ge=0, description="Monthly requests of the static token."
    )
    session_rate_per_second: float = Field(
        default=1.0, gt=0, description="Steady rate of one session's browser routes (offer, status)."
    )
    session_burst: int = Field(default=30, ge=1, description="Burst of one session's browser routes.")
    lockout_failures: int = Field(
        default=5,
        ge=1,
        description="Failed sessions of one subject or device within the window that lock it.",
    )
    lockout_window_s: float = Field(default=180.0, gt=0, description="Window counted for the lockout.")
    lockout_cooldown_s: float = Field(
        default=1800.0, gt=0, description="How long a locked subject is refused."
    )

    # Outbound fetches of URLs given by callers (infra/safe_fetch.py)
    fetch_allow_hosts: str = Field(
        default="", description="Comma-separated hosts, IPs or CIDRs that may be private (else refused)."
    )
    fetch_timeout_s: float = Field(default=10.0, description="Total time limit of one URL fetch.")
    fetch_max_redirects: int = Field(default=3, ge=0, le=10)

    # Call agent
    frame_rate: float = Field(default=8.0, description="Frames sampled per second from a session's video.")
    frame_jpeg_quality: int = Field(default=85, ge=30, le=100)
    heartbeat_s: float = Field(default=5.0, description="How often a call agent marks its connections alive.")
    connection_stale_s: float = Field(
        default=15.0, description="A connection not marked alive for this long may be replaced (reconnect)."
    )
    ice_servers: str = Field(default="", description="JSON list of RTCIceServer dicts for the call agent.")
    protoo_request_timeout_s: float = Field(
        default=10.0, description="Video calls: deadline of each protoo request to the controller's room."
    )
    room_relay_only: bool = Field(default=False, description="Video calls: use TURN relay candidates only.")
    no_video_timeout_s: float = Field(
        default=20.0, description="Video calls: seconds after joining until NO_VIDEO if no video came."
    )
    max_concurrent_calls: int = Field(
        default=8,
        ge=0,
        description="WebRTC connections one call agent holds at once (hosted sessions and video calls "
        "together; 0: no cap). Past it an offer gets 503 CALL_AGENT_BUSY, a video call one failure callback.",
    )

    # Liveness worker
    liveness_concurrency: int = Field(default=2, description="Frames analysed at once per liveness worker.")
    liveness_prefetch: int = Field(
        default=32,
        ge=1,
        description="Messages a liveness worker takes at a time (in place of broker_prefetch): "
        "frames of different sessions are handled at once, each session's one at a time, in order.",
    )
    expiry_sweep_s: float = Field(default=2.0, description="Seconds between sweeps for overdue sessions.")
    match_timeout_s: float = Field(
        default=30.0,
        description="Wait this long for the matcher, then finish without it.",
    )

    # Retention (the liveness worker's sweeper purges; docs/security.md)
    retention_s: int = Field(
        default=86_400, ge=60, description="Erase a session's frames, images and embeddings after this long."
    )
    retention_sweep_s: float = Field(default=300.0, gt=0, description="Seconds between retention purges.")
    reconcile_sweep_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between reconciler runs: unfinished erasures retried, orphan objects removed.",
    )
    orphan_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="An object under sessions/ that no session row owns is removed once this old.",
    )
    dead_letter_ttl_s: int | None = Field(
        default=None,
        ge=1,
        description="Seconds a dead letter is kept (x-message-ttl of every <queue>.dlq); empty: half of "
        "retention_s. Less than retention_s: a message lives in queues retention_s minus this, counted from "
        "when its data came in, so that with its dead letter's time it stays within retention (it may hold "
        "images).",
    )
    dead_letter_max_messages: int = Field(
        default=10_000, ge=1, description="Dead letters kept per queue (x-max-length; the oldest go first)."
    )
    dead_letter_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Bytes of dead letters kept per queue (x-max-length-bytes; the oldest go first).",
    )

    # Housekeeping (the liveness worker's sweeper; docs/operations.md)
    housekeeping_sweep_s: float = Field(
        default=300.0, gt=0, description="Seconds between clean-ups of processed commands and rate buckets."
    )
    processed_command_keep_s: int = Field(
        default=7 * 86_400,
        ge=60,
        description="Keep a public command's message id this long: a duplicate sent within it runs once.",
    )
    rate_bucket_idle_s: int = Field(
        default=86_400,
        ge=60,
        description="Forget a rate bucket idle this long (a forgotten bucket comes back full); a client's "
        "bucket is kept while it would not have refilled yet.",
    )
    housekeeping_batch: int = Field(
        default=1000, ge=1, le=100_000, description="Rows deleted per statement by the clean-ups."
    )
    outbox_keep_s: int = Field(
        default=86_400, ge=60, description="Forget an outbox message this long after it was published."
    )

    # The outbox relay (every process that writes outbox rows; infra/outbox.py)
    outbox_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds between looks at the outbox when it is empty (a fallback: a commit that "
        "writes to it wakes its own process's relay).",
    )

    # Video-call flows (notifier)
    flow_timeout_s: float = Field(default=300.0, description="A call flow not finished by then fails.")
    flow_sweep_s: float = Field(default=2.0, description="Seconds between sweeps of overdue flows.")
    callback_timeout_s: float = Field(default=10.0, description="Time limit of one callback PUT.")
    callback_retry_deadline_s: float = Field(
        default=900.0, description="Retry a failing callback this long, then dead-letter it."
    )
    callback_max_attempts: int = Field(default=10, ge=1, description="Callback attempts at most.")
    callback_backoff_s: float = Field(default=1.0, description="First retry delay (doubles, with jitter).")
    callback_backoff_max_s: float = Field(default=60.0, description="Longest delay between two attempts.")
    callback_secret: SecretStr | None = Field(
        default=None, description="Sign callbacks (HMAC-SHA256), send results in them."
    )
    callbacks_per_client: int = Field(
        default=2,
        ge=1,
        description="Callback attempts of one client a notifier runs at once (of broker_prefetch); "
        "more are put off a second, so a client whose controller is slow cannot hold up the others.",
    )
    reference_fetches_per_client: int = Field(
        default=2,
        ge=1,
        description="Reference fetches of one client a notifier runs at once (of broker_prefetch); "
        "more are put off a second, so a client whose reference list or Data Store is slow cannot "
        "hold up the others' decisions.",
    )

    # Matcher
    models_dir: Path | None = Field(default=None, description="Empty: data_dir/models.")
    model_pack: str = "permissive"
    prefer_gpu: bool = True
    inference_threads: int = 0
    embedder_precision: Literal["f32", "bf16"] = Field(
        default="bf16",
        description="The face embedder's precision (matcher, liveness identity check): bf16 where the "
        "CPU computes it natively (AVX-512 BF16, AMX) and the pack's calibration holds in it (SFace, "
        "the permissive pack), fp32 elsewhere; f32: fp32 everywhere (docs/models.md, 'bfloat16 embeddings').",
    )
    matcher_concurrency: int = 2
    matcher_batch_size: int = 16
    matcher_batch_wait_ms: float = 2.0
    max_references: int = Field(
        default=10, ge=1, le=MAX_REFERENCES, description="References per verify or call flow, at most."
    )
    max_target_faces: int = 20
    verify_model_checksums: bool = True

    # Broker
    broker_prefetch: int = 4
    delivery_limit: int = 3

    log_level: str = "INFO"

    # Telemetry (infra/telemetry)
    metrics_port: int = Field(
        default=9100,
        ge=0,
        le=65535,
        description="Port of each process's /metrics, the gateway's too (0: off); never the API port.",
    )
    tracing_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="OpenTelemetry spans to: none, console or otlp."
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP collector URL (tracing_exporter=otlp); empty: the exporter's default."
    )
    service_name: str = Field(default="", description="Service name in traces; empty: faceproof-<process>.")

    @model_validator(mode="after")
    def _dead_letters_within_retention(self) -> Settings:
        if self.dead_letter_ttl_s is not None and self.dead_letter_ttl_s >= self.retention_s:
            raise ValueError(
                f"FACEPROOF_DEAD_LETTER_TTL_S ({self.dead_letter_ttl_s}) must be less than "
                f"FACEPROOF_RETENTION_S ({self.retention_s}): a dead letter may hold face images, and its "
                "time in a queue before it died counts too"
            )
        return self

    @property
    def resolved_dead_letter_ttl_s(self) -> int:
        """How long a dead letter is kept: the setting, or half the retention period."""
        return self.dead_letter_ttl_s or self.retention_s // 2

    @property
    def message_ttl_s(self) -> int:
        """How long a message may live in queues, counted from when the data it carries came in
        (``Outgoing.origin``): with its dead letter's time (RabbitMQ starts that clock again) it
        stays within the retention period (docs/security.md, "Retention")."""
        return self.retention_s - self.resolved_dead_letter_ttl_s

    @property
    def public_command_ttl_s(self) -> int:
        """How long a public command may wait in the ingress's queue (an upstream client sets its
        own messages' expiration, so ``faceproof broker setup`` puts an operator policy on that
        queue): half of ``message_ttl_s``. The ingress forwards a command as if it had waited that
        long, so that the two waits together stay within ``message_ttl_s``."""
        return self.message_ttl_s // 2

    @property
    def resolved_rate_bucket_idle_s(self) -> float:
        """``rate_bucket_idle_s``, or longer if the static token's or a session's bucket needs longer
        to refill (a forgotten bucket comes back full). API clients' buckets: infra/db/security.py."""
        return max(
            float(self.rate_bucket_idle_s),
            self.static_burst / self.static_rate_per_second,
            self.session_burst / self.session_rate_per_second,
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'faceproof.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "objects").resolve().as_uri()

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def resolved_inference_threads(self) -> int:
        """Intra-op threads per model: the cores shared among the matcher's inference threads."""
        if self.inference_threads > 0:
            return self.inference_threads
        return max(1, len(os.sched_getaffinity(0)) // max(1, self.matcher_concurrency))

    @property
    def static_token(self) -> str | None:
        token = self.api_token.get_secret_value() if self.api_token else ""
        return token or None

    @property
    def callback_signing_secret(self) -> str | None:
        """The deployment's callback secret; None when unset or empty (callbacks unsigned)."""
        secret = self.callback_secret.get_secret_value() if self.callback_secret else ""
        return secret or None


def load_settings() -> Settings:
    return Settings()
