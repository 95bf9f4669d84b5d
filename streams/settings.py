"""One frozen, typed settings object, read from ``RIVERLINE_*`` environment variables.

Built once (``Settings.from_env()``) at the edge of the program and passed down; nothing
else in Riverline reads ``os.environ``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

__all__ = [
    "BUNDLED",
    "DEV_SIGNING_KEY",
    "MESSAGE_HEADROOM",
    "PRODUCER_BATCH_BYTES",
    "REPO_ROOT",
    "STORE_SCHEMES",
    "Settings",
    "bundled_path",
    "check_store_url",
    "store_url_for_display",
]

#: The source checkout when Riverline runs from one (an editable install, ``PYTHONPATH``);
#: in an installed wheel, the folder holding the packages. Only development tools and
#: tests use it: Riverline finds what it ships with :func:`bundled_path`.
REPO_ROOT = Path(__file__).resolve().parents[1]

#: What Riverline ships besides code: its name in the package (``streams/bundled/<name>``,
#: where the wheel build copies it; setup.py) -> its folder in the source checkout.
BUNDLED = {
    "schemas": "schemas",
    "pipelines": "pipelines",
    "kafka": "deploy/kafka",
}


def bundled_path(name: str) -> Path:
    """A folder Riverline ships (a key of :data:`BUNDLED`): in the installed package, or
    in the source checkout when Riverline runs from one.

    Examples
    --------
    >>> (bundled_path("schemas") / "riverline" / "prediction.avsc").is_file()
    True
    >>> bundled_path("wheels")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streams.errors.ConfigError: Riverline ships no 'wheels' folder (it ships: schemas, ...)
    """
    if name not in BUNDLED:
        raise ConfigError(f"Riverline ships no {name!r} folder (it ships: {', '.join(BUNDLED)})")
    packaged = Path(str(resources.files("streams") / "bundled" / name))
    return packaged if packaged.is_dir() else REPO_ROOT / BUNDLED[name]


#: Record batches of the worker's producer (agents.io.send_all): a full micro-batch goes
#: out in fewer, larger produce requests than with Faust's 16 KiB (see docs/benchmark.md, Method).
PRODUCER_BATCH_BYTES = 256 * 1024

#: Room for key, headers and framing beyond a raw message's value, in Riverline's topics.
MESSAGE_HEADROOM = 64 * 1024
#: Kafka's default ``max.message.bytes``: Riverline's topics never allow less, because
#: the limit applies to a whole record batch (the worker's are up to 256 KiB).
KAFKA_MESSAGE_BYTES = 1024 * 1024

#: The signing key Riverline ships with: known to everyone, so accepted only in
#: development mode (``RIVERLINE_DEV_MODE=1``).
DEV_SIGNING_KEY = "riverline-dev-key-change-me"

#: URL schemes of the filesystems ``pyarrow.fs`` opens, which the offline store accepts.
STORE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def store_url_for_display(url: str) -> str:
    """A store location without the credentials or options a URL may carry.

    Examples
    --------
    >>> store_url_for_display("s3://KEY:SECRET@bucket/store?region=eu-west-1")
    's3://bucket/store'
    >>> store_url_for_display("/srv/store")
    '/srv/store'
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_store_url(value: str) -> str:
    """The offline store's location as given, or ``ValueError`` saying what to set.

    An absolute path (``~`` expanded), or a URL whose scheme is one of
    :data:`STORE_SCHEMES`; ``file://`` URLs take an absolute path (``file:///abs/path``).

    Examples
    --------
    >>> check_store_url("s3://bucket/riverline")
    's3://bucket/riverline'
    >>> check_store_url("store")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: RIVERLINE_STORE_URL 'store' is a relative path...
    """
    shown = store_url_for_display(value)
    what_to_set = (
        "Set RIVERLINE_STORE_URL to an absolute path (/srv/riverline/store), a URL "
        f"({', '.join(f'{s}://' for s in STORE_SCHEMES)}; e.g. s3://bucket/prefix), or "
        "unset it for RIVERLINE_HOME/store. Every sink and command of a deployment needs "
        "the same value."
    )
    if "://" not in value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValueError(
                f"RIVERLINE_STORE_URL {shown!r} is a relative path, which would mean "
                f"another place in every working directory. {what_to_set}"
            )
        return str(path)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in STORE_SCHEMES:
        raise ValueError(
            f"RIVERLINE_STORE_URL {shown!r} has the unknown scheme {parts.scheme!r}. {what_to_set}"
        )
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise ValueError(
            f"RIVERLINE_STORE_URL {shown!r} is not a file URL with an absolute path "
            f"(file:///abs/path: three slashes). {what_to_set}"
        )
    return value


class Settings(BaseSettings):
    """Everything configurable, with the default a local user wants."""

    model_config = SettingsConfigDict(env_prefix="RIVERLINE_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".riverline")
    """Cache and data root: broker jars, broker data, Numba cache, registry, offline store."""

    cache_dir: Path | None = None
    """Where downloaded and compiled artifacts live (broker jars, Numba cache); ``home`` if
    unset. Tests give each test its own ``home`` and share this cache."""

    bootstrap: str | None = None
    """An existing Kafka cluster (host:port,...). When set, Riverline starts no broker."""

    kafka_version: str = "4.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    kafka_start_timeout: float = 90.0
    kafka_stop_timeout: float = 30.0
    """Seconds ``kafka down`` waits after SIGTERM before it sends SIGKILL."""

    namespace: str = ""
    """Prefix for every topic and consumer group name (tests use a random one)."""

    web_host: str = "127.0.0.1"
    web_port: int = 6066

    schemas_dir: Path = Field(default_factory=lambda: bundled_path("schemas"))
    """The schema catalog: ``<subject>/v<N>.avsc`` files (``riverline --schemas-dir``).
    Default: the example schemas Riverline ships. Riverline's own record schemas
    (``riverline/``) always come from the shipped ones, whatever folder is given."""

    pipelines_dir: Path = Field(default_factory=lambda: bundled_path("pipelines"))
    """Pipeline specs: ``--pipeline NAME`` means ``<pipelines_dir>/NAME.toml`` when no file
    ``NAME`` exists (``riverline --pipelines-dir``). Default: the example pipelines
    Riverline ships."""

    schema_registry_url: str | None = None
    """A Confluent-compatible Schema Registry (Confluent, Apicurio's ``/apis/ccompat/v7``,
    Karapace). Set: Confluent ids on ``P.raw`` are looked up there (``confluent-ids.toml``
    is then not used), ``riverline schemas push`` registers the catalog there, and
    ``output_format = "confluent"`` becomes possible."""

    schema_registry_user: str | None = None
    schema_registry_password: SecretStr | None = None
    """HTTP basic authentication to the registry (Confluent Cloud: API key and secret)."""

    schema_registry_token: SecretStr | None = None
    """A bearer token for the registry (``Authorization: Bearer``), instead of basic auth."""

    schema_registry_timeout: float = Field(default=2.0, gt=0)
    """Seconds one registry request may take. A worker looks an unknown id up on the event
    loop, so a registry that hangs costs at most this per retry interval."""

    schema_registry_retry: float = Field(default=30.0, ge=0)
    """Seconds after a failed registry request during which unknown ids are dead letters
    (``schema_registry_unavailable``) without another request."""

    output_format: Literal["single_object", "confluent"] = "single_object"
    """How ``P.events``, ``P.features`` and ``P.predictions`` are framed: Avro single-object
    encoding, or Confluent framing with ids registered under ``<topic>-value`` (needs
    ``schema_registry_url``). Other topics and dead letters are unchanged."""

    max_message_bytes: int = 1024 * 1024
    """Raw messages larger than this go to the dead-letter topic with reason ``too_large``."""

    max_id_bytes: int = 1024
    """Longest event id or partitioning key (the spec's ``id_field``, ``key_field``) and
    delayed-label event id, in UTF-8 bytes; longer ones are dead letters (``id_too_long``).
    Ids travel in the key and headers of every message Riverline writes for the event."""

    max_event_time_ahead: float = 86_400.0
    """Seconds an event time may be ahead of the ingest time; later ones, and any before
    1970, are dead letters (``bad_event_time``): one event far in the future would move
    every watermark there, expiring pending labels and making later events late."""

    fetch_max_wait: float = 0.01
    """Longest a worker's fetch waits at the broker for data (Faust fixes 1.5 s; see
    agents.internals.use_fetch_max_wait for why that held events back by up to 1.5 s)."""

    batch_size: int = 500
    """Micro-batching: at most this many events. A batch is what is waiting when an event
    comes (no timer: one event at low load, full batches under load)."""

    checkpoint_every: int = 10_000
    checkpoint_interval: float = 300.0
    """A pipeline's state (models as new registry versions, feature state, the offsets
    they reflect) is checkpointed after this many input messages (raw events and labels)
    or seconds, whichever first, on partition revocation and at clean shutdown. A crash
    repeats at most this much work."""

    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """What a crash may do to the outputs. ``at_least_once``: a restarted worker publishes
    again what it processed since its last checkpoint (repeats carry the same
    ``rl.event_id``). ``exactly_once``: each checkpoint's outputs, checkpoint records and
    input offsets commit in one Kafka transaction, so a ``read_committed`` consumer sees
    every output once; outputs become visible at each checkpoint (see
    :attr:`commit_interval`). Single mode only."""

    commit_interval: float = 1.0
    """``exactly_once``: a checkpoint (and so a transaction commit) at least this often in
    seconds while events flow, whatever ``checkpoint_interval`` says: a ``read_committed``
    consumer sees a prediction up to about this long after it was made."""

    publish_interval: float = 5.0
    """Decoupled mode: the learner publishes its models (new versions for the serving
    workers, with its checkpoint) at least this often in seconds while it learns, or after
    ``checkpoint_every`` records if that comes first. Serving workers' models are at most
    about this old (plus a batch)."""

    checkpoint_max_bytes: int = 64 * 1024 * 1024
    """Largest checkpoint record (one raw partition's feature state, or the predict
    state); also the checkpoint topic's ``max.message.bytes``."""

    session_timeout: float = 60.0
    """Seconds before the consumer group gives up on a worker that stopped heartbeating
    (a crashed worker's partitions wait this long before a restarted one gets them)."""

    sink_enabled: bool = True
    """Run each pipeline's offline sink with the worker (Parquet in the store at
    :attr:`store_location`)."""

    sink_process: bool = True
    """The worker runs the sink as ``riverline sink``, a child process of its own; off: as a
    task on the worker's event loop, where its decoding and Parquet writes share the GIL."""

    sink_nice: int = 10
    """Niceness added to the sink's process: it gets the CPU the worker leaves, so a backlog
    in the offline store (after a burst) does not slow the predictions down."""

    sink_idle: bool = True
    """Linux: the sink's process runs under the ``SCHED_IDLE`` policy, on CPU time no other
    process wants; a worker that wakes up takes the core from it at once (with niceness
    alone, events waited behind a catching-up sink: p99 65 ms against 28 ms without one)."""

    sink_block_size: int = 10_000
    """Offsets per offline-store file (per topic partition); a file is rewritten until full."""

    sink_flush_interval: float = 5.0
    """Seconds between offline-store flushes (also at clean shutdown and on revocation)."""

    store_url: str | None = None
    """Where the offline store is: an absolute path or a URL ``pyarrow.fs`` opens
    (``file:///srv/store``, ``s3://bucket/prefix``, ``gs://``, ``hdfs://``, ``abfs://``).
    Unset: ``home/store``. Every sink and command of a deployment (on every machine) needs
    the same value; S3 credentials come from the usual ``AWS_*`` variables or the instance
    role, options such as ``?region=`` or ``?endpoint_override=`` from the URL."""

    registry_keep: int = Field(default=50, ge=1)
    """Registry retention: the newest versions of each model kept after a checkpoint (at
    least 1). Older ones are removed, except the champion, the shadows, the rollback
    targets and the versions the latest checkpoint names (``ModelRegistry.prune``)."""

    label_ttl: float = 86_400.0
    """Seconds of event time a prediction waits for its delayed label on ``P.labels``
    (and an early label for its prediction) before it is counted as expired."""

    label_max_pending: int = Field(default=100_000, ge=1)
    """Most predictions waiting for a label (and, apart, most early labels waiting for a
    prediction) per pipeline; beyond it the oldest expire first and are counted."""

    label_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Approximate bytes the waiting predictions and early labels may hold together per
    pipeline (they are checkpointed too: keep it well under ``checkpoint_max_bytes``)."""

    admin_tokens: str = ""
    """Admin API grants, ``name:role:sha256hex,...`` (roles ``viewer``, ``operator``);
    the digest is the sha256 of the bearer token. Empty: every admin request gets 401."""

    admin_token: SecretStr | None = None
    """The bearer token ``riverline models`` sends to the worker's admin API."""

    log_level: str = "info"
    log_json: bool = False

    signing_key: SecretStr = SecretStr(DEV_SIGNING_KEY)
    """The secret that signs model artifacts and, through a key derived from it, every
    record Riverline writes to Kafka (``rl.mac``). Every worker and command of one
    deployment needs the same key. The built-in value works only with ``dev_mode``."""

    dev_mode: bool = False
    """Development mode: the built-in signing key is accepted (``make demo`` and
    ``make test`` turn it on). Never in a deployment: anyone can forge with that key."""

    kafka_security: Literal["plaintext", "sasl_scram"] = "plaintext"
    """How Riverline's clients authenticate: ``plaintext`` (no authentication) or
    ``sasl_scram`` (SASL/SCRAM-SHA-256 over ``SASL_PLAINTEXT``, as ``kafka up --secure``)."""

    kafka_username: str | None = None
    """The SCRAM principal Riverline's clients log in as (``riverline`` for the worker)."""

    kafka_password: SecretStr | None = None
    """The password of ``kafka_username``. Never put it in a file in the repository."""

    kafka_admin_password: SecretStr | None = None
    kafka_producer_password: SecretStr | None = None
    kafka_consumer_password: SecretStr | None = None
    kafka_riverline_password: SecretStr | None = None
    """Passwords ``kafka up --secure`` gives the principals ``admin``, ``producer``,
    ``consumer`` and ``riverline`` when it formats a new data dir; each one unset is
    generated and kept in ``<data dir>/credentials.json`` (mode 0600)."""

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_url_is_http(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme.lower() not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError(
                f"RIVERLINE_SCHEMA_REGISTRY_URL {value!r} is not an http(s) URL; give the "
                "registry's base URL, e.g. http://localhost:8081 or "
                "http://localhost:8080/apis/ccompat/v7 (Apicurio)"
            )
        return value.rstrip("/")

    @field_validator("store_url")
    @classmethod
    def _store_url_is_a_place(cls, value: str | None) -> str | None:
        return check_store_url(value) if value else None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read the environment (``RIVERLINE_*``) and apply explicit overrides."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(
                f"invalid Riverline setting: {exc}. Check the RIVERLINE_* environment variables."
            ) from exc

    def signing_key_bytes(self) -> bytes:
        """The signing key, refused when it is the built-in one outside development mode.

        Raises
        ------
        ConfigError
            If the key is empty, or the built-in development key without ``dev_mode``.
        """
        key = self.signing_key.get_secret_value()
        if not key:
            raise ConfigError("RIVERLINE_SIGNING_KEY is empty; set a secret of 32 bytes or more.")
        if key == DEV_SIGNING_KEY and not self.dev_mode:
            raise ConfigError(
                "RIVERLINE_SIGNING_KEY is not set: Riverline will not sign or trust records "
                "with its built-in development key outside development mode. Set a secret "
                "shared by every worker and command of this deployment, e.g. "
                "`export RIVERLINE_SIGNING_KEY=$(openssl rand -hex 32)`, or set "
                "RIVERLINE_DEV_MODE=1 on a development machine."
            )
        return key.encode()

    @property
    def raw_topic_max_bytes(self) -> int:
        """``max.message.bytes`` of a pipeline's ``P.raw`` and ``P.labels``: a value of up
        to ``max_message_bytes`` with its key and headers, and Kafka's default at least."""
        return max(KAFKA_MESSAGE_BYTES, self.max_message_bytes + MESSAGE_HEADROOM)

    @property
    def output_max_bytes(self) -> int:
        """The largest message Riverline writes for a raw message (an output or its dead
        letter): the raw message and Riverline's headers always fit. Larger outputs are
        dead letters (``output_too_large``)."""
        return self.max_message_bytes + 2 * MESSAGE_HEADROOM

    @property
    def output_topic_max_bytes(self) -> int:
        """``max.message.bytes`` of the topics Riverline writes outputs and dead letters
        to: one :attr:`output_max_bytes` message, and Kafka's default at least."""
        return max(KAFKA_MESSAGE_BYTES, self.output_max_bytes)

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"

    @property
    def effective_checkpoint_interval(self) -> float:
        """Seconds between checkpoints while events flow: ``checkpoint_interval``, or
        ``commit_interval`` if shorter in ``exactly_once`` mode."""
        if self.exactly_once:
            return min(self.checkpoint_interval, self.commit_interval)
        return self.checkpoint_interval

    @property
    def fetch_max_wait_ms(self) -> int:
        """``fetch_max_wait`` in whole milliseconds, at least 1, as Kafka clients take it."""
        return max(1, int(self.fetch_max_wait * 1000))

    @property
    def local_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def effective_bootstrap(self) -> str:
        """The cluster to talk to: ``bootstrap`` if set, else the local broker."""
        return self.bootstrap or self.local_bootstrap

    @property
    def cache_root(self) -> Path:
        """Root of downloaded and compiled artifacts: ``cache_dir`` if set, else ``home``."""
        return self.cache_dir or self.home

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_libs_dir(self) -> Path:
        """The broker jars for ``kafka_version`` (shared by every broker data dir)."""
        return self.cache_root / "kafka" / self.kafka_version / "libs"

    @property
    def numba_cache_dir(self) -> Path:
        return self.cache_root / "numba-cache"

    @property
    def store_location(self) -> str:
        """The offline store (Parquet) the sinks write and lineage and train read: a path
        or URL (``store_url``, else ``home/store``); open it with
        ``streams.store.offline.OfflineStore.from_settings``."""
        return self.store_url or str(self.home / "store")

    @property
    def store_dir(self) -> Path:
        """The offline store as a local directory.

        Raises
        ------
        ConfigError
            If ``store_url`` is not on the local filesystem (an object store, HDFS).
        """
        location = self.store_location
        if "://" not in location:
            return Path(location)
        parts = urlsplit(location)
        if parts.scheme.lower() != "file":
            raise ConfigError(
                f"the offline store is at {store_url_for_display(location)}, not in a local "
                "directory: open it with OfflineStore.from_settings(settings)."
            )
        return Path(unquote(parts.path))

    @property
    def registry_dir(self) -> Path:
        """The model registry's root."""
        return self.home / "registry"

    def topic(self, name: str) -> str:
        """A topic name with the namespace applied."""
        return f"{self.namespace}{name}"

    def child_env(self) -> dict[str, str]:
        """Environment for a child process (worker) that should see these settings."""
        env = dict(os.environ)
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"RIVERLINE_{name.upper()}"] = str(value)
        env["NUMBA_CACHE_DIR"] = str(self.numba_cache_dir)
        return env
