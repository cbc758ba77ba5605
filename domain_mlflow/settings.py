"""Every environment variable the package reads, typed and validated in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.gate import Thresholds
from domain_mlflow.redaction import MASK, redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value is not None and value.strip() else None


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    return default if value is None else parse_bool(name, value)


def _number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float = math.inf
) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise ConfigError(f"{name}={value!r} is not valid: it must be a number {bound}")
    return number


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _raw(env, name)
    if value is None:
        return default
    # isascii: "²".isdigit() is True, and int("²") raises.
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ConfigError(f"{name}={value!r} is not valid: it must be a whole number "
                          f"between {low} and {high}")
    return int(value)


def redact_url(url: str) -> str:
    """``url`` (a URL, a DSN or a message) with its secrets as ``***``: see :func:`redact`."""
    return redact(url)


def _shown(value: str) -> str:
    """What a settings error may echo of a value: never a password, even unparsed."""
    shown = redact(value)
    if "://" not in shown and "@" in shown:
        shown = f"{MASK}@{shown.rpartition('@')[2]}"
    return shown


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _raw(env, name)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme in schemes and bool(parts.netloc or parts.path)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{name}={_shown(value)!r} is not valid: it must be a URL starting with "
            + " or ".join(f"{scheme}://" for scheme in schemes)
        )
    return value


def _postgres_dsn(env: Mapping[str, str]) -> str | None:
    """A ``postgresql://`` URL or libpq ``key=value`` pairs, as psycopg reads them."""
    value = _raw(env, "POSTGRES_DSN")
    if value is None or "://" in value:
        value = _url(env, "POSTGRES_DSN", ("postgres", "postgresql"))
    if value is None:
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except Exception:  # psycopg's reason may quote the password: it is not shown
        raise ConfigError(
            "POSTGRES_DSN is not valid: libpq cannot parse it; use a postgresql:// URL or "
            "key=value pairs such as 'host=db port=5432 dbname=app user=app' (the value is "
            "not shown: it may hold a password)"
        ) from None
    return value


@dataclass(frozen=True)
class Settings:
    """Configuration from the environment; secrets are kept out of ``repr``."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    enable_domain_training: bool = False
    metrics_time_window_days: int = 30
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8085
    mlflow_tracking_uri: str = DEFAULT_TRACKING_URI
    mlflow_ui_url: str | None = None
    postgres_dsn: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    localai_url: str | None = None
    localai_api_key: str | None = field(default=None, repr=False)
    localai_models_dir: str | None = None
    localai_timeout_seconds: float = 10.0
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_max_body_bytes: int = 1 << 20
    webhook_max_header_bytes: int = 16 * 1024
    webhook_header_timeout_seconds: float = 10.0
    webhook_body_timeout_seconds: float = 10.0
    webhook_keepalive_seconds: int = 5
    webhook_backlog: int = 2048
    webhook_limit_concurrency: int = 1024
    webhook_workers: int = 1
    poll_interval_seconds: float = 30.0
    # A cycle reads the versions registered since the newest recorded read, minus this
    # margin (a version committed late); every POLL_FULL_SWEEP_SECONDS one poller's
    # cycle reads them all (a recorded sweep counts for every poller).
    poll_lookback_seconds: float = 30.0
    poll_full_sweep_seconds: float = 900.0
    # Registry calls a cycle makes side by side; None: 1 on a SQLite or file store, else 16.
    registry_concurrency: int | None = None
    auto_rollback: bool = False
    alert_error_rate: float = 0.1
    alert_latency_p95_ms: float = 1000.0
    alert_min_requests: int = 10
    monitor_window_seconds: float = 300.0
    alert_webhook_url: str | None = field(default=None, repr=False)
    champion_challenger: bool = False
    promotion_mode: str = "auto"  # auto | manual; the registered-model tag promotion.mode wins
    approval_ttl_hours: float | None = None  # a version awaiting approval expires after this
    # Rollouts (canary, A/B): the tests' confidence, and how much slower a canary may be.
    rollout_confidence: float = 0.95
    canary_latency_tolerance: float = 0.2  # p95 may exceed production's by this fraction
    canary_latency_slack_ms: float = 10.0  # ... plus this many milliseconds
    promotion_retry_base_seconds: float = 2.0
    promotion_retry_max_seconds: float = 300.0
    config_store_path: str | None = None
    redis_key_prefix: str = "domain_mlflow"
    cache_dir: str = field(default_factory=lambda: str(Path.home() / ".cache" / "domain-mlflow"))
    checkpoint_dir: str = "./checkpoints"
    model_output_dir: str = "./models/domain_models"
    training_max_steps: int = 400
    progress_seconds: float = 10.0  # where no bar is shown, a progress line at least this often
    pipeline_data_dir: str = "./training_data"


PROMOTION_MODES = ("auto", "manual")


def promotion_mode(where: str, value: str) -> str:
    """``auto`` or ``manual`` (any case, surrounding spaces ignored), else ConfigError."""
    mode = value.strip().lower()
    if mode not in PROMOTION_MODES:
        raise ConfigError(f"{where} must be one of {', '.join(PROMOTION_MODES)}, got {value!r}")
    return mode


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default ``os.environ``); a bad value raises
    :class:`ConfigError` naming the variable."""
    env = os.environ if env is None else env
    defaults = Settings()
    base = Thresholds()
    thresholds = Thresholds(
        accuracy=_number(env, "DEPLOY_ACCURACY_THRESHOLD", base.accuracy, 0.0, 1.0),
        latency_ms=_number(env, "DEPLOY_LATENCY_THRESHOLD", base.latency_ms, 0.0),
        training_loss=_number(env, "DEPLOY_LOSS_THRESHOLD", base.training_loss, 0.0),
        validation_loss=_number(env, "DEPLOY_VAL_LOSS_THRESHOLD", base.validation_loss, 0.0),
    )
    return Settings(
        thresholds=thresholds,
        enable_domain_training=_bool(env, "ENABLE_DOMAIN_TRAINING", False),
        metrics_time_window_days=_integer(env, "METRICS_TIME_WINDOW_DAYS", 30, 1, 3650),
        dashboard_host=_raw(env, "DASHBOARD_HOST") or defaults.dashboard_host,
        dashboard_port=_integer(env, "DASHBOARD_PORT", 8085, 1, 65535),
        mlflow_tracking_uri=_raw(env, "MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
        mlflow_ui_url=_url(env, "MLFLOW_UI_URL", ("http", "https")),
        postgres_dsn=_postgres_dsn(env),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
        localai_url=_url(env, "LOCALAI_URL", ("http", "https")),
        localai_api_key=_raw(env, "LOCALAI_API_KEY"),
        localai_models_dir=_raw(env, "LOCALAI_MODELS_DIR"),
        localai_timeout_seconds=_number(env, "LOCALAI_TIMEOUT_SECONDS", 10.0, 0.1, 3600.0),
        webhook_secret=_raw(env, "WEBHOOK_SECRET"),
        webhook_max_body_bytes=_integer(env, "WEBHOOK_MAX_BODY_BYTES", 1 << 20, 1024, 1 << 30),
        webhook_max_header_bytes=_integer(env, "WEBHOOK_MAX_HEADER_BYTES", 16 * 1024, 1024,
                                          1 << 20),
        webhook_header_timeout_seconds=_number(env, "WEBHOOK_HEADER_TIMEOUT_SECONDS", 10.0, 0.1,
                                               3600.0),
        webhook_body_timeout_seconds=_number(env, "WEBHOOK_BODY_TIMEOUT_SECONDS", 10.0, 0.1,
                                             3600.0),
        webhook_keepalive_seconds=_integer(env, "WEBHOOK_KEEPALIVE_SECONDS", 5, 1, 3600),
        webhook_backlog=_integer(env, "WEBHOOK_BACKLOG", 2048, 1, 65535),
        webhook_limit_concurrency=_integer(env, "WEBHOOK_LIMIT_CONCURRENCY", 1024, 1, 1_000_000),
        webhook_workers=_integer(env, "WEBHOOK_WORKERS", 1, 1, 64),
        poll_interval_seconds=_number(env, "POLL_INTERVAL_SECONDS", 30.0, 0.1, 86400.0),
        poll_lookback_seconds=_number(env, "POLL_LOOKBACK_SECONDS", 30.0, 0.0, 86400.0),
        poll_full_sweep_seconds=_number(env, "POLL_FULL_SWEEP_SECONDS", 900.0, 1.0,
                                        7 * 86400.0),
        registry_concurrency=(_integer(env, "REGISTRY_CONCURRENCY", 8, 1, 256)
                              if _raw(env, "REGISTRY_CONCURRENCY") else None),
        auto_rollback=_bool(env, "AUTO_ROLLBACK", False),
        alert_error_rate=_number(env, "ALERT_ERROR_RATE_THRESHOLD", 0.1, 0.0, 1.0),
        alert_latency_p95_ms=_number(env, "ALERT_LATENCY_THRESHOLD_MS", 1000.0, 0.0),
        alert_min_requests=_integer(env, "ALERT_MIN_REQUESTS", 10, 1, 1_000_000),
        monitor_window_seconds=_number(env, "MONITOR_WINDOW_SECONDS", 300.0, 1.0, 86400.0),
        alert_webhook_url=_url(env, "ALERT_WEBHOOK_URL", ("http", "https")),
        champion_challenger=_bool(env, "DEPLOY_CHAMPION_CHALLENGER", False),
        promotion_mode=promotion_mode("PROMOTION_MODE", _raw(env, "PROMOTION_MODE") or "auto"),
        approval_ttl_hours=(_number(env, "APPROVAL_TTL_HOURS", 0.0, 0.0001, 87_600.0)
                            if _raw(env, "APPROVAL_TTL_HOURS") else None),
        rollout_confidence=_number(env, "ROLLOUT_CONFIDENCE", 0.95, 0.5, 0.9999),
        canary_latency_tolerance=_number(env, "CANARY_LATENCY_TOLERANCE", 0.2, 0.0, 100.0),
        canary_latency_slack_ms=_number(env, "CANARY_LATENCY_SLACK_MS", 10.0, 0.0, 3_600_000.0),
        promotion_retry_base_seconds=_number(env, "PROMOTION_RETRY_BASE_SECONDS", 2.0, 0.01,
                                             3600.0),
        promotion_retry_max_seconds=_number(env, "PROMOTION_RETRY_MAX_SECONDS", 300.0, 0.01,
                                            86400.0),
        config_store_path=_raw(env, "CONFIG_STORE_PATH"),
        redis_key_prefix=_raw(env, "REDIS_KEY_PREFIX") or defaults.redis_key_prefix,
        cache_dir=_raw(env, "DOMAIN_MLFLOW_CACHE_DIR") or defaults.cache_dir,
        checkpoint_dir=_raw(env, "CHECKPOINT_DIR") or defaults.checkpoint_dir,
        model_output_dir=_raw(env, "MODEL_OUTPUT_DIR") or defaults.model_output_dir,
        training_max_steps=_integer(env, "TRAINING_MAX_STEPS", defaults.training_max_steps, 1,
                                    10_000_000),
        pipeline_data_dir=_raw(env, "PIPELINE_DATA_DIR") or defaults.pipeline_data_dir,
        progress_seconds=_number(env, "DOMAIN_MLFLOW_PROGRESS_SECONDS", defaults.progress_seconds,
                                 0.0, 86400.0),
    )
