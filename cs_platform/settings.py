"""Settings, all read from the environment through one `environ.Env()`.

Without `DATABASE_URL` and `REDIS_URL` the platform runs as the embedded default: SQLite,
the in-memory channel layer, tasks run in-process and a local llama.cpp model. With them set,
the same code runs on PostgreSQL, Redis, separate Celery workers and vLLM.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import re
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent


class StrictEnv(environ.Env):
    """environ.Env whose numbers and booleans refuse a value they cannot read, with a sentence."""

    # django-environ reads any word it does not know (DEBUG=maybe) as false, and int("10MB") stops
    # start-up with a bare ValueError; either way the operator is not told which variable is wrong.
    TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
    FALSE_WORDS = frozenset({"false", "0", "no", "off"})

    def _raw(self, var: str) -> str | None:
        """Return the variable's text, or None when it is unset or empty (its default then applies)."""
        raw = self.ENVIRON.get(var)
        return raw.strip() if raw is not None and raw.strip() else None

    def bool(self, var: str, default: builtins.bool | environ.NoValue = environ.Env.NOTSET) -> builtins.bool:
        raw = self._raw(var)
        if raw is None:
            return super().bool(var, default=default)
        if raw.lower() in self.TRUE_WORDS:
            return True
        if raw.lower() in self.FALSE_WORDS:
            return False
        raise ImproperlyConfigured(
            f"{var} must be true or false (true/false, 1/0, yes/no, on/off), not {raw!r}."
        )

    def int(self, var: str, default: builtins.int | environ.NoValue = environ.Env.NOTSET) -> builtins.int:
        raw = self._raw(var)
        if raw is None:
            return super().int(var, default=default)
        try:
            return builtins.int(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be a whole number, not {raw!r}.") from None

    def float(
        self, var: str, default: builtins.float | environ.NoValue = environ.Env.NOTSET
    ) -> builtins.float:
        raw = self._raw(var)
        if raw is None:
            return super().float(var, default=default)
        try:
            value = builtins.float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ImproperlyConfigured(f"{var} must be a finite number, not {raw!r}.")
        return value


env = StrictEnv()

DEBUG = env.bool("DEBUG", default=False)

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

REDIS_URL = env.str("REDIS_URL", default="")
# The embedded default: no Redis means one process with everything inside it.
EMBEDDED = not REDIS_URL


def _embedded_secret_key() -> str:
    """Return the embedded default's secret key, created once and kept in VAR_DIR."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set when REDIS_URL is set (a production deployment).")
    SECRET_KEY = _embedded_secret_key()

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Proxies whose X-Forwarded-For is believed when recording a customer's IP address.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "corsheaders",
    "cs_platform",
    "conversations",
    "inference",
    "knowledge",
    "agents",
    "review",
    "reports",
    "access",
    "safety",
    "gateway",
    "tools",
    # Failed staff sign-ins and lock-outs (cs_platform/staff_login.py).
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Each request's id (a sane X-Request-ID, else a new one) on its log lines and in its answer.
    "cs_platform.logs.RequestIdMiddleware",
    # Counts every response for /metrics, refusals by the middleware below included.
    "cs_platform.metrics.RequestCountMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # IP rules (access/): before sessions, so a refused address costs no session read; after CORS, so a
    # browser on another origin can read the refusal.
    "access.middleware.IpRulesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a locked-out sign-in into its 429 answer (cs_platform/staff_login.py).
    "axes.middleware.AxesMiddleware",
]

# Messages (admin's included) are kept in the session, on the server: a new API key is shown once in
# one, and must never travel in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "cs_platform.urls"

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
                "reports.context_processors.staff_links",
            ],
        },
    },
]

ASGI_APPLICATION = "cs_platform.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# PostgreSQL only (SQLite has no pool): connections one process opens at most; 0 turns the pool off,
# and each request then opens and closes its own.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=10)
DATABASE_POOL_MIN_SIZE = env.int("DATABASE_POOL_MIN_SIZE", default=1)
# Seconds a request waits for a free pooled connection before it fails (psycopg_pool.PoolTimeout).
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=10.0)
DATABASE_CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default shares one file between the server and its in-process tasks.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
else:
    # Under ASGI every request and every websocket call runs in a thread of its own, so persistent
    # connections (CONN_MAX_AGE > 0) multiply with the threads (one daphne held 99). Each process
    # keeps a pool of at most DATABASE_POOL_MAX_SIZE instead; a request waits for a free connection.
    DATABASES["default"]["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASE_POOL_MAX_SIZE > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": DATABASE_POOL_MIN_SIZE,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
        }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Attachments on S3-compatible storage (MinIO, Ceph, a cloud's S3), so that web and workers on
# different machines share them without a shared disk: set ATTACHMENT_S3_BUCKET (django-storages).
# Files stay private: the platform reads them itself and serves them through its signed links, so
# the bucket needs no public access and no URL of it ever reaches a browser. Local files (MEDIA_ROOT)
# stay the default.
ATTACHMENT_S3_BUCKET = env.str("ATTACHMENT_S3_BUCKET", default="")
if ATTACHMENT_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": ATTACHMENT_S3_BUCKET,
            "endpoint_url": env.str("ATTACHMENT_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("ATTACHMENT_S3_REGION", default="") or None,
            "access_key": env.str("ATTACHMENT_S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("ATTACHMENT_S3_SECRET_ACCESS_KEY", default="") or None,
            "location": env.str("ATTACHMENT_S3_PREFIX", default=""),
            "default_acl": "private",
            "querystring_auth": True,
            # A name is never reused: an upload with a taken name gets a new one, not the old file.
            "file_overwrite": False,
            "addressing_style": env.str("ATTACHMENT_S3_ADDRESSING_STYLE", default="") or None,
        },
    }
# The embedded default serves static files straight from the source folders, with no collectstatic.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=EMBEDDED or DEBUG)

CHANNEL_LAYER_MAX_CONNECTIONS = env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=100)
if EMBEDDED:
    CHANNEL_LAYERS: dict[str, dict[str, object]] = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    CACHES: dict[str, dict[str, object]] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis, with receive loops that wait out a Redis restart and re-join their groups.
            "BACKEND": "cs_platform.channel_layer.ResilientRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which aborts channels-redis's blocking
                # BZPOPMIN (itself 5 s) on every idle socket (channels_redis#422). A timeout above it
                # keeps idle sockets open and still notices a Redis that stopped answering.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        # Connections per process; past them a call waits (up to pool_wait_seconds)
                        # for one to be free rather than failing (cs_platform/channel_layer.py).
                        "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS,
                        "pool_wait_seconds": 10,
                        # No transparent retry here: a blocking receive must fail when Redis goes, so
                        # that the layer re-joins the groups a restarted Redis forgot. A pooled
                        # connection Redis closed is replaced when it is taken from the pool.
                    }
                ],
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Fail fast while Redis is away (callers treat the cache as best-effort): one quick
            # retry on a new connection, for one that Redis dropped between checkout and command.
            "OPTIONS": {
                "socket_connect_timeout": 2,
                "socket_timeout": 5,
                "socket_keepalive": True,
                "health_check_interval": 10,
                "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
                "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            },
        }
    }
    # django-ratelimit's counters, in the same Redis, failing open while it is unreachable.
    CACHES["ratelimit"] = {**CACHES["default"], "BACKEND": "cs_platform.ratelimit.FailOpenRedisCache"}

# Celery. The embedded default runs tasks eagerly in-process; production uses Redis as the broker.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
# No result backend: a task's outcome is its reply row in the database, so results never touch Redis.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Celery builds a backend per thread unless it is thread-safe, each of the threads pool's threads
# paying ~3 ms (an entry-points scan) on its first task even with results ignored, since every task
# still calls the backend's no-op hooks. The disabled backend holds nothing: one for the process.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=EMBEDDED)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that loses Redis reconnects for as long as it takes (Celery's default gives up after 100
# tries), and a reply it is streaming runs on: its outcome is saved in the database, not in Redis.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    # Idle broker connections are checked before use, so one left from before a restart is replaced.
    "health_check_interval": 10,
    "retry_on_timeout": True,
}
# Enqueueing a reply retries for well under a second (Celery's default policy), no longer: daphne
# enqueues on the thread its database work shares, which every socket of the process would wait
# for. A reply that could not be queued is failed by the sweeper after REPLY_QUEUE_TIMEOUT_SECONDS.
CELERY_TASK_PUBLISH_RETRY = True
# How often stalled replies are failed: by beat's task on a worker, and by every web process itself
# (cs_platform/sweeper.py), so that customers are told even when no worker is running.
REPLY_SWEEP_INTERVAL_SECONDS = env.int("REPLY_SWEEP_INTERVAL_SECONDS", default=15)
CELERY_BEAT_SCHEDULE = {
    "fail-stalled-replies": {
        "task": "inference.tasks.replies_fail_stalled",
        "schedule": timedelta(seconds=REPLY_SWEEP_INTERVAL_SECONDS),
    },
    # The reports' daily aggregates (reports/tasks.py): the last REPORTS_RECOMPUTE_DAYS finished days.
    "reports-daily-stats": {
        "task": "reports.tasks.daily_stats_update",
        "schedule": timedelta(seconds=env.int("REPORTS_UPDATE_INTERVAL_SECONDS", default=3600)),
    },
}
# How many finished days the beat task recomputes each run: a CSAT or a ticket that comes to an older
# conversation later reaches its day's aggregate within this window (older: manage.py reports_recompute).
REPORTS_RECOMPUTE_DAYS = env.int("REPORTS_RECOMPUTE_DAYS", default=7)
# Data retention (conversations/retention.py): conversations whose last activity (last message, else
# creation) is more than DATA_RETENTION_DAYS days ago are deleted with their messages, images,
# ratings, tickets and review items and the image files, by beat every DATA_RETENTION_INTERVAL_SECONDS,
# DATA_RETENTION_BATCH_SIZE conversations per transaction. 0 (the default) keeps everything. The
# reports' daily aggregates are kept; a retention inside the days they are recomputed (at most
# REPORTS_RECOMPUTE_DAYS + 1) is refused, since the recompute would count the purged days as empty.
DATA_RETENTION_DAYS = env.int("DATA_RETENTION_DAYS", default=0)
DATA_RETENTION_BATCH_SIZE = env.int("DATA_RETENTION_BATCH_SIZE", default=500)
CELERY_BEAT_SCHEDULE["purge-expired-conversations"] = {
    "task": "conversations.tasks.conversations_purge_expired",
    "schedule": timedelta(seconds=env.int("DATA_RETENTION_INTERVAL_SECONDS", default=3600)),
}

# The worker runtime, so that a plain `celery -A cs_platform worker` runs it: the threads pool, whose
# threads only hand each reply to the process's event loop (inference/runtime.py) and wait for it,
# so one process streams REPLY_CONCURRENCY_PER_PROCESS replies at once. The prefork pool
# (CELERY_WORKER_POOL=prefork) runs a loop per child and takes CELERY_WORKER_CONCURRENCY children.
CELERY_WORKER_POOL = env.str("CELERY_WORKER_POOL", default="threads")
REPLY_CONCURRENCY_PER_PROCESS = env.int("REPLY_CONCURRENCY_PER_PROCESS", default=100)
CELERY_WORKER_CONCURRENCY: int | None = (
    REPLY_CONCURRENCY_PER_PROCESS
    if CELERY_WORKER_POOL == "threads"
    else env.int("CELERY_WORKER_CONCURRENCY", default=0) or None
)

# Reply generation. In the embedded default it runs on the server's own event loop (the in-memory
# channel layer is per process and per loop); otherwise a Celery worker runs it.
REPLY_GENERATION_IN_PROCESS = env.bool("REPLY_GENERATION_IN_PROCESS", default=EMBEDDED)
# Agent assist: the console's "Draft with AI" (drafts run where replies do, on the same model).
AGENT_ASSIST_ENABLED = env.bool("AGENT_ASSIST_ENABLED", default=True)

# Inference server(s): any OpenAI-compatible endpoint (vLLM, llama.cpp). Comma-separated for fail-over.
INFERENCE_BASE_URLS: list[str] = env.list("INFERENCE_BASE_URL", default=["http://127.0.0.1:8081/v1"])
INFERENCE_MODEL = env.str("INFERENCE_MODEL", default="")
INFERENCE_API_KEY = env.str("INFERENCE_API_KEY", default="")
INFERENCE_VISION = env.bool("INFERENCE_VISION", default=not EMBEDDED)
INFERENCE_CONNECT_TIMEOUT = env.float("INFERENCE_CONNECT_TIMEOUT", default=5.0)
INFERENCE_FIRST_TOKEN_TIMEOUT = env.float("INFERENCE_FIRST_TOKEN_TIMEOUT", default=60.0)
INFERENCE_TOKEN_TIMEOUT = env.float("INFERENCE_TOKEN_TIMEOUT", default=30.0)
INFERENCE_TOTAL_TIMEOUT = env.float("INFERENCE_TOTAL_TIMEOUT", default=300.0)
# Fail-over: each server has this long to send its response headers and first event before the next
# INFERENCE_BASE_URL is tried, and a server that failed is tried last for the cool-down that follows.
INFERENCE_SERVER_RESPONSE_TIMEOUT = env.float("INFERENCE_SERVER_RESPONSE_TIMEOUT", default=10.0)
INFERENCE_SERVER_COOLDOWN_SECONDS = env.float("INFERENCE_SERVER_COOLDOWN_SECONDS", default=30.0)
# The model's context window in tokens; the history is cut to fit it with the reply's max tokens.
INFERENCE_CONTEXT_TOKENS = env.int("INFERENCE_CONTEXT_TOKENS", default=8192)
INFERENCE_COALESCE_SECONDS = env.float("INFERENCE_COALESCE_SECONDS", default=0.03)
# Images sent to the model per prompt, newest first (match vLLM's --limit-mm-per-prompt); older ones
# are replaced by a short text placeholder.
INFERENCE_MAX_IMAGES_PER_PROMPT = env.int("INFERENCE_MAX_IMAGES_PER_PROMPT", default=4)
# Chat templates without a system role (gemma) get the instructions in the first user turn instead.
INFERENCE_SYSTEM_PROMPT_IN_USER_TURN = env.bool("INFERENCE_SYSTEM_PROMPT_IN_USER_TURN", default=False)
# Offer the model a `handoff_to_human` tool (OpenAI tool calling), when the model-tool handoff trigger
# is on too. Only for a server that does tool calling (vLLM with --enable-auto-tool-choice and a
# --tool-call-parser): off by default, since the embedded llama.cpp model does none.
INFERENCE_HANDOFF_TOOL = env.bool("INFERENCE_HANDOFF_TOOL", default=False)
# Safety of what the assistant says (safety/): blocked terms stopped as a reply streams, and the
# disclaimer, both kept in admin. Each process reads them from the database at most this often, so an
# edit applies on every process within this many seconds (at once in the process that saved it).
SAFETY_CACHE_SECONDS = env.float("SAFETY_CACHE_SECONDS", default=10.0)
# The OpenAI-compatible gateway (gateway/, /v1/): the model name that answers as the assistant (the
# widget's profile, knowledge, citations, blocked terms and disclaimer); keys may also be allowed the
# inference server's own model, a plain proxy.
GATEWAY_ASSISTANT_MODEL = env.str("GATEWAY_ASSISTANT_MODEL", default="support-assistant")
# The largest request body /v1/ takes (images come inline as base64 data: URLs, a third larger).
GATEWAY_MAX_REQUEST_BYTES = env.int("GATEWAY_MAX_REQUEST_BYTES", default=20 * 1024 * 1024)
# Images per request (each normalised like an upload, ATTACHMENT_MAX_BYTES each).
GATEWAY_MAX_IMAGES_PER_REQUEST = env.int("GATEWAY_MAX_IMAGES_PER_REQUEST", default=4)
# An http(s) image URL (keys that may fetch them) must answer in full within this many seconds.
GATEWAY_IMAGE_FETCH_TIMEOUT_SECONDS = env.float("GATEWAY_IMAGE_FETCH_TIMEOUT_SECONDS", default=10.0)
# Internal networks an image URL may still point into (an intranet CDN, say): every other loopback,
# private, link-local or reserved address is refused, so a key cannot make the platform reach them.
GATEWAY_IMAGE_URL_ALLOWED_NETWORKS: list[str] = env.list("GATEWAY_IMAGE_URL_ALLOWED_NETWORKS", default=[])
# A reply whose worker has not shown progress for this long is failed and the customer told.
REPLY_STALLED_AFTER_SECONDS = env.int("REPLY_STALLED_AFTER_SECONDS", default=30)
# A reply no worker has picked up after this long is failed (no worker running, queue jammed).
REPLY_QUEUE_TIMEOUT_SECONDS = env.int("REPLY_QUEUE_TIMEOUT_SECONDS", default=60)
REPLY_HEARTBEAT_SECONDS = env.float("REPLY_HEARTBEAT_SECONDS", default=5.0)

# Attachments (images).
ATTACHMENT_MAX_BYTES = env.int("ATTACHMENT_MAX_BYTES", default=10 * 1024 * 1024)
ATTACHMENT_MAX_PER_MESSAGE = env.int("ATTACHMENT_MAX_PER_MESSAGE", default=4)
# The longest message text, a customer's or an agent's, in characters (`message_too_long` past it).
MESSAGE_MAX_CHARS = env.int("MESSAGE_MAX_CHARS", default=4000)
ATTACHMENT_MAX_SIDE = env.int("ATTACHMENT_MAX_SIDE", default=2048)
# Qwen-VL spends one visual token per 28x28 px patch: 1,605,632 px is at most 2048 visual tokens.
ATTACHMENT_MAX_PIXELS = env.int("ATTACHMENT_MAX_PIXELS", default=2048 * 28 * 28)
# Decompression bombs: pixels an upload may decode to (PNG, GIF, WebP and a JPEG of several scans decode
# at full size), and the declared pixels of a baseline JPEG, which is decoded at 1/2, 1/4 or 1/8 scale.
ATTACHMENT_MAX_DECODED_PIXELS = env.int("ATTACHMENT_MAX_DECODED_PIXELS", default=4096 * 4096)
ATTACHMENT_MAX_JPEG_PIXELS = env.int("ATTACHMENT_MAX_JPEG_PIXELS", default=50_000_000)
# Uploads normalised at once per web process (each may briefly need ~130 MB), and how long one
# waits for a slot before it is refused with 503 `busy`.
ATTACHMENT_NORMALISE_CONCURRENCY = env.int("ATTACHMENT_NORMALISE_CONCURRENCY", default=2)
ATTACHMENT_NORMALISE_WAIT_SECONDS = env.float("ATTACHMENT_NORMALISE_WAIT_SECONDS", default=5.0)
ATTACHMENT_URL_MAX_AGE_SECONDS = env.int("ATTACHMENT_URL_MAX_AGE_SECONDS", default=3600)
# OCR for text-only models (INFERENCE_VISION=false), where Tesseract is installed.
OCR_LANGUAGES = env.str("OCR_LANGUAGES", default="chi_sim+eng")
OCR_TIMEOUT_SECONDS = env.int("OCR_TIMEOUT_SECONDS", default=20)
OCR_MAX_CHARS = env.int("OCR_MAX_CHARS", default=2000)
# OCR runs when an image is uploaded; a reply waits at most this long for it before building its prompt.
OCR_WAIT_SECONDS = env.float("OCR_WAIT_SECONDS", default=10.0)

# Knowledge retrieval (knowledge/embedders.py, knowledge/indexing.py). The embedder: `local`, the
# embedded multilingual sentence encoder (no download), or `openai`, an OpenAI-compatible
# /v1/embeddings endpoint (vLLM with Qwen3-Embedding or bge-m3, llama.cpp with --embeddings).
KNOWLEDGE_EMBEDDER = env.str("KNOWLEDGE_EMBEDDER", default="local").strip().lower()
KNOWLEDGE_EMBEDDINGS_URL = env.str("KNOWLEDGE_EMBEDDINGS_URL", default="")
KNOWLEDGE_EMBEDDINGS_MODEL = env.str("KNOWLEDGE_EMBEDDINGS_MODEL", default="")
KNOWLEDGE_EMBEDDINGS_API_KEY = env.str("KNOWLEDGE_EMBEDDINGS_API_KEY", default="")
KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS = env.float("KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS", default=30.0)
KNOWLEDGE_EMBEDDINGS_BATCH_SIZE = env.int("KNOWLEDGE_EMBEDDINGS_BATCH_SIZE", default=64)
# Where each process keeps the index builds' files (one folder per build, the last two kept).
KNOWLEDGE_INDEX_DIR = Path(env.str("KNOWLEDGE_INDEX_DIR", default=str(VAR_DIR / "knowledge-index")))
# How often a process asks the database whether a newer index build is ready (one indexed query).
KNOWLEDGE_INDEX_CHECK_SECONDS = env.float("KNOWLEDGE_INDEX_CHECK_SECONDS", default=2.0)

# The widget: who may embed it and call its API from a browser.
WIDGET_ALLOWED_ORIGINS: list[str] = env.list("WIDGET_ALLOWED_ORIGINS", default=[])
CORS_ALLOWED_ORIGINS = WIDGET_ALLOWED_ORIGINS
CORS_URLS_REGEX = r"^/api/widget/.*$"

# /metrics (Prometheus) is not public: these addresses, or a bearer token.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1/32", "::1/128"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Customers: messages a conversation may send per minute over the websocket, and all the
# conversations of one address together (a script opening many conversations to get around the first).
# Generous per address: many customers share one behind a mobile carrier's or a company's NAT.
# The demo shop's API (cs_platform/demo_shop.py, /demo/shop/api/): the company system the demo's
# business tools call. On in the embedded default only.
DEMO_SHOP_ENABLED = env.bool("DEMO_SHOP_ENABLED", default=EMBEDDED)
# Business tools (tools/): offered to a model that does tool calling (vLLM with --enable-auto-tool-choice
# and a --tool-call-parser), as the handoff tool is; the embedded llama.cpp model does none.
INFERENCE_TOOLS = env.bool("INFERENCE_TOOLS", default=False)
# Rounds of tool calls in one reply; the last round offers no tool, so the model must answer.
INFERENCE_TOOL_ROUNDS = env.int("INFERENCE_TOOL_ROUNDS", default=3)
# Identity verification (DESIGN.md, Business tools): the host site passes its customer's id with an
# HMAC-SHA256 of it made with this secret; only a verified id reaches the tools that read a customer's
# own data. Empty: no conversation is verified, and such tools are never offered.
WIDGET_IDENTITY_SECRET = env.str("WIDGET_IDENTITY_SECRET", default="")
WIDGET_MESSAGES_PER_MINUTE = env.int("WIDGET_MESSAGES_PER_MINUTE", default=20)
WIDGET_MESSAGES_PER_IP_PER_MINUTE = env.int("WIDGET_MESSAGES_PER_IP_PER_MINUTE", default=300)
# HTTP limits, as django-ratelimit rates ("30/m": 30 a minute; s, m, h, d), counted in Redis so that
# they hold across every web process; per client address unless said otherwise.
RATE_LIMIT_NEW_CONVERSATIONS = env.str("RATE_LIMIT_NEW_CONVERSATIONS", default="30/m")
RATE_LIMIT_UPLOADS_PER_IP = env.str("RATE_LIMIT_UPLOADS_PER_IP", default="60/m")
RATE_LIMIT_UPLOADS_PER_CONVERSATION = env.str("RATE_LIMIT_UPLOADS_PER_CONVERSATION", default="20/m")
RATE_LIMIT_CSAT = env.str("RATE_LIMIT_CSAT", default="30/m")
# Sign-in attempts to admin and to the agent console together, per address.
RATE_LIMIT_STAFF_LOGINS = env.str("RATE_LIMIT_STAFF_LOGINS", default="10/m")
# Lock-out (django-axes): after this many failed sign-ins to one account from one address, that
# account is locked for that address for STAFF_LOCKOUT_MINUTES; a success resets the count. A
# superuser unlocks early in admin (Axes -> Access attempts: delete) or `manage.py axes_reset`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("STAFF_LOGIN_FAILURES_BEFORE_LOCKOUT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("STAFF_LOCKOUT_MINUTES", default=15))
# One account from one address: locking an account from everywhere would let anyone lock a colleague
# out by typing their name; the per-address rate limit above slows a guesser trying many accounts.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "cs_platform.client_ip.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "cs_platform.staff_login.lockout_response"
# Passwords are never logged or stored with a failure record.
AXES_SENSITIVE_PARAMETERS = ["password"]
# A websocket must authenticate (its hello frame) within this time, or it is closed with 4408.
WIDGET_HELLO_TIMEOUT_SECONDS = env.float("WIDGET_HELLO_TIMEOUT_SECONDS", default=20.0)
RATELIMIT_USE_CACHE = "default" if EMBEDDED else "ratelimit"
# With Redis unreachable (no count), django-ratelimit lets requests through; see cs_platform/ratelimit.py.
RATELIMIT_FAIL_OPEN = True
# IP rules (access/rules.py): each process reads them from the database at most this often, so a rule
# added in admin or with `manage.py ip_rule` applies on every process within this many seconds.
IP_RULES_CACHE_SECONDS = env.float("IP_RULES_CACHE_SECONDS", default=5.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "conversations.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# Any case (info or INFO); checked in _validate against the logging module's five levels.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").strip().upper()
# json: one JSON object per line (timestamp, level, logger, event, request_id and the other fields), for
# a log collector; plain: a readable line, for a person at the embedded default's terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if EMBEDDED else "json").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # cs_platform/logs.py: both write the same fields; Celery keeps this configuration (no hijack).
    "formatters": {
        "json": {"()": "cs_platform.logs.JsonFormatter"},
        "plain": {"()": "cs_platform.logs.PlainFormatter"},
    },
    "filters": {
        # The bound context (request id, conversation) onto each record, so that `pii` sees it too.
        "context": {"()": "cs_platform.logs.ContextFilter"},
        # Every line, whatever logger wrote it, has its personal data masked (cs_platform/pii.py), in
        # its message, its fields and its traceback. Keep it last on every handler.
        "pii": {"()": "cs_platform.pii.PiiMaskingFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "pii"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # django-axes says "BEGIN" at every start at INFO; its lock-outs are warnings and stay.
        "axes.apps": {"level": "WARNING"},
    },
}

# Personal data (mainland mobile numbers, ID numbers, bank card numbers, e-mail addresses) is always
# masked in logs and CSV exports; with this on, also in what customers wrote (and OCR read from their
# images) before it reaches the model. Off by default: a model that cannot see an order's phone
# number cannot confirm it either.
PII_MASK_BEFORE_MODEL = env.bool("PII_MASK_BEFORE_MODEL", default=False)

if not DEBUG and not EMBEDDED:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

# Served over HTTPS by whatever is in front (TLS at the proxy, or at a load balancer before it): plain
# HTTP is redirected, browsers are told to use HTTPS only (HSTS), cookies are secure, and the scheme
# the browser used is read from X-Forwarded-Proto, which the front proxy sets (daphne is reached
# through it alone: TRUSTED_PROXIES). With HTTPS=true, `manage.py check --deploy` reports nothing.
HTTPS = env.bool("HTTPS", default=False)
if HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Container health checks and Prometheus reach web directly, over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Asking browsers' preload lists for a domain is the company's decision about its whole domain
        # (and slow to undo), not something the platform should do by default: not a warning here.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]


def _validate() -> None:
    """Fail at start-up on settings that cannot work, rather than on the first customer."""
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must name at least one host (such as support.example.com).")
    if REDIS_URL and urlparse(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"REDIS_URL must be a redis://, rediss:// or unix:// URL, not {REDIS_URL!r}."
        )
    if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ImproperlyConfigured(
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR or CRITICAL, "
            f"not {env.str('LOG_LEVEL', default='')!r}."
        )
    if LOG_FORMAT not in {"json", "plain"}:
        raise ImproperlyConfigured(
            f"LOG_FORMAT must be json (a JSON object per line) or plain, not {env.str('LOG_FORMAT')!r}."
        )
    # Each of these is a deadline, an interval or a rate: zero or less would fail every customer at once
    # (a hello timeout of 0 closes every socket with 4408, a link age of 0 expires every link).
    for name in (
        "WIDGET_HELLO_TIMEOUT_SECONDS",
        "ATTACHMENT_URL_MAX_AGE_SECONDS",
        "REPLY_SWEEP_INTERVAL_SECONDS",
        "REPLY_QUEUE_TIMEOUT_SECONDS",
        "OCR_TIMEOUT_SECONDS",
        "GATEWAY_IMAGE_FETCH_TIMEOUT_SECONDS",
    ):
        if globals()[name] <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive number of seconds.")
    for name in (
        "ATTACHMENT_MAX_SIDE",
        "ATTACHMENT_MAX_PIXELS",
        "OCR_MAX_CHARS",
        "WIDGET_MESSAGES_PER_MINUTE",
        "WIDGET_MESSAGES_PER_IP_PER_MINUTE",
        "CHANNEL_LAYER_MAX_CONNECTIONS",
        "GATEWAY_MAX_REQUEST_BYTES",
        "GATEWAY_MAX_IMAGES_PER_REQUEST",
    ):
        if globals()[name] <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive integer.")
    for name in (
        "RATE_LIMIT_NEW_CONVERSATIONS",
        "RATE_LIMIT_UPLOADS_PER_IP",
        "RATE_LIMIT_UPLOADS_PER_CONVERSATION",
        "RATE_LIMIT_CSAT",
        "RATE_LIMIT_STAFF_LOGINS",
    ):
        if not re.fullmatch(r"[1-9]\d*/\d*[smhd]", globals()[name]):
            raise ImproperlyConfigured(
                f"{name} must be a rate such as 30/m (a count per s, m, h or d), not {globals()[name]!r}."
            )
    if not GATEWAY_ASSISTANT_MODEL.strip():
        raise ImproperlyConfigured(
            "GATEWAY_ASSISTANT_MODEL must name the assistant's model (such as support-assistant)."
        )
    if INFERENCE_MAX_IMAGES_PER_PROMPT < 0:
        raise ImproperlyConfigured(
            "INFERENCE_MAX_IMAGES_PER_PROMPT must be zero (no images) or a positive integer."
        )
    if DATABASE_CONN_MAX_AGE < 0:
        raise ImproperlyConfigured("DATABASE_CONN_MAX_AGE must be zero or a positive number of seconds.")
    # The threads pool takes its concurrency from REPLY_CONCURRENCY_PER_PROCESS: name that one first.
    if REPLY_CONCURRENCY_PER_PROCESS < 1:
        raise ImproperlyConfigured("REPLY_CONCURRENCY_PER_PROCESS must be a positive integer.")
    if CELERY_WORKER_CONCURRENCY is not None and CELERY_WORKER_CONCURRENCY < 1:
        raise ImproperlyConfigured("CELERY_WORKER_CONCURRENCY must be 0 (one per CPU) or a positive integer.")
    if not INFERENCE_BASE_URLS:
        raise ImproperlyConfigured("INFERENCE_BASE_URL must name at least one server.")
    for url in INFERENCE_BASE_URLS:
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ImproperlyConfigured(f"INFERENCE_BASE_URL has an invalid URL: {url!r}")
    for name in (
        "INFERENCE_CONNECT_TIMEOUT",
        "INFERENCE_FIRST_TOKEN_TIMEOUT",
        "INFERENCE_TOKEN_TIMEOUT",
        "INFERENCE_TOTAL_TIMEOUT",
        "INFERENCE_SERVER_RESPONSE_TIMEOUT",
        "INFERENCE_COALESCE_SECONDS",
        "REPLY_HEARTBEAT_SECONDS",
        "OCR_WAIT_SECONDS",
    ):
        if globals()[name] <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive number of seconds.")
    if INFERENCE_SERVER_RESPONSE_TIMEOUT >= INFERENCE_FIRST_TOKEN_TIMEOUT:
        raise ImproperlyConfigured(
            "INFERENCE_SERVER_RESPONSE_TIMEOUT must be shorter than INFERENCE_FIRST_TOKEN_TIMEOUT,"
            " or a reply would time out before the next inference server is tried."
        )
    if INFERENCE_SERVER_COOLDOWN_SECONDS < 0:
        raise ImproperlyConfigured(
            "INFERENCE_SERVER_COOLDOWN_SECONDS must be zero or a positive number of seconds."
        )
    for name in (
        "ATTACHMENT_MAX_BYTES",
        "ATTACHMENT_MAX_PER_MESSAGE",
        "MESSAGE_MAX_CHARS",
        "ATTACHMENT_MAX_DECODED_PIXELS",
        "ATTACHMENT_MAX_JPEG_PIXELS",
        "ATTACHMENT_NORMALISE_CONCURRENCY",
        "INFERENCE_CONTEXT_TOKENS",
    ):
        if globals()[name] <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive integer.")
    if ATTACHMENT_NORMALISE_WAIT_SECONDS < 0:
        raise ImproperlyConfigured(
            "ATTACHMENT_NORMALISE_WAIT_SECONDS must be zero or a positive number of seconds."
        )
    if DATABASE_POOL_MAX_SIZE < 0:
        raise ImproperlyConfigured("DATABASE_POOL_MAX_SIZE must be 0 (no pool) or a positive integer.")
    if DATABASE_POOL_MAX_SIZE > 0 and not 0 <= DATABASE_POOL_MIN_SIZE <= DATABASE_POOL_MAX_SIZE:
        raise ImproperlyConfigured("DATABASE_POOL_MIN_SIZE must be between 0 and DATABASE_POOL_MAX_SIZE.")
    if DATABASE_POOL_TIMEOUT <= 0:
        raise ImproperlyConfigured("DATABASE_POOL_TIMEOUT must be a positive number of seconds.")
    if DATABASES["default"].get("OPTIONS", {}).get("pool") and DATABASES["default"]["CONN_MAX_AGE"] != 0:
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 with the connection pool (DATABASE_POOL_MAX_SIZE > 0): "
            "pooled connections are kept by the pool, not by each thread."
        )
    if CELERY_WORKER_POOL not in {"threads", "prefork", "solo"}:
        raise ImproperlyConfigured(
            "CELERY_WORKER_POOL must be threads (many replies per process), prefork or solo."
        )
    if REPLY_STALLED_AFTER_SECONDS <= REPLY_HEARTBEAT_SECONDS:
        raise ImproperlyConfigured("REPLY_STALLED_AFTER_SECONDS must be longer than REPLY_HEARTBEAT_SECONDS.")
    for origin in WIDGET_ALLOWED_ORIGINS:
        parsed = urlparse(origin)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc or parsed.path not in {"", "/"}:
            raise ImproperlyConfigured(f"WIDGET_ALLOWED_ORIGINS has an invalid origin: {origin!r}")
    if KNOWLEDGE_EMBEDDER not in {"local", "openai"}:
        raise ImproperlyConfigured(
            "KNOWLEDGE_EMBEDDER must be local (the embedded sentence encoder) or openai (an "
            f"OpenAI-compatible /v1/embeddings endpoint), not {env.str('KNOWLEDGE_EMBEDDER', default='')!r}."
        )
    if KNOWLEDGE_EMBEDDER == "openai":
        parsed = urlparse(KNOWLEDGE_EMBEDDINGS_URL)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ImproperlyConfigured(
                "KNOWLEDGE_EMBEDDINGS_URL must be the http(s) URL of the embeddings server with "
                f"KNOWLEDGE_EMBEDDER=openai, not {KNOWLEDGE_EMBEDDINGS_URL!r}."
            )
        if not KNOWLEDGE_EMBEDDINGS_MODEL.strip():
            raise ImproperlyConfigured(
                "KNOWLEDGE_EMBEDDINGS_MODEL must name the embedding model with KNOWLEDGE_EMBEDDER=openai."
            )
    for name in ("KNOWLEDGE_EMBEDDINGS_TIMEOUT_SECONDS", "KNOWLEDGE_INDEX_CHECK_SECONDS"):
        if globals()[name] <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive number of seconds.")
    if KNOWLEDGE_EMBEDDINGS_BATCH_SIZE <= 0:
        raise ImproperlyConfigured("KNOWLEDGE_EMBEDDINGS_BATCH_SIZE must be a positive integer.")
    # Read on every request (client_ip.py, metrics.py): a typo must stop start-up, not fail each request.
    for name in ("TRUSTED_PROXIES", "METRICS_ALLOWED_IPS"):
        for network in globals()[name]:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ImproperlyConfigured(
                    f"{name} has an invalid IP address or network: {network!r} "
                    "(write addresses or CIDR networks such as 10.0.0.0/8, separated by commas)."
                ) from None


_validate()
