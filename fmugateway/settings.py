"""Settings for FMU Gateway, read from the environment in this one place.

With no environment at all the project runs on embedded defaults (SQLite, local
files, a filesystem Celery broker, billing off). Setting DATABASE_URL,
CELERY_BROKER_URL, STRIPE_* and storage variables switches on the real services.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value and value.strip() else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# --- where local state lives (embedded mode only) -----------------------------
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG")
FLY_APP_NAME = env_str("FLY_APP_NAME")
DATABASE_URL = env_str("DATABASE_URL")
# Deployed (a shared database or Fly) rather than the embedded `make run` mode: the
# defaults that protect customers (full sandbox isolation, a free-disk floor) follow it.
DEPLOYED = bool(DATABASE_URL or FLY_APP_NAME)
SITE_URL = env_str("SITE_URL") or (
    f"https://{FLY_APP_NAME}.fly.dev" if FLY_APP_NAME else "http://localhost:8000"
)
SITE_IS_HTTPS = SITE_URL.startswith("https://")


def _embedded_secret_key() -> str:
    """A random key kept in the var dir, so one embedded install keeps its sessions."""
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DATABASE_URL or FLY_APP_NAME:
        # Several machines must sign cookies with one key: a per-machine key would
        # repeat the predecessor's "valid here, invalid there" failure.
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL or FLY_APP_NAME is.")
    SECRET_KEY = _embedded_secret_key()

# API keys are stored as HMAC-SHA256(pepper, secret); the pepper must be shared by
# every machine, so by default it is derived from the (shared) SECRET_KEY.
API_KEY_PEPPER = (
    env_str("API_KEY_PEPPER")
    or hmac.new(SECRET_KEY.encode(), b"fmugateway.api-key-pepper", hashlib.sha256).hexdigest()
)

_site_host = urlparse(SITE_URL).hostname or "localhost"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", sorted({"localhost", "127.0.0.1", "[::1]", _site_host}))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "fmugateway",
    "accounts",
    "billing",
    "simulations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "fmugateway.urls"
WSGI_APPLICATION = "fmugateway.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.site",
                "billing.context_processors.billing",
                "simulations.context_processors.sandbox_isolation",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DATABASE_IS_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
if DATABASE_IS_SQLITE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
if FLY_APP_NAME and DATABASE_IS_SQLITE:
    # SQLite on Fly is one file per machine: the bug that sank the predecessor.
    raise ImproperlyConfigured(
        "Refusing to start on Fly.io with SQLite: set DATABASE_URL to the shared PostgreSQL."
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- cache (throttling, shared by every process) --------------------------------
CACHE_URL = env_str("CACHE_URL")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}
    )
}

# --- auth ---------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "accounts:keys"
LOGOUT_REDIRECT_URL = "landing"

# Brute-force protection: 10 failures for one e-mail from one address lock it out.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = env_int("LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_FORM_FIELD = "username"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_FLY_CLIENT_IP", "REMOTE_ADDR"]

# --- e-mail -------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "FMU Gateway <noreply@fmugateway.local>")

# --- i18n, static, media --------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js served from the pip package: no CDN, no vendored copy in the repo.
    "core.staticfinders.PlotlyJsFinder",
]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")

# --- file storage: uploaded FMUs and results ----------------------------------------
# Web and worker machines have separate disks, so on more than one machine FMUs and
# results must live in an S3-compatible bucket (Tigris on Fly, AWS S3, MinIO, ...). It is
# on exactly when a bucket is named; otherwise files stay under MEDIA_ROOT (embedded mode).
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME") or env_str("BUCKET_NAME")
OBJECT_STORAGE_ENABLED = bool(AWS_STORAGE_BUCKET_NAME)
if FLY_APP_NAME and not OBJECT_STORAGE_ENABLED:
    # A file on one machine's disk is missing on the others: the predecessor's bug, for files.
    raise ImproperlyConfigured(
        "Refusing to start on Fly.io with local file storage: set AWS_STORAGE_BUCKET_NAME "
        "(or BUCKET_NAME) and the AWS_* storage secrets."
    )
STORAGES = {
    "default": {
        "BACKEND": (
            "core.object_storage.ObjectStorage"
            if OBJECT_STORAGE_ENABLED
            else "django.core.files.storage.FileSystemStorage"
        )
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if OBJECT_STORAGE_ENABLED:
    AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL") or env_str("AWS_ENDPOINT_URL_S3") or None
    AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME") or env_str("AWS_REGION") or None
    AWS_ACCESS_KEY_ID = env_str("AWS_ACCESS_KEY_ID") or None
    AWS_SECRET_ACCESS_KEY = env_str("AWS_SECRET_ACCESS_KEY") or None
    # "path" for servers without per-bucket host names (some MinIO set-ups); default: boto's.
    AWS_S3_ADDRESSING_STYLE = env_str("AWS_S3_ADDRESSING_STYLE") or None
    AWS_LOCATION = env_str("AWS_LOCATION")  # a key prefix, to share one bucket between apps
    AWS_DEFAULT_ACL = None  # private objects: clients download through the API
    # Objects are keyed by content (FMUs) or by run id (results): the same key is the same file.
    AWS_S3_FILE_OVERWRITE = True
    # Fail within seconds when storage is down (uploads answer 503, /readyz says so) rather
    # than after botocore's 60 s connect timeout; timeouts, retries and upload part sizes
    # are set in core.object_storage.ObjectStorage.
    AWS_S3_CONNECT_TIMEOUT = env_int("AWS_S3_CONNECT_TIMEOUT", 5)
    AWS_S3_READ_TIMEOUT = env_int("AWS_S3_READ_TIMEOUT", 60)

# Retention: results are deleted this many days after their run finished; models unused
# (no run started) for MODEL_RETENTION_DAYS are deleted only when MODEL_RETENTION_ENABLED.
RESULT_RETENTION_DAYS = env_int("RESULT_RETENTION_DAYS", 30)
MODEL_RETENTION_ENABLED = env_bool("MODEL_RETENTION_ENABLED")
MODEL_RETENTION_DAYS = env_int("MODEL_RETENTION_DAYS", 180)

# --- HTTPS (on whenever the public URL is https) ---------------------------------
if SITE_IS_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Fly's health checks reach the machine over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- health: what /readyz checks, in this order (core.health) ---------------------------
# Named here because some checks are apps' (the sandbox is the simulations app's) and core
# imports no app. A check passes by returning; whatever it raises is the reason it fails.
READINESS_CHECKS = {
    "database": "core.health.check_database",
    "broker": "core.health.check_broker",
    "storage": "core.storage.probe_storage",
    "sandbox": "simulations.health.check_sandbox",
}

# --- Celery ---------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
BROKER_IS_FILESYSTEM = CELERY_BROKER_URL.startswith("filesystem://")
if FLY_APP_NAME and BROKER_IS_FILESYSTEM:
    raise ImproperlyConfigured(
        "Refusing to start on Fly.io with the filesystem broker: set CELERY_BROKER_URL to Redis."
    )
_broker_dir = VAR_DIR / "celery-broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Celery's remote-control mailboxes; kombu's default is ./control in the cwd.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    if BROKER_IS_FILESYSTEM
    # "priority": a worker polls its queues in the order it consumes them (the default
    # queue, runs, before `studies`), not round robin: fmugateway/celery.py.
    else {"visibility_timeout": 3600, "queue_order_strategy": "priority"}
)
if BROKER_IS_FILESYSTEM:
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this
# is set; fmugateway/celery.py closes old or broken connections instead, as Django
# does around requests (CONN_MAX_AGE, CONN_HEALTH_CHECKS).
CELERY_DB_REUSE_MAX = 1000

# --- billing ----------------------------------------------------------------------
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env_str("STRIPE_PUBLISHABLE_KEY")
# The key says which mode it is (sk_live_/rk_live_ or sk_test_/rk_test_); a flag that
# disagrees with it is refused rather than trusted.
_stripe_key_is_live = "_live_" in STRIPE_SECRET_KEY
STRIPE_LIVE_MODE = env_bool("STRIPE_LIVE_MODE", _stripe_key_is_live)
if STRIPE_SECRET_KEY and _stripe_key_is_live != STRIPE_LIVE_MODE:
    raise ImproperlyConfigured("STRIPE_LIVE_MODE does not match the mode of STRIPE_SECRET_KEY.")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
BILLING_ENABLED = bool(STRIPE_SECRET_KEY)
# dj-stripe's ~100 migrations cost ~40 s on SQLite: the embedded mode (SQLite, billing
# off) leaves it out so that `make run` starts fast. PostgreSQL or billing on: installed.
STRIPE_APP_INSTALLED = BILLING_ENABLED or not DATABASE_IS_SQLITE
if STRIPE_APP_INSTALLED:
    INSTALLED_APPS.insert(INSTALLED_APPS.index("billing"), "djstripe")
# dj-stripe: webhooks arrive at /stripe/webhook/<uuid>/ and are verified with the
# endpoint's signing secret (HMAC-SHA256, 300 s tolerance); Stripe objects are keyed
# by their Stripe id. The SDK's api_key/api_base are set in billing's AppConfig.ready().
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# Catch up with Stripe after missed webhooks (idempotent; a no-op with billing off).
BILLING_BEAT_SCHEDULE = {
    "reconcile-payments": {"task": "billing.tasks.reconcile_payments", "schedule": 900.0},
}
SIMULATION_PRICE_CENTS = env_int("SIMULATION_PRICE_CENTS", 100)
STUDY_CASE_PRICE_CENTS = env_int("STUDY_CASE_PRICE_CENTS", 2)  # per case of a study
SIMULATION_PRICE_CURRENCY = env_str("SIMULATION_PRICE_CURRENCY", "usd")
PAYMENT_TOKEN_TTL = env_int("PAYMENT_TOKEN_TTL", 30 * 60)
CHECKOUT_SESSION_TTL = env_int("CHECKOUT_SESSION_TTL", 60 * 60)

# --- simulations: upload caps and what one run may use ----------------------------
FMU_MAX_UPLOAD_BYTES = env_int("FMU_MAX_UPLOAD_BYTES", 200 * 1024 * 1024)
FMU_MAX_ENTRIES = env_int("FMU_MAX_ENTRIES", 10_000)
FMU_MAX_UNCOMPRESSED_BYTES = env_int("FMU_MAX_UNCOMPRESSED_BYTES", 2 * 1024**3)
FMU_MAX_COMPRESSION_RATIO = env_int("FMU_MAX_COMPRESSION_RATIO", 200)
# Every upload is streamed to a temporary file while it is hashed; none sits in memory.
FILE_UPLOAD_HANDLERS = ["simulations.uploads.HashingUploadHandler"]
SIMULATION_CPU_SECONDS = env_int("SIMULATION_CPU_SECONDS", 300)
SIMULATION_MEMORY_BYTES = env_int("SIMULATION_MEMORY_BYTES", 2 * 1024**3)
SIMULATION_RESULT_MAX_BYTES = env_int("SIMULATION_RESULT_MAX_BYTES", 512 * 1024**2)
SIMULATION_MAX_PROCESSES = env_int("SIMULATION_MAX_PROCESSES", 8)
SIMULATION_MAX_WALL_SECONDS = env_int("SIMULATION_MAX_WALL_SECONDS", 600)
SIMULATION_DEFAULT_WALL_SECONDS = env_int("SIMULATION_DEFAULT_WALL_SECONDS", 120)
SIMULATION_MAX_OUTPUT_POINTS = env_int("SIMULATION_MAX_OUTPUT_POINTS", 2_000_000)
SIMULATION_MAX_INPUT_ROWS = env_int("SIMULATION_MAX_INPUT_ROWS", 100_000)
# What one run may write (its scratch tmpfs), on top of the memory cap.
SIMULATION_DISK_BYTES = env_int("SIMULATION_DISK_BYTES", 1024**3)
# A running run renews its lease while it reports progress; a run whose lease ran
# out (its worker died) is failed by the reconciliation task.
SIMULATION_LEASE_SECONDS = env_int("SIMULATION_LEASE_SECONDS", 60)
SIMULATION_WAIT_MAX_SECONDS = 30

# --- studies: many cases of one model, paid once (docs/studies.md) ----------------
# The most cases one study may have, and output points all its cases may record (cases
# x points per case, estimated from the base request before anything is built).
STUDY_MAX_CASES = env_int("STUDY_MAX_CASES", 10_000)
STUDY_MAX_OUTPUT_POINTS = env_int("STUDY_MAX_OUTPUT_POINTS", 50_000_000)
# A chunk (one task, one sandbox process) takes about this many seconds of cases, sized
# from the study's finished chunks: short enough that a run waiting on the default queue
# gets the next free slot within seconds. Its first chunk has STUDY_FIRST_CHUNK_CASES.
STUDY_CHUNK_SECONDS = float(env_str("STUDY_CHUNK_SECONDS") or 2.0)
STUDY_FIRST_CHUNK_CASES = env_int("STUDY_FIRST_CHUNK_CASES", 8)
STUDY_MAX_CHUNK_CASES = env_int("STUDY_MAX_CHUNK_CASES", 500)
# Chunks of one study that may run at once (tickets queued; each queues its successor).
STUDY_PARALLEL_CHUNKS = env_int("STUDY_PARALLEL_CHUNKS", 8)
# A chunk whose worker stopped renewing its lease puts its cases back in the queue, at
# most this many times per case; then they fail as worker_lost (refunded).
STUDY_CASE_MAX_ATTEMPTS = env_int("STUDY_CASE_MAX_ATTEMPTS", 3)
# A study with queued cases and no chunk claimed or ended for this long lost its tickets
# (a broker flushed): reconciliation sends it one more.
STUDY_STALLED_SECONDS = env_int("STUDY_STALLED_SECONDS", 600)

# --- the sandbox: a worker takes no run below the required isolation (fail closed) ----
# "full": namespaces, a uid per run, cgroups, a disk quota, seccomp and rlimits, all of
# them (fmuengine.protocol.FULL_ISOLATION); "none": whatever the machine allows, for a
# developer's `make run`, where every page then says that runs are not isolated.
SANDBOX_REQUIRED_ISOLATION = env_str("SANDBOX_REQUIRED_ISOLATION", "full" if DEPLOYED else "none")
if SANDBOX_REQUIRED_ISOLATION not in ("full", "none"):
    raise ImproperlyConfigured(
        f"SANDBOX_REQUIRED_ISOLATION must be 'full' or 'none', not {SANDBOX_REQUIRED_ISOLATION!r}."
    )
# A root sandbox daemon's unix socket (`python -m fmuengine.sandbox --listen PATH`), for a
# worker that is not root; unset, each worker process starts its own sandbox server.
SANDBOX_SOCKET = env_str("SANDBOX_SOCKET") or None
# Where runs get their private dirs. One per machine, not per VAR_DIR: the slot locks in
# it give concurrent runs distinct uids machine-wide. The engine accepts it only as a
# directory of the worker's own user that nobody else can write.
SANDBOX_RUN_ROOT = Path(env_str("SANDBOX_RUN_ROOT") or "/tmp/fmu-gateway-sandbox")  # noqa: S108
# Below this much free disk under the run root a worker takes no run (a full disk would
# fail runs as the platform's fault, and refund them, one after the other).
SANDBOX_MIN_FREE_DISK_BYTES = env_int("SANDBOX_MIN_FREE_DISK_BYTES", 2 * 1024**3 if DEPLOYED else 0)
# A worker that refused a run hands it back to the queue for this long before any
# worker (itself included) tries it again.
SANDBOX_REFUSAL_RETRY_SECONDS = env_int("SANDBOX_REFUSAL_RETRY_SECONDS", 30)
# How often a worker re-checks its sandbox: it records its status (what /readyz and the
# admin read), and stops or resumes consuming runs. A worker that started before its
# sandbox daemon was up takes runs at most this long after the daemon is.
SANDBOX_CHECK_INTERVAL_SECONDS = env_int("SANDBOX_CHECK_INTERVAL_SECONDS", 30)

CELERY_BEAT_SCHEDULE = {
    **BILLING_BEAT_SCHEDULE,
    "reconcile-stale-simulations": {
        "task": "simulations.tasks.reconcile_stale_simulations",
        "schedule": 60.0,
    },
    "reconcile-stale-study-chunks": {
        "task": "simulations.tasks.reconcile_stale_study_chunks",
        "schedule": 60.0,
    },
    # Idempotent, so one beat per worker machine (fly.toml's `worker -B`) is safe.
    "apply-storage-retention": {
        "task": "simulations.tasks.apply_storage_retention",
        "schedule": 3600.0,
    },
}

# --- API --------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Sessions too, so portal pages can read the same JSON (with CSRF on writes).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "core.handlers.problem_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_RATE_LIMIT", "600/min")},
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # ?format=csv|json selects a result format, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# The OpenAPI 3 schema at /api/schema/ and its docs at /api/docs/ (core/openapi.py).
SPECTACULAR_SETTINGS = {
    "TITLE": "FMU Gateway API",
    "DESCRIPTION": (
        "Upload FMUs, run simulations and fetch their results. Authenticate with "
        "`Authorization: Bearer fmu_<prefix>_<secret>`. Errors are RFC 9457 "
        "`application/problem+json`; a run that needs paying answers 402 with a checkout link."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs are public; a stray Authorization header must not 401 them.
    "SERVE_AUTHENTICATION": [],
    "AUTHENTICATION_WHITELIST": ["accounts.authentication.ApiKeyAuthentication"],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SimulationStatusEnum": "simulations.models.SimulationStatus",
        "PaymentStatusEnum": "billing.models.PaymentStatus",
        "ChargeKindEnum": "billing.charges.ChargeKind.choices",
    },
    "PREPROCESSING_HOOKS": ["core.openapi.only_api_endpoints"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}
