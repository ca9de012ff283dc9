"""Settings shared by every environment.

Every environment variable the project reads is read here, once, with the default that
suits a local run. ``local``, ``test`` and ``production`` only adjust what differs.
Importing settings never starts anything: the embedded PostgreSQL and Redis of local runs
and tests are started explicitly (``python -m devtools.services``), which hands their
URLs over through the environment or the checkout's ``.env`` file.
"""

from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# --- Environment ------------------------------------------------------------------------
SETTINGS_MODULE = env("DJANGO_SETTINGS_MODULE", default="imagerec.settings.local")
if SETTINGS_MODULE == "imagerec.settings.local":
    # Local runs only: this checkout's git-ignored .env fills in what the environment leaves
    # unset. `python -m devtools.services start` writes the embedded servers' URLs there,
    # and `make run` the weights it chose, so a `manage.py` typed by hand finds both.
    # Tests and production take their configuration from the environment alone.
    env.read_env(env("IMAGEREC_ENV_FILE", default=str(BASE_DIR / ".env")))
SECRET_KEY = env("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
DATABASE_URL = env("DATABASE_URL", default="")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "media")))
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Where uploaded originals and their renditions are kept: "filesystem" (MEDIA_ROOT) or "s3",
# any S3-compatible object store (AWS S3, MinIO, Cloudflare R2, Backblaze B2...) through
# django-storages. Credentials are boto3's own: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
# in the environment, or the host's role; they never pass through settings.
MEDIA_STORAGE = env("MEDIA_STORAGE", default="filesystem")
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
# Empty: AWS itself. Another provider: its endpoint, e.g. https://<account>.r2.cloudflarestorage.com.
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="") or None
# Renditions may live in a bucket of their own (public as a whole, where the provider has no
# per-object ACLs, as on R2); empty: the originals' bucket, under renditions/.
AWS_RENDITIONS_BUCKET_NAME = env("AWS_RENDITIONS_BUCKET_NAME", default="")
# The ACL each rendition is written with; empty: none, when a bucket policy or a public
# bucket makes renditions/ readable instead (AWS buckets with ACLs disabled, R2, B2).
AWS_RENDITIONS_ACL = env("AWS_RENDITIONS_ACL", default="public-read")
# Host (and path) that serves the renditions publicly, e.g. a CDN: cdn.example.com. Empty:
# the bucket's own URL. Originals never get a public address, whatever this says.
RENDITIONS_CUSTOM_DOMAIN = env("RENDITIONS_CUSTOM_DOMAIN", default="")
# Password for the admin account `make run` creates; empty: generate one and keep it in
# the data dir, so every run prints the same login.
ADMIN_PASSWORD = env("ADMIN_PASSWORD", default="")
# Production only: seconds browsers should insist on HTTPS (0 until TLS is proven).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
# Production only: extend HSTS to every subdomain, and ask browsers to preload it (both are
# hard to undo: turn them on once every subdomain serves HTTPS).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Tests only: names this test session's database, media folder and queue (default: its pid).
TEST_SESSION_ID = env("IMAGEREC_TEST_SESSION", default="")
# Tests only: the device the test session and the workers it starts embed on, whatever
# EMBEDDING_DEVICE says; a test that wants a GPU worker sets it in that worker's environment.
TEST_EMBEDDING_DEVICE = env("IMAGEREC_TEST_EMBEDDING_DEVICE", default="cpu")
# Where the embedded PostgreSQL and Redis keep their data (local runs and tests).
IMAGEREC_DATA_DIR = Path(env("IMAGEREC_DATA_DIR", default=str(BASE_DIR / ".devdata")))

# Visitors' side.
RECOMMENDATIONS_K = env.int("RECOMMENDATIONS_K", default=6)
RECOMMENDATIONS_K_MAX = 50
GALLERY_PAGE_SIZE = env.int("GALLERY_PAGE_SIZE", default=12)

# The model workers embed with: a name in similarity.encoders.registry. Modules that define
# more encoders (a FAMILY each) are listed in EMBEDDING_ENCODER_MODULES, comma-separated.
EMBEDDING_ENCODER = env("EMBEDDING_ENCODER", default="resnet18")
EMBEDDING_ENCODER_MODULES = env.list("EMBEDDING_ENCODER_MODULES", default=[])
# Embeddings: "imagenet" (torchvision's ResNet18_Weights.IMAGENET1K_V1 from the torch hub
# cache), "random" (seeded, for demos and tests), or a path to a saved ResNet18 state dict.
EMBEDDING_WEIGHTS = env("EMBEDDING_WEIGHTS", default="imagenet")
EMBEDDING_RANDOM_SEED = env.int("EMBEDDING_RANDOM_SEED", default=0)
EMBEDDING_BATCH_SIZE = env.int("EMBEDDING_BATCH_SIZE", default=16)
# When many images wait, one task claims at least this many batches and pipelines them
# (decoding the next while the network runs); fewer spreads a backlog over more workers.
EMBEDDING_CLAIM_BATCHES = env.int("EMBEDDING_CLAIM_BATCHES", default=4)
# Once a worker has measured its rate, a claim is this many seconds of its work (at least
# EMBEDDING_CLAIM_BATCHES batches): each claim restarts the pipeline (0.2-0.4 s), so a GPU
# worker's 1,024 images, under a second of work, would spend a quarter of it restarting.
EMBEDDING_CLAIM_SECONDS = env.float("EMBEDDING_CLAIM_SECONDS", default=5.0)
# Threads torch (and the decode pool) may use in one worker process; 0 means "this
# process's share of the CPUs it may run on" (affinity and container quota / pool size).
EMBEDDING_TORCH_THREADS = env.int("EMBEDDING_TORCH_THREADS", default=0)
# Where a worker runs the network: "auto" (a CUDA GPU when torch sees one, else the CPU),
# "cpu", "cuda" or "cuda:N". On a GPU the network runs in half precision; the vectors and
# their model identity are the CPU's (within similarity.encoders.gpu.DEVICE_COSINE_TOLERANCE).
EMBEDDING_DEVICE = env("EMBEDDING_DEVICE", default="auto")
# Images per forward pass on a GPU (EMBEDDING_BATCH_SIZE is the CPU's): large batches keep it busy.
EMBEDDING_CUDA_BATCH_SIZE = env.int("EMBEDDING_CUDA_BATCH_SIZE", default=256)
# On a GPU, decode baseline JPEGs there (nvJPEG); other files (progressive JPEGs included:
# similarity/jpeg.py says why) always go through Pillow on the CPU. Off: every file through Pillow, on all the worker's CPUs.
EMBEDDING_CUDA_DECODE = env.bool("EMBEDDING_CUDA_DECODE", default=True)

# Per-task time limits (seconds): a stuck batch is stopped; the soft limit lets the task
# fail what it claimed first. Thumbnails and the sweeper have limits of their own.
# https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits
EMBEDDING_SOFT_TIME_LIMIT = env.int("EMBEDDING_SOFT_TIME_LIMIT", default=300)
EMBEDDING_TIME_LIMIT = env.int("EMBEDDING_TIME_LIMIT", default=EMBEDDING_SOFT_TIME_LIMIT + 60)
RENDITIONS_SOFT_TIME_LIMIT = env.int("RENDITIONS_SOFT_TIME_LIMIT", default=120)
# A poison image stops after this many attempts instead of looping forever.
EMBEDDING_MAX_ATTEMPTS = env.int("EMBEDDING_MAX_ATTEMPTS", default=5)
# The sweeper re-queues images still pending after this many seconds (lost message, broker
# outage during the upload); processing ones after EMBEDDING_SWEEP_PROCESSING_AFTER (below).
EMBEDDING_SWEEP_PENDING_AFTER = env.int("EMBEDDING_SWEEP_PENDING_AFTER", default=120)
EMBEDDING_SWEEP_INTERVAL = env.float("EMBEDDING_SWEEP_INTERVAL", default=60.0)

# Upload limits (bytes, pixels). Larger files or images are refused with a clear message.
IMAGE_MAX_UPLOAD_BYTES = env.int("IMAGE_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("IMAGE_MAX_PIXELS", default=100_000_000)
# Zip archives uploaded in the admin: most entries, and most bytes once uncompressed (counted
# while decompressing: declared sizes can lie). Either limit refuses the whole archive.
ZIP_MAX_MEMBERS = env.int("ZIP_MAX_MEMBERS", default=1000)
ZIP_MAX_TOTAL_BYTES = env.int("ZIP_MAX_TOTAL_BYTES", default=1024 * 1024 * 1024)
# Request bodies (bytes), refused with 413 before they are read (imagerec/middleware.py): a
# search carries one photo, an admin upload at most an archive of ZIP_MAX_TOTAL_BYTES (or
# loose files adding up to as much); anything else (API JSON, forms) is small. The proxy in
# front applies the same limits (deploy/Caddyfile), so they reach no further than it.
SEARCH_MAX_REQUEST_BYTES = env.int("SEARCH_MAX_REQUEST_BYTES", default=IMAGE_MAX_UPLOAD_BYTES + 1024 * 1024)
ADMIN_MAX_REQUEST_BYTES = env.int("ADMIN_MAX_REQUEST_BYTES", default=ZIP_MAX_TOTAL_BYTES + 1024 * 1024)
REQUEST_MAX_BYTES = env.int("REQUEST_MAX_BYTES", default=1024 * 1024)
# The admin's upload page and scripts (/api/uploads/, gallery/api.py) send one file or one zip
# archive per request: as large as an archive may be. The hash check beside it is small JSON
# (1,000 hashes are about 70 kB) and keeps REQUEST_MAX_BYTES.
UPLOAD_MAX_REQUEST_BYTES = env.int(
    "UPLOAD_MAX_REQUEST_BYTES", default=max(IMAGE_MAX_UPLOAD_BYTES, ZIP_MAX_TOTAL_BYTES) + 1024 * 1024
)
# The upload page (issue 20): how many files its script sends at once; how many content hashes
# one request may ask about (the script asks in batches of this many); and how many times a file
# whose request failed without an answer, or with a 5xx or 429, is sent again, with exponential
# backoff (a refusal, any other 4xx, is final).
UPLOAD_CONCURRENCY = env.int("UPLOAD_CONCURRENCY", default=4)
UPLOAD_CHECK_MAX = env.int("UPLOAD_CHECK_MAX", default=1000)
UPLOAD_RETRIES = env.int("UPLOAD_RETRIES", default=3)
if UPLOAD_CONCURRENCY < 1 or UPLOAD_CHECK_MAX < 1 or UPLOAD_RETRIES < 0:
    raise ImproperlyConfigured("UPLOAD_CONCURRENCY and UPLOAD_CHECK_MAX must be 1 or more, UPLOAD_RETRIES 0 or more.")
# A zip sent to /api/uploads/ is expanded by a worker (gallery.tasks.archive_upload_expand), which
# hands the rest to a fresh run of itself after this many seconds of work: a run stays well
# under its time limit and under the broker's visibility timeout (CELERY_VISIBILITY_TIMEOUT), past
# which a second worker would be handed a task still running.
ARCHIVE_RUN_SECONDS = env.int("ARCHIVE_RUN_SECONDS", default=300)
# How many proxies in front of the site append to X-Forwarded-For (Caddy in docker-compose.yml:
# 1). The client address (rate limits) is the one the outermost of them saw; 0 trusts no
# X-Forwarded-For at all and takes the connecting address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# django-ratelimit asks this function for a request's client address.
RATELIMIT_IP_META_KEY = "imagerec.middleware.client_address"
# An image whose nearest neighbour is at least this similar is flagged "possible duplicate".
NEAR_DUPLICATE_THRESHOLD = env.float("NEAR_DUPLICATE_THRESHOLD", default=0.97)

# Diverse recommendations (?diverse=1, or on for every page with DIVERSITY_DEFAULT): the k
# shown are chosen by maximal marginal relevance among k x DIVERSITY_CANDIDATES nearest.
# DIVERSITY_WEIGHT trades relevance (1.0: the plain ranking) for variety (lower).
DIVERSITY_DEFAULT = env.bool("DIVERSITY_DEFAULT", default=False)
DIVERSITY_WEIGHT = env.float("DIVERSITY_WEIGHT", default=0.7)
DIVERSITY_CANDIDATES = env.int("DIVERSITY_CANDIDATES", default=4)
# Recommendation lists are cached in Redis (similarity/cache.py) for this long; any change to
# the vectors or tags they rank drops them at once, whatever this says.
RECOMMENDATIONS_CACHE_SECONDS = env.int("RECOMMENDATIONS_CACHE_SECONDS", default=3600)
# Whole pages for anonymous visitors (pagecache/): kept in Redis for PAGE_CACHE_SECONDS at most,
# dropped at once by any change they show (gallery/invalidation.py); browsers and proxies may
# keep them PAGE_CACHE_BROWSER_SECONDS, then revalidate with If-None-Match (a 304 when unchanged).
PAGE_CACHE_ENABLED = env.bool("PAGE_CACHE_ENABLED", default=True)
PAGE_CACHE_SECONDS = env.int("PAGE_CACHE_SECONDS", default=3600)
PAGE_CACHE_BROWSER_SECONDS = env.int("PAGE_CACHE_BROWSER_SECONDS", default=60)
# What ingestion changes (new images, their status, vectors and renditions) drops the cached
# pages at most this often (0: at once, as every edit does). During a bulk load each batch would
# otherwise empty the cache; a few seconds keep pages cached at the price of new images showing
# that much later. docs/scale.md.
PAGE_CACHE_INGEST_STALE_SECONDS = env.float("PAGE_CACHE_INGEST_STALE_SECONDS", default=0)

# --- Clicks: recording -------------------------------------------------------------------
# What visitors were shown under an image and which link they followed (clicks/recording.py):
# events wait in a Redis list (the cache's server) until a beat task writes them to PostgreSQL.
# Off: nothing is recorded, and pages cost what they cost before (the pages benchmark's baseline).
CLICKS_RECORDING = env.bool("CLICKS_RECORDING", default=True)
# Counted choices per client address: overall, and per (source, target) pair, so one client
# can add at most one choice per pair per period to a pair's evidence, however often it clicks.
CLICKS_RATE = env("CLICKS_RATE", default="30/m")
CLICKS_PAIR_RATE = env("CLICKS_PAIR_RATE", default="1/h")
# Most events the Redis list holds (about 60 bytes each at k=6): 500,000 is four minutes of
# 2,000 events/s with no worker flushing, 30 MB on the broker's server; past it events are dropped.
CLICKS_BUFFER_MAX = env.int("CLICKS_BUFFER_MAX", default=500_000)
# How often the beat task moves the buffered events into PostgreSQL, and how many per statement.
CLICKS_FLUSH_SECONDS = env.float("CLICKS_FLUSH_SECONDS", default=5.0)
CLICKS_FLUSH_BATCH = env.int("CLICKS_FLUSH_BATCH", default=5000)
# Daily counts older than this many days are deleted: the evidence is about recent tastes.
CLICKS_RETENTION_DAYS = env.int("CLICKS_RETENTION_DAYS", default=90)
# Impressions a web process gathers before sending them in one round trip (or once the oldest
# has waited CLICKS_BATCH_SECONDS): one RPUSH per page cost a page served from the page cache
# about 0.13 ms, a sixth of its time. A process that is killed loses what it gathered.
CLICKS_IMPRESSION_BATCH = env.int("CLICKS_IMPRESSION_BATCH", default=20)
CLICKS_BATCH_SECONDS = env.float("CLICKS_BATCH_SECONDS", default=1.0)

# --- Clicks: ranking ---------------------------------------------------------------------
# How the evidence of visitors' choices re-ranks similar-image lists (clicks/ranking.py).
# What a page shows when it asks for no variant: "interleaved" (team-draft interleaving of the
# visual and hybrid lists, which tells them apart with far fewer impressions) or "ab" (each
# source image shows one list or the other).
CLICKS_COMPARISON = env("CLICKS_COMPARISON", default="interleaved")
if CLICKS_COMPARISON not in ("interleaved", "ab"):
    raise ImproperlyConfigured(f"CLICKS_COMPARISON must be 'interleaved' or 'ab', not {CLICKS_COMPARISON!r}.")
# Visual neighbours fetched per image shown (k x this): the ones past k are what evidence can lift.
CLICKS_CANDIDATE_FACTOR = env.int("CLICKS_CANDIDATE_FACTOR", default=3)
# The prior's weight, in examinations: a pair seen this often counts as much as the site's average.
CLICKS_PRIOR_STRENGTH = env.float("CLICKS_PRIOR_STRENGTH", default=20.0)
if CLICKS_PRIOR_STRENGTH <= 0:
    raise ImproperlyConfigured("CLICKS_PRIOR_STRENGTH must be above 0: without a prior one choice decides a pair.")
# Similarity gained per unit of ln(score): 0.1 lets a pair chosen e-times as often as average
# pass neighbours 0.1 more similar; 0 keeps the visual order.
CLICKS_EVIDENCE_WEIGHT = env.float("CLICKS_EVIDENCE_WEIGHT", default=0.1)
# A target the visual search did not return joins a source's hybrid list after this many choices.
CLICKS_MIN_CHOICES = env.int("CLICKS_MIN_CHOICES", default=3)
# Links: a picture joined to the source through this many co-chosen pictures (chosen from one
# and with the other, either way) is a candidate of its hybrid list, though no list showed it.
CLICKS_MIN_LINKS = env.int("CLICKS_MIN_LINKS", default=2)
if CLICKS_MIN_LINKS < 2:
    raise ImproperlyConfigured("CLICKS_MIN_LINKS must be 2 or more: one link is one visitor's stray choice away.")
# Similarity gained per unit of ln(1 + links), and the most linked targets kept per source.
CLICKS_LINK_WEIGHT = env.float("CLICKS_LINK_WEIGHT", default=0.1)
CLICKS_LINKS_PER_SOURCE = env.int("CLICKS_LINKS_PER_SOURCE", default=30)
# A candidate seen less than this (in examinations) may take the last place of a hybrid list:
# without it a new neighbour could never earn evidence.
CLICKS_EXPLORE_EXPOSURE = env.float("CLICKS_EXPLORE_EXPOSURE", default=10.0)
# How often beat rebuilds the evidence from the daily counts (and drops the changed sources' pages).
CLICKS_EVIDENCE_SECONDS = env.float("CLICKS_EVIDENCE_SECONDS", default=60.0)

# Search by example: a visitor's photo goes to the embedding workers' searches queue; the
# page waits this long for the vector before saying the service is busy. Per client (IP).
SEARCH_TIMEOUT_SECONDS = env.float("SEARCH_TIMEOUT_SECONDS", default=10.0)
SEARCH_RATE = env("SEARCH_RATE", default="10/m")
# Rate limits answer 429 with the site's own page (django-ratelimit).
RATELIMIT_VIEW = "gallery.views.rate_limited"
# django-ratelimit lists the third-party django-redis among the caches it knows, not Django's
# own Redis backend; that backend's incr() is Redis INCRBY, atomic, which is all it needs.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

# Nearest-neighbour search: candidates the HNSW index visits per query (recall vs speed).
# 160 keeps recall@10 above 0.96 at a million images for about 3 ms (docs/benchmarks.md).
HNSW_EF_SEARCH = env.int("HNSW_EF_SEARCH", default=160)

# Observability: logs, /readyz and /metrics.
# "plain" for people, "json" for log collectors (one JSON object per line).
LOG_FORMAT = env("LOG_FORMAT", default="plain")
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
# Each worker's main process beats this often; /readyz wants one younger than the max age.
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", default=10.0)
WORKER_HEARTBEAT_MAX_AGE = env.float("WORKER_HEARTBEAT_MAX_AGE", default=60.0)
# /readyz fails when more images than this wait for an embedding (pending or processing).
READYZ_BACKLOG_MAX = env.int("READYZ_BACKLOG_MAX", default=5000)
# When set, /metrics answers only to "Authorization: Bearer <token>", and /readyz names what
# is down only to it. Production refuses to start without one unless METRICS_PUBLIC=true.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)
# prometheus-client's multiprocess folder; imagerec/gunicorn.py sets it for its workers.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default="")
# Redis keys (on the broker) of worker heartbeats and metric snapshots.
WORKER_STATE_KEY_PREFIX = "imagerec"

# --- Django -----------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_ratelimit",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the docs page's Swagger UI files, served from here (no CDN)
    "csp",  # its system checks catch a policy written in django-csp 3's old settings
    "gallery",
    "similarity",
    "clicks",
    "observability",
]

MIDDLEWARE = [
    # Request ids first, so every other middleware's log lines carry one; then the request
    # metrics, so their latency includes all the other middleware.
    "observability.middleware.RequestIdMiddleware",
    "observability.middleware.RequestMetricsMiddleware",
    # Before anything can read a request's body (CSRF reads a POST's form).
    "imagerec.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Right after SecurityMiddleware, so every response gets these headers, a whole page
    # answered from the page cache further down included (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    # Static files before anything else touches the request: https://whitenoise.readthedocs.io/
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "imagerec.middleware.RejectNulBytesMiddleware",
    # Outside the page cache, so a page answered from it counts its impression too, and the
    # header naming what it showed (kept with the page) is removed before any visitor sees it.
    "clicks.middleware.ImpressionMiddleware",
    # Anonymous visitors' pages whole from Redis, before sessions, CSRF and the view (pagecache/).
    "pagecache.middleware.PageCacheMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A rate limit's refusal becomes RATELIMIT_VIEW's 429 page.
    "django_ratelimit.middleware.RatelimitMiddleware",
    # Marks the requests whose reads may go to a read replica (imagerec/db_router.py).
    "imagerec.db_router.ReplicaReadsMiddleware",
]

ROOT_URLCONF = "imagerec.urls"
WSGI_APPLICATION = "imagerec.wsgi.application"

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
                "similarity.context_processors.embedding_model",
            ],
        },
    },
]


# Keep connections between requests, and check them before reuse after a database restart.
CONN_MAX_AGE = env.int("CONN_MAX_AGE", default=60)


def database_from_url(url: str) -> dict:
    """A DATABASES entry for a postgres:// URL, with the connection options the site relies on."""
    database = env.db_url_config(url)
    options = database.setdefault("OPTIONS", {})
    socket_host = options.pop("host", None)
    if socket_host and not database.get("HOST"):
        # postgres:///name?host=/socket/dir names a Unix socket directory.
        database["HOST"] = socket_host
    # Set per connection, so a recommendation page needs no extra SET query.
    # iterative_scan lets a filtered HNSW query (one model identity) still fill its LIMIT.
    options["options"] = f"-c hnsw.ef_search={HNSW_EF_SEARCH} -c hnsw.iterative_scan=relaxed_order"
    # A database host that silently drops packets must fail a page or a /readyz check within
    # seconds, not hang it for the kernel's minutes-long TCP timeout.
    options.setdefault("connect_timeout", 5)
    database["CONN_MAX_AGE"] = CONN_MAX_AGE
    database["CONN_HEALTH_CHECKS"] = True
    return database


# Without DATABASE_URL there is no database: local and test settings say how to start one,
# production refuses to start.
DATABASES = {"default": database_from_url(DATABASE_URL)} if DATABASE_URL else {}

# Read replicas (optional, comma-separated URLs): visitors' page and API reads go to one of
# them, every write and everything else to DATABASE_URL (imagerec/db_router.py).
DATABASE_REPLICA_URLS = env.list("DATABASE_REPLICA_URLS", default=[])
if DATABASES and DATABASE_REPLICA_URLS:
    for _index, _url in enumerate(DATABASE_REPLICA_URLS):
        # MIRROR: tests read the primary's test database through it instead of creating one.
        DATABASES[f"replica_{_index}"] = {**database_from_url(_url), "TEST": {"MIRROR": "default"}}
DATABASE_ROUTERS = ["imagerec.db_router.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Where pages' pictures come from besides the site itself (the Content-Security-Policy's img-src).
if MEDIA_STORAGE == "s3" and RENDITIONS_CUSTOM_DOMAIN:
    _renditions_origins = ["https://" + RENDITIONS_CUSTOM_DOMAIN.split("/")[0]]
elif MEDIA_STORAGE == "s3":
    # The bucket's own URL, whose form (host or path style) depends on the provider.
    _renditions_origins = ["https:"]
else:
    _renditions_origins = []

# Serve the renditions (thumbnails, display pictures) from Django itself: local runs, and a
# small deployment without a front web server or object storage. Originals are never
# served to the public, whatever this says: they keep the camera's metadata.
SERVE_RENDITIONS = env.bool("SERVE_RENDITIONS", default=DEBUG and MEDIA_STORAGE == "filesystem")

# The browser runs only what the site serves itself: no inline script or style, no other host,
# no plugins, and no framing (clickjacking). A page that needs an inline script gets a nonce by
# reading request.csp_nonce; django-csp adds it to the header of that response only.
# https://django-csp.readthedocs.io/en/latest/configuration.html
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        # Renditions may come from object storage or a CDN (MEDIA_STORAGE=s3); data: for the
        # small inline images of third-party widgets (the API docs' icons).
        "img-src": [SELF, "data:", *_renditions_origins],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Browser features no page of the site uses, refused to it and to anything it might embed.
# https://github.com/adamchainz/django-permissions-policy
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer", "autoplay", "camera", "display-capture", "geolocation", "gyroscope",
        "magnetometer", "microphone", "midi", "payment", "publickey-credentials-get", "usb",
        "browsing-topics",
    )
}

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
WHITENOISE_USE_FINDERS = DEBUG
# collectstatic writes a Brotli and a gzip copy of each file, except of source maps, which only
# developer tools fetch: Brotli on Swagger UI's and Redoc's 6 MB of them took 15 s of every build.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = [*Compressor.SKIP_COMPRESS_EXTENSIONS, "map"]


def media_storages(
    kind: str,
    *,
    bucket: str = "",
    endpoint_url: str | None = None,
    region: str | None = None,
    renditions_bucket: str = "",
    renditions_acl: str = "public-read",
    renditions_domain: str = "",
) -> dict:
    """STORAGES' "default" (originals) and "renditions" entries for a kind of media storage.

    Two storages, so the privacy rule holds in either: originals keep the camera's metadata
    and are never public; renditions are what pages link to.
    """
    if kind == "filesystem":
        # Both under MEDIA_ROOT (renditions' names start with renditions/); only that folder
        # is ever served (SERVE_RENDITIONS, or the front web server).
        return {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "renditions": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        }
    if kind != "s3":
        raise ImproperlyConfigured(f'MEDIA_STORAGE must be "filesystem" or "s3", not {kind!r}.')
    if not bucket:
        raise ImproperlyConfigured("MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME.")
    # https://django-storages.readthedocs.io/en/latest/backends/amazon-S3.html
    common = {"endpoint_url": endpoint_url, "region_name": region, "file_overwrite": False}
    return {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **common,
                "bucket_name": bucket,
                # Explicit, not the bucket's default: an original must never be readable anonymously.
                "default_acl": "private",
                # Any URL made for an original is signed and short-lived (staff download through
                # the admin, which streams the file anyway).
                "querystring_auth": True,
                "querystring_expire": 300,
            },
        },
        "renditions": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **common,
                "bucket_name": renditions_bucket or bucket,
                "default_acl": renditions_acl or None,
                # Plain, cacheable URLs: renditions are public and their names never reused.
                "querystring_auth": False,
                "custom_domain": renditions_domain or None,
                "object_parameters": {"CacheControl": "public, max-age=31536000, immutable"},
            },
        },
    }


STORAGES = {
    **media_storages(
        MEDIA_STORAGE,
        bucket=AWS_STORAGE_BUCKET_NAME,
        endpoint_url=AWS_S3_ENDPOINT_URL,
        region=AWS_S3_REGION_NAME,
        renditions_bucket=AWS_RENDITIONS_BUCKET_NAME,
        renditions_acl=AWS_RENDITIONS_ACL,
        renditions_domain=RENDITIONS_CUSTOM_DOMAIN,
    ),
    # Production: compressed, with content hashes in the names (collectstatic). Local runs
    # and tests serve the files as they are, found where they lie.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# An admin may send many photos at once; Django's default caps are for ordinary forms.
DATA_UPLOAD_MAX_NUMBER_FILES = 1000
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}.")
# Every line says which request (request_id) or which images (image_ids) it is about.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "observability.logs.ContextFilter"},
        "client_errors": {"()": "observability.logs.ClientErrorFilter"},
    },
    "formatters": {
        "plain": {
            "()": "observability.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        # https://nhairs.github.io/python-json-logger/: extra= fields become JSON fields.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "client_errors"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- JSON API ---------------------------------------------------------------------------
# Django REST framework with drf-spectacular: the schema at /api/schema/ is generated from the
# same serializers that shape the answers, and the docs page at /api/docs/ is Swagger UI
# served from drf-spectacular-sidecar's static files (no CDN). Renderers, permissions and the
# error shape are set on the API's own base view (gallery/api.py), not here.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "imagerec API",
    "DESCRIPTION": (
        "The gallery's images, their renditions and tags, the images most similar to one, and "
        "search by example. Reads are public; writes need a staff account (session or HTTP Basic). "
        'Every error is JSON shaped `{"error": {"status": 404, "message": "...", "fields": {}}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Requests and responses as separate components: a multipart upload reads as binary.
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No deep links: Swagger UI puts them as links inside each operation's button (nested
    # interactive controls, too small to tap).
    "SWAGGER_UI_SETTINGS": {"deepLinking": False},
    "REDOC_DIST": "SIDECAR",
}

# --- Cache ------------------------------------------------------------------------------
# Recommendation lists, rate-limit counters and the workers' heartbeat live in Redis: by
# default the broker's server, in a database of their own.
# https://docs.djangoproject.com/en/5.2/topics/cache/#redis
CACHE_URL = env("CACHE_URL", default="")


def redis_cache_location(broker_url: str) -> str:
    """The broker's Redis, database 1: redis+socket:///run/redis.sock -> unix:///run/redis.sock?db=1."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://").split("?")[0] + "?db=1"
    scheme, _, rest = broker_url.partition("://")
    address = rest.split("/")[0]
    return f"{scheme}://{address}/1"


CACHES = {
    "default": {
        "BACKEND": "imagerec.cache.RedisCache",  # Django's, one client per pool (imagerec/cache.py)
        "LOCATION": CACHE_URL or redis_cache_location(CELERY_BROKER_URL),
        "KEY_PREFIX": "imagerec",
        # A Redis that is down must not hold pages up: give up quickly, the pages compute.
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
} if CACHE_URL or CELERY_BROKER_URL else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -----------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# JSON only: a task message is data (image ids), never a pickled object.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
# Task results are not kept: the database row is the result. The one exception, a visitor's
# search waiting for its vector (similarity.query_embed), reads it from this backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_RESULT_EXPIRES = 300
# A search must fail fast, not retry for twenty seconds, when Redis is away.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
}
# Acknowledge after the work is stored, and put the message back if the worker dies,
# so a killed worker loses nothing (tasks are idempotent).
# https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.acks_late
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: a batch is already the unit of work.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Each pool process loads the network before it takes a task (similarity/worker.py), which
# can outlast Celery's 4-second wait for a new process to report in.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-proc-alive-timeout
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 120
# An image still "processing" this long after its claim lost its worker: the sweeper frees it.
EMBEDDING_SWEEP_PROCESSING_AFTER = env.int("EMBEDDING_SWEEP_PROCESSING_AFTER", default=EMBEDDING_TIME_LIMIT + 60)
# Redis redelivers an unacknowledged message after this long (a worker killed mid-task).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An upload must not hang when the broker is down: give up quickly, the sweeper re-enqueues.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# The sweeper (Celery beat): https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html
# Queues by kind of work, so a pool of workers can be pointed at one kind (`celery worker -Q
# embeddings` on GPU hosts) and a visitor's search never waits behind an ingest backlog. A
# worker started without -Q consumes them all. Tests prefix the names with their session.
# https://docs.celeryq.dev/en/stable/userguide/routing.html
QUEUE_NAMES = ("embeddings", "renditions", "searches")


def celery_queues(prefix: str = "") -> tuple[list, dict, str]:
    """CELERY_TASK_QUEUES, CELERY_TASK_ROUTES and CELERY_TASK_DEFAULT_QUEUE for a name prefix."""
    from kombu import Queue

    names = {name: f"{prefix}{name}" for name in (*QUEUE_NAMES, "default")}
    routes = {
        "similarity.images_embed": {"queue": names["embeddings"]},
        "gallery.renditions_create": {"queue": names["renditions"]},
        "gallery.images_sweep": {"queue": names["renditions"]},
        "similarity.query_embed": {"queue": names["searches"]},
        # Ingest work that is neither an embedding nor a thumbnail: the queue every worker
        # started as the Procfile says consumes beside its own.
        "gallery.archive_upload_expand": {"queue": names["default"]},
    }
    return [Queue(name) for name in names.values()], routes, names["default"]


CELERY_TASK_QUEUES, CELERY_TASK_ROUTES, CELERY_TASK_DEFAULT_QUEUE = celery_queues()

CELERY_BEAT_SCHEDULE_FILENAME = env(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(IMAGEREC_DATA_DIR / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "sweep-images": {"task": "gallery.images_sweep", "schedule": EMBEDDING_SWEEP_INTERVAL},
    # Expires: with no worker to take them, flushes would pile up in the queue; the next one
    # flushes everything anyway.
    "flush-click-events": {
        "task": "clicks.events_flush",
        "schedule": CLICKS_FLUSH_SECONDS,
        "options": {"expires": CLICKS_FLUSH_SECONDS},
    },
    "refresh-click-evidence": {
        "task": "clicks.evidence_refresh",
        "schedule": CLICKS_EVIDENCE_SECONDS,
        "options": {"expires": CLICKS_EVIDENCE_SECONDS},
    },
}
