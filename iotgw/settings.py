"""Django settings for iotgw; every value from the environment comes through iotgw.env."""

from __future__ import annotations

import dj_database_url

from iotgw import env
from iotgw.layers import redis_host

BASE_DIR = env.BASE_DIR

DEBUG = env.flag("DJANGO_DEBUG", default=True)
# A production process refuses to start with this (iotgw/production.py).
PLACEHOLDER_SECRET_KEY = "dev-insecure-change-me-" + "x" * 32
SECRET_KEY = env.text("DJANGO_SECRET_KEY", PLACEHOLDER_SECRET_KEY)
ALLOWED_HOSTS = env.listing("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# --- behind a reverse proxy, over HTTPS (README "Production") -------------------------------------------
# Origins (scheme://host[:port]) a browser may POST from (the login form) and open cookie WebSockets from:
# the public URL when a proxy puts the site on another scheme or port than Daphne's.
CSRF_TRUSTED_ORIGINS = env.listing("DJANGO_CSRF_TRUSTED_ORIGINS")
# The header a TLS-terminating proxy sets to "https" (e.g. X-Forwarded-Proto). Only behind a proxy that
# always overwrites it: anyone else could claim a secure request.
_PROXY_SSL_HEADER = env.text("DJANGO_SECURE_PROXY_SSL_HEADER")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
# Served over HTTPS (directly or by the proxy): secure cookies, plain HTTP redirected, HSTS.
IOTGW_HTTPS = env.flag("DJANGO_HTTPS")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = IOTGW_HTTPS
# Health, metrics and the broker hooks are called over the internal network in plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^mqtt/"]
SECURE_HSTS_SECONDS = int(env.number("DJANGO_HSTS_SECONDS", 31536000 if IOTGW_HTTPS else 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.flag("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.flag("DJANGO_HSTS_PRELOAD")

INSTALLED_APPS = [
    "daphne",
    # iotgw before channels: its `runworker` starts the MQTT bridge with the worker.
    "iotgw",
    "bridge",
    "channels",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    # Listed so that /api/docs serves the Swagger UI django-ninja ships, not one from a CDN.
    "ninja",
    "devices",
    "alarms",
    "notify",
    "api",
    "protocols",
    "sim",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside the API's conventions, so its JSON errors carry CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    "api.conventions.ApiConventionsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "iotgw.urls"
ASGI_APPLICATION = "iotgw.asgi.application"

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

_SQLITE_PATH = BASE_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env.text("DATABASE_URL") or f"sqlite:///{_SQLITE_PATH}",
        conn_max_age=0,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the web process read while the bridge writes; IMMEDIATE avoids
    # upgrade deadlocks between the two writers of the all-in-one gateway.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test.sqlite3")}
elif env.flag("IOTGW_DB_POOL", default=True):
    # A pool per process (psycopg_pool): without it every database_sync_to_async call in the
    # web process opened a new PostgreSQL connection (CONN_MAX_AGE must stay 0 with a pool).
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 1, "max_size": int(env.number("IOTGW_DB_POOL_SIZE", 8)), "timeout": 10},
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.text("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's layer on a pool that waits for a free connection (iotgw.layers).
            "BACKEND": "iotgw.layers.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, the same as the
                # layer's blocking-pop timeout: idle receivers then crash
                # (django/channels_redis#422). Give reads room beyond it.
                # At most IOTGW_REDIS_POOL connections per process and event loop; a burst of
                # group_adds (dashboards connecting) waits for one, up to `timeout` seconds,
                # instead of opening ~1,000 that then stay open idle.
                "hosts": [redis_host(REDIS_URL, socket_timeout=30, socket_connect_timeout=5,
                                     max_connections=int(env.number("IOTGW_REDIS_POOL", 50)), timeout=20)],
                # Pushes are coalesced per batch, so a dashboard gets few, larger
                # messages; this bounds how far a slow one may fall behind.
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# Database sessions that refuse a malformed cookie key before it reaches the database (iotgw/sessions.py).
SESSION_ENGINE = "iotgw.sessions"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# Front-ends on other origins that may call the API (django-cors-headers), e.g. "https://ops.example.com".
# They authenticate with a bearer token, not the session cookie (no credentialed CORS), and open the
# dashboard socket with a ticket from POST /api/ws-ticket.
CORS_ALLOWED_ORIGINS = env.origins("IOTGW_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = ["Location", "Link", "Retry-After", "WWW-Authenticate"]
CORS_PREFLIGHT_MAX_AGE = 3600

# --- iotgw --------------------------------------------------------------------

MQTT_URL = env.text("MQTT_URL")
# The all-in-one's broker when MQTT_URL is unset: `auto` embeds Mosquitto when it is installed
# (MQTT 5, persistence), else amqtt (MQTT 3.1.1 only); `mosquitto` or `amqtt` insists on one.
IOTGW_EMBEDDED_BROKER = env.text("IOTGW_EMBEDDED_BROKER", "auto")
MQTT_CLIENT_ID = env.text("MQTT_CLIENT_ID", env.default_client_id())
# Unset: one bridge, subscribed to devices/# itself (what a broker restart cannot lose, see
# core.broker.subscriptions). Set on every bridge to run several: they share $share/<group>/devices/#.
MQTT_SHARE_GROUP = env.text("MQTT_SHARE_GROUP")
# How long the broker keeps the bridge's session (and queues QoS 1 for it) while it is away.
MQTT_SESSION_EXPIRY = int(env.number("MQTT_SESSION_EXPIRY", 86400))
# How many unacknowledged QoS 1 messages the broker may have in flight to the bridge. Acks go out
# after each commit, so this must exceed a batch (IOTGW_MAX_BATCH) for the next batch to be decoded
# while one commits: at 2000 the bridge topped out near 15k msg/s here, at 8000 near 20k (make bench,
# 200 devices). A redelivery after a crash is at most this many messages (stored once anyway).
MQTT_RECEIVE_MAXIMUM = int(env.number("MQTT_RECEIVE_MAXIMUM", 20000))

IOTGW_MAX_PAYLOAD = int(env.number("IOTGW_MAX_PAYLOAD", 64 * 1024))
# Largest body of POST /api/telemetry/import, bytes (docs/history-export.md); bigger files go through
# `manage.py importtelemetry`. The body is spooled to disk by the server, never held in memory whole.
IOTGW_IMPORT_MAX_BYTES = int(env.number("IOTGW_IMPORT_MAX_BYTES", 256 * 1024 * 1024))
# Seconds a sample's `ts` may lie ahead of the gateway's clock; later ones are rejected (`ts_in_future`):
# a device whose clock runs years ahead would otherwise pin `latest` for good.
IOTGW_MAX_CLOCK_SKEW = env.number("IOTGW_MAX_CLOCK_SKEW", 86400.0)
# Under load a batch is what arrived during the previous commit, up to this many messages. A
# batch costs a fixed part per distinct device (lock, `latest` update): with 1000 devices, 20k
# msg/s offered committed 13.0k/s at 2000, 18.1k/s at 5000 (Receive Maximum 20000), 19.5k/s at
# 10000 (40000) (make bench; 5k msg/s latency unchanged, batches are small at that rate).
IOTGW_MAX_BATCH = int(env.number("IOTGW_MAX_BATCH", 5000))
# Dashboard fan-out groups: a push becomes this many group_send calls, and each web process
# receives one channel message per bucket it needs (a Redis round trip each). More buckets let
# a web process whose dashboards watch few devices skip the others' pushes; one is fastest:
# 5k msg/s with 102 dashboards, p50/p99 25.6/53.7 ms and web CPU 18 % at 1 bucket against
# 63/211 ms and 48 % at 4; with two bridges and two webs, 4 buckets overflowed the web
# processes' channels (43 % of pushes lost) and 1 lost none (make bench, scale-out).
IOTGW_PUSH_BUCKETS = int(env.number("IOTGW_PUSH_BUCKETS", 1))
# At most one push to dashboards per this many seconds; what arrives meanwhile is merged.
# A web process receives one message per bucket per push whatever its dashboard count
# (protocols/hub.py), so pushes are cheap: 5k msg/s p50/p99 42-45/74-85 ms at 50 ms, 29/73 at
# 20 ms, 19.3/45.7 and 14.8/33.4 at 10 ms (make bench --only gateway, 102 dashboards); web CPU
# 16-18 % → 22-27 %. Under load pushes merge, so there are never more than 100 a second.
IOTGW_PUSH_INTERVAL = env.number("IOTGW_PUSH_INTERVAL", 0.01)
IOTGW_HEARTBEAT_SECONDS = env.number("IOTGW_HEARTBEAT_SECONDS", 2.0)
# Seconds between a bridge's re-reads of the device profiles and which device is on which (docs/profiles.md):
# one small query; a changed profile or a device moved to another takes effect within this.
IOTGW_PROFILE_REFRESH = env.number("IOTGW_PROFILE_REFRESH", 2.0)
# The bridge as a Sparkplug 3.0 primary host (docs/profiles/sparkplug-b.md): its retained spBv1.0/STATE/<id>.
IOTGW_SPARKPLUG_HOST_ID = env.text("IOTGW_SPARKPLUG_HOST_ID", "") or ""
# Home Assistant discovery, consumed (docs/profiles/home-assistant-discovery.md): configs under the prefix
# label and unit metrics; with _REGISTER, a device no profile in use claims is registered on a generated one.
IOTGW_HA_DISCOVERY = env.flag("IOTGW_HA_DISCOVERY", False)
IOTGW_HA_DISCOVERY_PREFIX = env.text("IOTGW_HA_DISCOVERY_PREFIX", "homeassistant") or "homeassistant"
IOTGW_HA_DISCOVERY_REGISTER = env.flag("IOTGW_HA_DISCOVERY_REGISTER", False)
# Seconds without a message after which a device is marked offline (per device: Device.offline_after;
# 0: never). A device that never says `offline` — HTTP-only, or behind a half-open TCP link the broker
# has not noticed — would otherwise stay online forever, and its commands would go `sent` and time out
# instead of waiting `queued`. Bridges sweep for silent devices every IOTGW_HEARTBEAT_SECONDS.
IOTGW_OFFLINE_AFTER = env.number("IOTGW_OFFLINE_AFTER", 600.0)
# Alarms (docs/alarms.md): how often each bridge polls the rules' version and the alarm transitions of
# other processes (a rule change takes effect within this), and sweeps for inactivity and offline alarms.
IOTGW_ALARM_POLL_SECONDS = env.number("IOTGW_ALARM_POLL_SECONDS", 2.0)
IOTGW_ALARM_SWEEP_SECONDS = env.number("IOTGW_ALARM_SWEEP_SECONDS", 5.0)
IOTGW_WS_MAX_FRAME = 64 * 1024
# Dashboard frames per second per socket (token bucket); past the burst a socket gets
# `rate_limited`, and one that keeps going past another burst's worth is closed (4429).
IOTGW_WS_RATE = env.number("IOTGW_WS_RATE", 20.0)
IOTGW_WS_BURST = env.number("IOTGW_WS_BURST", 40.0)
# Pushes queued per dashboard socket in a web process; when a socket falls this far behind,
# the oldest is dropped (iotgw_ws_push_dropped_total) rather than the process's fan-out stalled.
IOTGW_WS_INBOX = int(env.number("IOTGW_WS_INBOX", 256))
# Unsent bytes a dashboard socket may have waiting in Daphne's write buffer (a client that stops reading
# makes it grow without bound). Past it, pushes to that socket stop, and once it has drained it gets a
# fresh snapshot; a socket past twice this that still sends frames is closed (4013).
IOTGW_WS_SEND_BUFFER = int(env.number("IOTGW_WS_SEND_BUFFER", 512 * 1024))
# How often a web process re-joins the push groups it needs: they vanish when Redis restarts
# without persistence (a receive error also triggers a re-join, after a back-off).
IOTGW_PUSH_REJOIN_SECONDS = env.number("IOTGW_PUSH_REJOIN_SECONDS", 30.0)
# How long a WebSocket ticket (POST /api/ws-ticket) may wait to be used; it works once.
IOTGW_WS_TICKET_SECONDS = env.number("IOTGW_WS_TICKET_SECONDS", 30.0)
# How often an open socket re-checks that its token, session and user are still valid.
IOTGW_WS_RECHECK_SECONDS = env.number("IOTGW_WS_RECHECK_SECONDS", 30.0)
# Seconds after a WebSocket device's socket closed before it is marked offline (a quick reconnect, a web
# process restarting behind a balancer, is no flap on the dashboards).
IOTGW_WS_DEVICE_GRACE = env.number("IOTGW_WS_DEVICE_GRACE", 10.0)
# HTTP ingest requests per second per device (429 past the burst), in each web process.
IOTGW_HTTP_INGEST_RATE = env.number("IOTGW_HTTP_INGEST_RATE", 20.0)
IOTGW_HTTP_INGEST_BURST = env.number("IOTGW_HTTP_INGEST_BURST", 40.0)

# CoAP (coap/, docs/transports/coap.md): `manage.py coapserver`, or the gateway's `--coap-port`.
IOTGW_COAP_HOST = env.text("IOTGW_COAP_HOST", "::")
IOTGW_COAP_PORT = int(env.number("IOTGW_COAP_PORT", 5683))
# Plain mode: the device's secret travels in clear in the request (`?secret=…`); for trusted networks only.
IOTGW_COAP_PLAIN = env.flag("IOTGW_COAP_PLAIN")
# CoAP requests per second per device (4.29 past the burst), per CoAP process.
IOTGW_COAP_RATE = env.number("IOTGW_COAP_RATE", 20.0)
IOTGW_COAP_BURST = env.number("IOTGW_COAP_BURST", 40.0)
# How long a request waits for its batch to commit before it is answered 5.03 (its ACK waits as long): past
# CoAP's MAX_TRANSMIT_SPAN (45 s) the device has stopped retransmitting, past 93 s it has given up.
IOTGW_COAP_COMMIT_WAIT = env.number("IOTGW_COAP_COMMIT_WAIT", 60.0)
# The CoAP process's name in heartbeats and command leases; distinct per CoAP process.
IOTGW_COAP_ID = env.text("IOTGW_COAP_ID", env.default_client_id().replace("iotgw-bridge-", "iotgw-coap-", 1))
# The gateway's OSCORE contexts, one directory per device (keys, sequence numbers): one CoAP process's own.
IOTGW_COAP_OSCORE_DIR = env.text("IOTGW_COAP_OSCORE_DIR", str(BASE_DIR / "var" / "oscore" / str(IOTGW_COAP_ID)))
# History tiers (docs/history.md): days kept of raw samples, per-minute and per-hour rollups; 0 keeps them
# forever. Enforced by every bridge every IOTGW_MAINTENANCE_SECONDS (and `manage.py telemetry_maintenance`),
# by dropping whole daily (monthly for hours) partitions on PostgreSQL, by batched deletes on SQLite.
IOTGW_RETENTION_RAW_DAYS = env.number("IOTGW_RETENTION_RAW_DAYS", 0.0)
IOTGW_RETENTION_MINUTE_DAYS = env.number("IOTGW_RETENTION_MINUTE_DAYS", 0.0)
IOTGW_RETENTION_HOUR_DAYS = env.number("IOTGW_RETENTION_HOUR_DAYS", 0.0)
# Days of partitions created ahead of today, so ingest rarely creates one itself.
IOTGW_PARTITIONS_AHEAD_DAYS = int(env.number("IOTGW_PARTITIONS_AHEAD_DAYS", 3))
IOTGW_MAINTENANCE_SECONDS = env.number("IOTGW_MAINTENANCE_SECONDS", 3600.0)
# How often a bridge runs the rollup job (PostgreSQL): the per-minute and per-hour rollups of fresh samples
# trail ingest by up to a minute (devices/rollups.py GRACE) plus this.
IOTGW_ROLLUP_SECONDS = env.number("IOTGW_ROLLUP_SECONDS", 60.0)

# When set, GET /metrics needs it: `Authorization: Bearer <token>`, or HTTP Basic with it as the password.
IOTGW_METRICS_TOKEN = env.text("IOTGW_METRICS_TOKEN")
# Command counts in /metrics come from one query at most this often per web process, however often it is scraped.
IOTGW_METRICS_COUNT_SECONDS = env.number("IOTGW_METRICS_COUNT_SECONDS", 30.0)

# The bridge's own broker account, for the /mqtt/auth and /mqtt/acl hooks; defaults to MQTT_URL's.
MQTT_BRIDGE_USERNAME = env.text("MQTT_BRIDGE_USERNAME", env.url_username(MQTT_URL))
MQTT_BRIDGE_PASSWORD = env.text("MQTT_BRIDGE_PASSWORD", env.url_password(MQTT_URL))
# When set, the hooks answer only requests carrying it in the X-Iotgw-Hook-Secret header.
MQTT_HOOK_SECRET = env.text("MQTT_HOOK_SECRET")
# Mosquitto dynamic security: keep the broker's clients and roles in step with the registry.
MQTT_DYNSEC = env.flag("MQTT_DYNSEC")
MQTT_DYNSEC_URL = env.text("MQTT_DYNSEC_URL", MQTT_URL)

# --- notifications (docs/notifications.md) ---------------------------------------------------------
# Seconds one send may take (webhook connect + answer, SMTP); a claim's lease must outlast it.
IOTGW_NOTIFY_TIMEOUT = env.number("IOTGW_NOTIFY_TIMEOUT", 10.0)
# Seconds a sender holds a claimed delivery; one killed mid-send is retried by any sender after this.
IOTGW_NOTIFY_LEASE = env.number("IOTGW_NOTIFY_LEASE", 60.0)
# Tries per delivery before it is `failed`; retries back off from FIRST, doubling up to MOST seconds, jittered
# ±20 %: the defaults keep trying for about 45 minutes, so a receiver down for a deploy or a reboot misses nothing.
IOTGW_NOTIFY_MAX_ATTEMPTS = int(env.number("IOTGW_NOTIFY_MAX_ATTEMPTS", 12))
IOTGW_NOTIFY_RETRY_FIRST = env.number("IOTGW_NOTIFY_RETRY_FIRST", 10.0)
IOTGW_NOTIFY_RETRY_MOST = env.number("IOTGW_NOTIFY_RETRY_MOST", 600.0)
# Days an event, its deliveries and their tries are kept (a pending one, or one an open alarm still needs, stays).
IOTGW_NOTIFY_KEEP_DAYS = env.number("IOTGW_NOTIFY_KEEP_DAYS", 30.0)
# How often a sender looks for due deliveries and reminders, and how many sends it runs at once.
IOTGW_NOTIFY_INTERVAL = env.number("IOTGW_NOTIFY_INTERVAL", 1.0)
IOTGW_NOTIFY_CONCURRENCY = int(env.number("IOTGW_NOTIFY_CONCURRENCY", 4))
# When set (comma-separated host names or globs such as *.example.com), webhooks go only to these hosts and
# Apprise only through its json://, xml:// and form:// plugins to them: against a channel aimed inside the network.
IOTGW_NOTIFY_HOSTS = env.listing("IOTGW_NOTIFY_HOSTS")
# E-mail goes through Django's mail backends: smtp (default), console, filebased, locmem.
EMAIL_BACKEND = env.text("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.text("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = int(env.number("DJANGO_EMAIL_PORT", 25))
EMAIL_HOST_USER = env.text("DJANGO_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.text("DJANGO_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.flag("DJANGO_EMAIL_USE_TLS")
EMAIL_USE_SSL = env.flag("DJANGO_EMAIL_USE_SSL")
EMAIL_FILE_PATH = env.text("DJANGO_EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
DEFAULT_FROM_EMAIL = env.text("DJANGO_DEFAULT_FROM_EMAIL", "iotgw@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.text("IOTGW_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "amqtt": {"level": "WARNING"},
        "transitions": {"level": "WARNING"},
    },
}
