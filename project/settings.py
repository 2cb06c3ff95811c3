"""Settings for the LLM gateway.

Every value is read through python-decouple (environment first, then `.env`) with a typed cast
and a default that runs on a fresh machine: SQLite in `data/`, the local-memory cache and the
local llama.cpp model. `env-template` documents each variable.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers
from decouple import Csv, config

from project.local_secrets import api_key_secret_from, local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(config("DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)
VERSION = "0.1.0"


DEBUG = config("DEBUG", default=False, cast=bool)
# The secrets the environment (or .env) leaves unset. With DEBUG off each one fails a system
# check (project/checks.py: project.E001, E002), so a production start never runs on a secret
# made up at start-up, which a container without a volume would change at every restart.
UNSET_SECRETS = [name for name in ("SECRET_KEY", "API_KEY_SECRET") if not config(name, default="")]


def _secret_key() -> str:
    """Return SECRET_KEY; unset, the one kept in the git-ignored data folder when DEBUG is on
    (local development), else a random one for this process alone, which the check refuses.

    There is no built-in fallback string, so no known (insecure) key can ever reach production.
    """
    configured = config("SECRET_KEY", default="")
    if configured:
        return configured
    if DEBUG:
        return local_secret_key(DATA_DIR)
    return secrets.token_urlsafe(50)


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = config("ALLOWED_HOSTS", default="localhost,127.0.0.1,[::1]", cast=Csv())
CSRF_TRUSTED_ORIGINS = config("CSRF_TRUSTED_ORIGINS", default="", cast=Csv())

# HTTPS: switched by variables so a plain-HTTP local run and a TLS-terminating proxy both work.
SECURE_SSL_REDIRECT = config("SECURE_SSL_REDIRECT", default=False, cast=bool)
SECURE_HSTS_SECONDS = config("SECURE_HSTS_SECONDS", default=0, cast=int)
SECURE_HSTS_INCLUDE_SUBDOMAINS = config("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False, cast=bool)
SECURE_HSTS_PRELOAD = config("SECURE_HSTS_PRELOAD", default=False, cast=bool)
SESSION_COOKIE_SECURE = config("SESSION_COOKIE_SECURE", default=False, cast=bool)
CSRF_COOKIE_SECURE = config("CSRF_COOKIE_SECURE", default=False, cast=bool)
if config("SECURE_PROXY_SSL_HEADER", default=False, cast=bool):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^health$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "project",
    "accounts",
    "billing",
    "llm_api",
    "operations",
    "huey.contrib.djhuey",  # the Batch API's queue
    "batches",
]

MIDDLEWARE = [
    "project.middleware.RequestIdMiddleware",
    "project.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "project.middleware.AdminSessionMiddleware",  # these three: the admin's pages only
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "project.middleware.AdminAuthenticationMiddleware",
    "project.middleware.AdminMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict:
    """Return Django's DATABASES entry for a `sqlite:///…` or `postgres://…` URL."""
    db = dj_database_url.parse(url)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # Django's SQLite backend, with connections pooled across requests (project/db).
        db["ENGINE"] = "project.db"
        # Tests get a file of their own (per process, so parallel runs never share one):
        # the in-memory default turns concurrent writers into "table is locked" errors.
        db["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN,
        # so concurrent credit holds queue up instead of failing with "database is locked".
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif db["ENGINE"] == "django.db.backends.postgresql":
        # A pool rather than one connection per server thread: the production server runs
        # hundreds of threads (one per open stream) and PostgreSQL allows ~100 connections.
        # A request waits its turn for a connection rather than failing: money is written by
        # one thread at a time per process (billing.services.credits), so waits are short.
        db["CONN_MAX_AGE"] = 0
        db["OPTIONS"] = {
            "pool": {
                "min_size": config("DATABASE_POOL_MIN", default=2, cast=int),
                "max_size": config("DATABASE_POOL_MAX", default=20, cast=int),
                "timeout": config("DATABASE_POOL_TIMEOUT", default=60, cast=float),
            }
        }
    return db


DATABASE_URL = config("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = config("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "project.cache.RedisCache",  # Django's, with its Redis clients shared
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": 2,
                "socket_timeout": 2,
                # One pool for the whole process (project/cache.py). Past this many connections
                # in use a thread waits up to `timeout` seconds for one (redis-py's plain pool
                # raised at once past 100). A command holds its connection for well under a
                # millisecond, and opening one costs more than waiting: 1,000 streams on 200
                # connections used a third less CPU than on one connection per thread.
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": config("REDIS_MAX_CONNECTIONS", default=200, cast=int),
                "timeout": 10,
            },
            "KEY_PREFIX": config("CACHE_KEY_PREFIX", default="llm"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "project.cache.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: Django's hook on every password save (the API, the admin's forms,
    # `manage.py changepassword`), which revokes the user's refresh tokens.
    {"NAME": "accounts.passwords.RefreshTokensRevokedOnChange"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders when `collectstatic` has not been run, so a
# fresh clone's admin and docs pages are styled under both servers with DEBUG=False.
WHITENOISE_USE_FINDERS = True

CORS_ALLOWED_ORIGINS = config("CORS_ALLOWED_ORIGINS", default="", cast=Csv())

# Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed: the client is
# the right-most address in it that is not one of them (project/clients.py). Empty: the header is
# ignored unless NUM_PROXIES is set, and the client is REMOTE_ADDR.
TRUSTED_PROXIES = config("TRUSTED_PROXIES", default="", cast=Csv())
# Else: how many reverse proxies append to X-Forwarded-For (DRF's NUM_PROXIES). Empty: none.
NUM_PROXIES = config("NUM_PROXIES", default="", cast=lambda value: int(value) if value else None)
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = ["x-request-id", "retry-after"]
# A browser front end on an allowed origin may send its key as X-API-Key (the seeds' header),
# not only as Authorization: the preflight must allow it.
CORS_ALLOW_HEADERS = (*cors_default_headers, "x-api-key")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "billing.authentication.ApiKeyAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "project.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "project.schema.AutoSchema",
    "EXCEPTION_HANDLER": "project.exception_handler.exception_handler",
    # Counted per client address (project/clients.py) or per username in the shared cache
    # (project/throttling.py); each scope's variable is `<SCOPE>_THROTTLE_RATE`.
    "DEFAULT_THROTTLE_RATES": {
        "token": config("TOKEN_THROTTLE_RATE", default="10/min"),
        "signup": config("SIGNUP_THROTTLE_RATE", default="20/hour"),
        "login_username": config("LOGIN_USERNAME_THROTTLE_RATE", default="20/hour"),
        "admin_login": config("ADMIN_LOGIN_THROTTLE_RATE", default="10/min"),
        "key_failure": config("KEY_FAILURE_THROTTLE_RATE", default="30/min"),
    },
    "NUM_PROXIES": NUM_PROXIES,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=config("JWT_ACCESS_MINUTES", default=15, cast=int)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=config("JWT_REFRESH_DAYS", default=7, cast=int)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Service API",
    "DESCRIPTION": (
        "A self-hosted gateway in front of OpenAI, Gemini, Ollama and in-house models: "
        "one OpenAI-compatible API, API keys, credits and an append-only ledger."
    ),
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operations are tagged by area from their path, and the areas described, by a hook
    # (project/schema.py), so that new routes are tagged too.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.schema.tag_by_area",
        "project.schema.add_examples",
        "project.schema.add_links",
    ],
    # The docs make no request outside the gateway: no validator badge (Swagger UI would send
    # the schema's URL to validator.swagger.io) and ReDoc in the system's fonts (its page links
    # Google Fonts otherwise: project/templates/project/redoc.html drops the link).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
                "code": {"fontFamily": "ui-monospace, 'SFMono-Regular', Menlo, monospace"},
            }
        }
    },
}

# --- Operations: the dashboard, metrics and logs ---------------------------------------
# GET /metrics answers only a Bearer METRICS_TOKEN (unset: 404), and only from
# METRICS_ALLOWED_IPS (addresses or CIDR networks; empty: any address) when set.
METRICS_TOKEN = config("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = config("METRICS_ALLOWED_IPS", default="", cast=Csv())
# Every worker process writes its metrics here and /metrics adds them up (prometheus_client's
# multiprocess mode). Set here, before anything imports prometheus_client, and always from
# METRICS_DIR: an inherited PROMETHEUS_MULTIPROC_DIR would mix another gateway's counts in.
METRICS_DIR = Path(config("METRICS_DIR", default="") or DATA_DIR / "metrics")
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
# json: one JSON object a line (for a log collector); text: plain lines. By default text when
# stderr is a terminal, json otherwise.
LOG_FORMAT = config("LOG_FORMAT", default="") or ("text" if os.isatty(2) else "json")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "operations.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": config("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django logs every 4xx/5xx with the request line; that line is enough and never holds
        # a key, but keep the noise of expected 4xx answers out of the production log.
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}

# --- Billing -------------------------------------------------------------------------------
SIGNUP_CREDITS = config("SIGNUP_CREDITS", default=500, cast=int)
# Keyed digest secret for API keys. Unset, it is derived from SECRET_KEY, which only local
# development may do (the check project.E002): rotating SECRET_KEY would invalidate every key.
API_KEY_SECRET = config("API_KEY_SECRET", default="") or api_key_secret_from(SECRET_KEY)
HOLD_TTL_SECONDS = config("HOLD_TTL_SECONDS", default=900, cast=int)
# Where a settle or release that the database could not take is kept until it is written
# (llm_api/pending.py), and how soon the first retry runs (later ones back off to 30 s).
PENDING_DIR = Path(config("PENDING_DIR", default=str(DATA_DIR / "pending")))
PENDING_RETRY_SECONDS = config("PENDING_RETRY_SECONDS", default=1.0, cast=float)
API_KEY_CACHE_SECONDS = config("API_KEY_CACHE_SECONDS", default=60, cast=int)
# Worker processes of `manage.py serve`. Above 1 the cache must be shared (REDIS_URL): revoked
# keys are dropped from the cache only, so the check billing.E001 refuses a per-process cache.
WEB_WORKERS = config("WEB_WORKERS", default=1, cast=int)
# Seconds a thread may hold the interpreter lock while others wait for it before it must hand it
# over (sys.setswitchinterval, set by project.wsgi in each worker). Python's 5 ms wakes every
# waiting thread 200 times a second: with a thousand streams in flight those wake-ups were most
# of the server's context switches and a third of its CPU.
SERVER_SWITCH_INTERVAL = config("SERVER_SWITCH_INTERVAL", default=0.05, cast=float)
# How long a process serves the price table from memory before re-reading it (an admin's save
# applies at once in the process that saved it, within this many seconds everywhere else).
PRICE_CACHE_SECONDS = config("PRICE_CACHE_SECONDS", default=30, cast=int)
# Serve priced models only: a model that no price row of its own matches (exact or a pattern
# other than the catch-all `*`) answers 403 instead of the default of one credit per request.
# Off by default, so a fresh `make run` answers before any price is set.
PRICE_REQUIRED = config("PRICE_REQUIRED", default=False, cast=bool)

# --- LLM providers ---------------------------------------------------------------------------
# Seconds the gateway waits on a provider (llm_api/providers/timeouts.py): to connect, for the
# first byte (the status line of a whole answer, the first event of a stream), between two
# chunks, and for the whole call. The defaults suit a small local model on a slow machine, which
# may think for minutes before the first token of a long prompt. LLM_TIMEOUT, the one number of
# earlier versions, still sets connect, first byte and gap where those are not set themselves.
LLM_TIMEOUT = config("LLM_TIMEOUT", default="", cast=lambda value: float(value) if value else None)
LLM_CONNECT_TIMEOUT = config("LLM_CONNECT_TIMEOUT", default=LLM_TIMEOUT or 10.0, cast=float)
LLM_FIRST_BYTE_TIMEOUT = config("LLM_FIRST_BYTE_TIMEOUT", default=LLM_TIMEOUT or 300.0, cast=float)
LLM_GAP_TIMEOUT = config("LLM_GAP_TIMEOUT", default=LLM_TIMEOUT or 120.0, cast=float)
LLM_TOTAL_TIMEOUT = config("LLM_TOTAL_TIMEOUT", default=1800.0, cast=float)
# Deep health (/health?deep=1) and /api/info ask each configured provider for its model list,
# each probe bounded by PROVIDER_HEALTH_TIMEOUT seconds, and keep the answers this many seconds
# per process, so a flood of health checks does not flood the providers.
PROVIDER_HEALTH_CACHE_SECONDS = config("PROVIDER_HEALTH_CACHE_SECONDS", default=10.0, cast=float)
PROVIDER_HEALTH_TIMEOUT = config("PROVIDER_HEALTH_TIMEOUT", default=2.0, cast=float)
OPENAI_API_KEY = config("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = config("OPENAI_BASE_URL", default="https://api.openai.com/v1")
GEMINI_API_KEY = config("GEMINI_API_KEY", default="")
GEMINI_BASE_URL = config("GEMINI_BASE_URL", default="")
OLLAMA_HOST = config("OLLAMA_HOST", default="http://127.0.0.1:11434")
INHOUSE_BASE_URL = config("INHOUSE_BASE_URL", default="http://127.0.0.1:8081/v1")
INHOUSE_API_KEY = config("INHOUSE_API_KEY", default="")

LLM_PROVIDERS = {
    "openai": {
        "BACKEND": "llm_api.providers.openai.OpenAIProvider",
        "OPTIONS": {"api_key": OPENAI_API_KEY, "base_url": OPENAI_BASE_URL},
    },
    "gemini": {
        "BACKEND": "llm_api.providers.gemini.GeminiProvider",
        "OPTIONS": {"api_key": GEMINI_API_KEY, "base_url": GEMINI_BASE_URL},
    },
    "ollama": {
        "BACKEND": "llm_api.providers.ollama.OllamaProvider",
        "OPTIONS": {"host": OLLAMA_HOST},
    },
    "inhouse": {
        "BACKEND": "llm_api.providers.inhouse.InhouseProvider",
        "OPTIONS": {"api_key": INHOUSE_API_KEY, "base_url": INHOUSE_BASE_URL},
    },
}
DEFAULT_PROVIDER = config("DEFAULT_PROVIDER", default="inhouse")
DEFAULT_MODEL = config("DEFAULT_MODEL", default="smollm2-135m-instruct")
MAX_TOKENS_DEFAULT = config("MAX_TOKENS_DEFAULT", default=1024, cast=int)
MAX_TOKENS_LIMIT = config("MAX_TOKENS_LIMIT", default=16384, cast=int)
MAX_CHOICES = config("MAX_CHOICES", default=8, cast=int)
STREAM_HEARTBEAT_SECONDS = config("STREAM_HEARTBEAT_SECONDS", default=15.0, cast=float)
# The largest request body of any kind (JSON, form, multipart upload; images travel in JSON as
# base64, 4/3 of their size): over it → 413 before the body is read. Django's own form limits
# follow it, and uploads stay in memory (never a temporary file): the body is bounded anyway.
REQUEST_MAX_BYTES = config("REQUEST_MAX_BYTES", default=32 * 1024 * 1024, cast=int)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BYTES
# Images a request may carry: each at most IMAGE_MAX_BYTES and IMAGE_MAX_PIXELS (width x height,
# read from its header before it is decoded), at most IMAGE_MAX_COUNT of them and
# IMAGE_MAX_TOTAL_BYTES together.
IMAGE_MAX_BYTES = config("IMAGE_MAX_BYTES", default=5 * 1024 * 1024, cast=int)
IMAGE_MAX_PIXELS = config("IMAGE_MAX_PIXELS", default=40_000_000, cast=int)
IMAGE_MAX_COUNT = config("IMAGE_MAX_COUNT", default=16, cast=int)
IMAGE_MAX_TOTAL_BYTES = config("IMAGE_MAX_TOTAL_BYTES", default=20 * 1024 * 1024, cast=int)
MODELS_CACHE_SECONDS = config("MODELS_CACHE_SECONDS", default=300, cast=int)
# Fallbacks as code, beside the admin's aliases: JSON {"alias": ["provider/model", ...]}. A target
# that fails before its first byte (no connection, timeout, 429, 5xx) hands over to the next
# after a jittered pause of about FALLBACK_BACKOFF_SECONDS; one that failed
# FALLBACK_COOLDOWN_FAILURES times in a row is passed over for FALLBACK_COOLDOWN_SECONDS.
MODEL_FALLBACKS = config("MODEL_FALLBACKS", default="{}")
FALLBACK_BACKOFF_SECONDS = config("FALLBACK_BACKOFF_SECONDS", default=0.1, cast=float)
FALLBACK_COOLDOWN_FAILURES = config("FALLBACK_COOLDOWN_FAILURES", default=3, cast=int)
FALLBACK_COOLDOWN_SECONDS = config("FALLBACK_COOLDOWN_SECONDS", default=30.0, cast=float)

# --- Seed-compatible routes and images --------------------------------------------------------
# The models behind seed 000's /generate and seed 001's /text_model/… and /image_model/… routes:
# provider/model or an alias; empty means DEFAULT_PROVIDER/DEFAULT_MODEL.
GENERATE_MODEL = config("GENERATE_MODEL", default="")
TEXT_MODEL = config("TEXT_MODEL", default="")
IMAGE_MODEL = config("IMAGE_MODEL", default="")
# Concurrent upstream calls per seed 001 model (0: no limit), across all gateway processes when
# REDIS_URL is set; over it a call waits CONCURRENCY_WAIT_SECONDS for a slot, then gets 429.
TEXT_MODEL_MAX_CONCURRENCY = config("TEXT_MODEL_MAX_CONCURRENCY", default=10, cast=int)
IMAGE_MODEL_MAX_CONCURRENCY = config("IMAGE_MODEL_MAX_CONCURRENCY", default=10, cast=int)
CONCURRENCY_WAIT_SECONDS = config("CONCURRENCY_WAIT_SECONDS", default=5.0, cast=float)
# The most of a seed 001 model's slots one API key (or a signed-in user) holds at once, as a
# fraction of <ROLE>_MAX_CONCURRENCY, rounded up; over it a call gets 429 at once, so one key's
# long streams leave slots to the others. 1 (or 0) turns the share off.
MODEL_SLOT_SHARE = config("MODEL_SLOT_SHARE", default=0.5, cast=float)
# How long a shared slot, or a place in flight of the rate limits, outlives a process that died
# holding it.
CONCURRENCY_LEASE_SECONDS = config("CONCURRENCY_LEASE_SECONDS", default=30, cast=int)
# Per-user limits on the LLM routes, over all of a user's calls together (0: no limit): requests
# and tokens (prompt bound plus max_tokens, corrected to the real usage when the call ends) per
# sliding minute, and requests in flight. A key's own rpm_limit, tpm_limit and
# concurrency_limit narrow its calls further. Counted in Redis, across every gateway process,
# when REDIS_URL is set (llm_api/limits). Off by default: one user may hold 1,000 streams.
DEFAULT_RPM_LIMIT = config("DEFAULT_RPM_LIMIT", default=0, cast=int)
DEFAULT_TPM_LIMIT = config("DEFAULT_TPM_LIMIT", default=0, cast=int)
DEFAULT_CONCURRENCY_LIMIT = config("DEFAULT_CONCURRENCY_LIMIT", default=0, cast=int)
# Fetch http(s) image URLs (public addresses only); off: images come as data: URLs or uploads.
IMAGE_URL_FETCH = config("IMAGE_URL_FETCH", default=False, cast=bool)
IMAGE_FETCH_TIMEOUT = config("IMAGE_FETCH_TIMEOUT", default=10.0, cast=float)
# Networks (CIDR) image fetches may reach although they are not public, e.g. an internal CDN.
IMAGE_FETCH_ALLOWED_NETWORKS = config("IMAGE_FETCH_ALLOWED_NETWORKS", default="", cast=Csv())
# The only ports image URLs may name (explicitly or by their scheme).
IMAGE_FETCH_PORTS = config("IMAGE_FETCH_PORTS", default="80,443", cast=Csv(int))


# --- Batches ------------------------------------------------------------------------------------
# The Batch API's files (Django's storage API) and its queue (Huey; correctness is in our rows).
BATCH_FILES_DIR = Path(config("BATCH_FILES_DIR", default="") or DATA_DIR / "files")
BATCH_FILE_MAX_BYTES = config("BATCH_FILE_MAX_BYTES", default=200 * 1024 * 1024, cast=int)
BATCH_FILE_MAX_LINES = config("BATCH_FILE_MAX_LINES", default=50_000, cast=int)
BATCH_PRICE_MULTIPLIER = config("BATCH_PRICE_MULTIPLIER", default=1.0, cast=float)
BATCH_CONCURRENCY_LIMIT = config("BATCH_CONCURRENCY_LIMIT", default=4, cast=int)
BATCH_ENQUEUED_TOKENS_LIMIT = config("BATCH_ENQUEUED_TOKENS_LIMIT", default=0, cast=int)
BATCH_LEASE_SECONDS = config("BATCH_LEASE_SECONDS", default=300, cast=int)
BATCH_COMPLETION_WINDOW_SECONDS = config(
    "BATCH_COMPLETION_WINDOW_SECONDS", default=24 * 3600, cast=int
)
HUEY = {
    "huey_class": "huey.RedisHuey" if REDIS_URL else "huey.SqliteHuey",
    # Its own queue per deployment in a shared Redis (as the cache keys are).
    "name": f"batches-{config('CACHE_KEY_PREFIX', default='llm')}",
    "immediate": False,
    "consumer": {"workers": config("BATCH_WORKERS", default=4, cast=int), "worker_type": "thread"},
}
if REDIS_URL:
    HUEY["url"] = REDIS_URL
else:
    HUEY["filename"] = str(DATA_DIR / "huey.sqlite3")
