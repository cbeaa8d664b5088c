"""The supervisor's configuration: a TOML file parsed once into frozen dataclasses.

Every problem is reported as ``<file>: <dotted.key>: <what is wrong>``, all of
them at once, so an operator fixes a file in one go. To add a key: add a field
to the dataclass, a ``_Spec`` line to the section's table below, a line to
``supervisor.toml.example``, and a test in ``tests/unit/test_config.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from workflow_sdk.cpus import usable_cpus
from workflow_sdk.errors import ConfigError
from workflow_sdk.fate import IN_FLIGHT_WINDOW
from workflow_sdk.jobcore import default_worker_id
from workflow_sdk.kafka.offsets import DEFAULT_MAX_PENDING
from workflow_sdk.sanitize import redact_url
from workflow_sdk.supervisor import security
from workflow_sdk.threads_limit import THREAD_ENV_VARS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: Environment variables that override the file (secrets stay out of files).
ENV_ENGINE_URL = "ROCHALLOR_ENGINE_URL"
ENV_ENGINE_TOKEN = "ROCHALLOR_ENGINE_TOKEN"

#: An hour: CPU-heavy handlers (renders, simulations, inference) legitimately
#: run for minutes, and killing them at the engine's 30 s lease would make
#: such a fleet useless out of the box; an hour still ends a hung handler.
#: Set a tighter ``[job_types."x"] timeout`` where jobs are known to be short.
DEFAULT_JOB_TIMEOUT = 3600.0
LEASE_RENEWAL_MODES = ("auto", "off", "required")
DISPATCH_MODES = ("poll", "kafka")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def default_worker_count() -> int:
    """CPUs this process may really use: its affinity mask (cpusets included)
    and the CPU quota of its cgroup, rounded down, at least 1
    (``workflow_sdk.cpus.usable_cpus``)."""
    return usable_cpus().count


@dataclass(frozen=True)
class EngineConfig:
    url: str = "http://127.0.0.1:8080"
    timeout: float = 10.0
    token: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    #: How jobs arrive: "poll" (the engine's REST poll), or "kafka" (an engine
    #: with WE_DISPATCH_MODE=kafka_outbox publishes them; see [kafka]).
    dispatch: str = "poll"
    #: Seconds after a report was sent during which the engine may still act
    #: on it (its 30 s handler timeout plus the way there): a report whose
    #: answer was lost is not sent again before (see workflow_sdk.fate).
    in_flight_window: float = IN_FLIGHT_WINDOW


@dataclass(frozen=True)
class SupervisorSection:
    """The ``[supervisor]`` section: the pool, its time limits and its rules
    (``SupervisorConfig.supervisor``, named like the section)."""

    handlers: tuple[str, ...] = ()
    workers: int = field(default_factory=default_worker_count)
    worker_id: str = field(default_factory=default_worker_id)
    poll_interval: float = 1.0
    graceful_timeout: float = 25.0
    job_timeout: float = DEFAULT_JOB_TIMEOUT
    report_deadline: float = 600.0
    boot_timeout: float = 60.0
    #: Replace a worker after this many jobs (0 = never), spread by the jitter
    #: fraction so that workers do not all restart at once.
    max_jobs_per_child: int = 0
    max_jobs_jitter: float = 0.1
    #: Replace a worker after its job once its RSS passes this (0 = no limit).
    max_memory_mb: float = 0.0
    #: Kill a worker during its job past this RSS (0 = 1.25 x max_memory_mb).
    max_memory_hard_mb: float = 0.0
    memory_check_interval: float = 2.0
    #: Import the handler modules once in the fork server, so workers start
    #: with them loaded (and share their memory). SIGHUP then restarts
    #: workers but cannot load changed handler code.
    preload_handlers: bool = False
    #: While a job runs, ask the engine this often whether it still matters
    #: (instance cancelled or finished, step interrupted); 0 = never.
    stale_check_interval: float = 5.0
    #: Renew running jobs' leases on engines that can: "auto" (probe at
    #: start-up), "off", or "required" (refuse to start without it).
    lease_renewal: str = "auto"
    #: Seconds between renewals of one job's lease; 0 = a third of the lease.
    lease_renewal_interval: float = 0.0
    #: Lease asked for at each renewal (5-3600 s); 0 = the engine's default.
    lease_seconds: int = 0
    #: Threads of each worker's BLAS and OpenMP pools (OMP_NUM_THREADS and
    #: the others of ``threads_limit.THREAD_ENV_VARS``, for the fork server
    #: and every worker; pools already loaded are resized with threadpoolctl).
    threads_per_worker: int = 1
    #: Pin worker N to the Nth CPU this process may use (wrapping around).
    cpu_affinity: bool = False
    #: Log once per worker when the memory it owns (USS) passes this (0 = never).
    memory_warning_mb: float = 0.0
    #: A module of worker hooks: worker_init, before_job, after_job,
    #: worker_exit (in the workers), child_exit (in this process, with
    #: ``parent_hooks``).
    hooks: str = ""
    #: This process imports ``hooks`` too, to call its child_exit.
    parent_hooks: bool = False
    #: ``[supervisor.env]``: variables set for the fork server and every worker.
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def memory_hard_limit_mb(self) -> float:
        if self.max_memory_hard_mb:
            return self.max_memory_hard_mb
        return self.max_memory_mb * 1.25


@dataclass(frozen=True)
class JobTypeConfig:
    """A ``[job_types."x"]`` section. ``None``: the key is not set, the pool's
    value applies (``supervisor.type_settings`` resolves them)."""

    #: Seconds a job of this type may run (0 = no limit); None: ``job_timeout``.
    timeout: float | None = None
    #: At most this many of the pool's workers run this type at once.
    concurrency: int | None = None
    #: ``max_memory_mb`` / ``max_memory_hard_mb`` for a worker running this type.
    max_memory_mb: float | None = None
    max_memory_hard_mb: float | None = None
    #: BLAS/OpenMP threads of a worker while it runs this type.
    threads: int | None = None
    #: Seconds a retryable failure is held before it is reported (grows per
    #: attempt, with jitter, within the lease); 0 = at once.
    retry_delay: float = 0.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class MetricsConfig:
    #: Port of the /metrics server; None = no server, 0 = any free port.
    port: int | None = None
    bind: str = "127.0.0.1"
    #: prometheus multiprocess directory; None = $RUNTIME_DIRECTORY/metrics
    #: under systemd, else a fresh temporary directory.
    dir: str | None = None


@dataclass(frozen=True)
class KafkaConfig:
    """The ``[kafka]`` section (``[engine] dispatch = "kafka"``)."""

    brokers: tuple[str, ...] = ()
    #: Consumer group per job type; "{job_type}" is replaced. Default: the
    #: other SDKs' convention, "workflow.workers.{job_type}".
    group: str = "workflow.workers.{job_type}"
    #: Seconds a finished dispatch's dedup_id is remembered (duplicates skipped).
    dedup_window: float = 600.0
    #: Records of one partition held uncommitted at most (behind one whose
    #: job is not finished): past it, fetching from that partition pauses.
    max_pending_offsets: int = DEFAULT_MAX_PENDING
    #: librdkafka settings ([kafka.config], plus [kafka.config_env] resolved
    #: from the environment: secrets stay out of the file).
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def group_for(self, job_type: str) -> str:
        return self.group.replace("{job_type}", job_type)


@dataclass(frozen=True)
class SupervisorConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    job_types: Mapping[str, JobTypeConfig] = field(default_factory=lambda: MappingProxyType({}))
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    #: Where this configuration came from (a path, or ``<dict>``).
    source: str = "<code>"
    #: ``<file>: <key>: <what>`` for each accepted setting that weakens
    #: security (TLS checks off, a token in clear, a secret others may read):
    #: ``run`` logs each at start-up, ``check`` prints them.
    warnings: tuple[str, ...] = ()
    #: The environment variables this configuration took secrets from (the
    #: token, [kafka.config_env]): kept from the worker processes.
    secret_env: tuple[str, ...] = (ENV_ENGINE_TOKEN,)
    #: Where ``supervisor.workers`` came from when the file does not set it
    #: (``UsableCpus.describe()``: "2 CPUs (affinity)"); "" when it does.
    workers_from: str = ""

    def job_timeout(self, job_type: str) -> float:
        """Seconds a job of ``job_type`` may run; 0 means no limit."""
        section = self.job_types.get(job_type)
        if section is None or section.timeout is None:
            return self.supervisor.job_timeout
        return section.timeout


# -- parsing -----------------------------------------------------------------

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class _Spec:
    kind: str  # "str", "float", "int", "bool", "str-list", "host-list"
    check: Check | None = None
    #: a secret: no message shows its value
    secret: bool = False


def _at_least(minimum: float) -> Check:
    return lambda v: None if v >= minimum else f"must be >= {minimum:g}, got {v!r}"


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"

    return check


def _http_url(v: Any) -> str | None:
    ok = isinstance(v, str) and v.startswith(("http://", "https://")) and len(v) > 8
    shown = redact_url(v) if isinstance(v, str) else v
    return None if ok else f"must be an http:// or https:// URL, got {shown!r}"


def _module_name(v: Any) -> str | None:
    ok = bool(v) and all(part.isidentifier() for part in v.split("."))
    return None if ok else f"{v!r} is not a module name like 'myapp.hooks'"


def _handler_specs(v: Any) -> str | None:
    for spec in v:
        module = spec.partition(":")[0]
        if not module or not all(part.isidentifier() for part in module.split(".")):
            return f"{spec!r} is not an import string like 'myapp.handlers:registry'"
    return None


_ENGINE: dict[str, _Spec] = {
    "url": _Spec("str", _http_url),
    "timeout": _Spec("float", _positive),
    "token": _Spec("str", security.token_problem, secret=True),
    "token_env": _Spec("str"),
    "verify_tls": _Spec("bool"),
    "ca_bundle": _Spec("str"),
    "dispatch": _Spec("str", _one_of(DISPATCH_MODES)),
    "in_flight_window": _Spec("float", _positive),
}
_POOL: dict[str, _Spec] = {
    "handlers": _Spec("str-list", _handler_specs),
    "workers": _Spec("int", _at_least(1)),
    "worker_id": _Spec("str", lambda v: None if v.strip() else "must not be empty"),
    "poll_interval": _Spec("float", _positive),
    "graceful_timeout": _Spec("float", _at_least(0)),
    "job_timeout": _Spec("float", _at_least(0)),
    "report_deadline": _Spec("float", _positive),
    "boot_timeout": _Spec("float", _positive),
    "max_jobs_per_child": _Spec("int", _at_least(0)),
    "max_jobs_jitter": _Spec(
        "float", lambda v: None if 0 <= v <= 1 else f"must be 0..1, got {v!r}"
    ),
    "max_memory_mb": _Spec("float", _at_least(0)),
    "max_memory_hard_mb": _Spec("float", _at_least(0)),
    "memory_check_interval": _Spec("float", _positive),
    "preload_handlers": _Spec("bool"),
    "stale_check_interval": _Spec("float", _at_least(0)),
    "lease_renewal": _Spec("str", _one_of(LEASE_RENEWAL_MODES)),
    "lease_renewal_interval": _Spec("float", _at_least(0)),
    "lease_seconds": _Spec(
        "int", lambda v: None if v == 0 or 5 <= v <= 3600 else f"must be 0 or 5..3600, got {v!r}"
    ),
    "threads_per_worker": _Spec("int", _at_least(1)),
    "cpu_affinity": _Spec("bool"),
    "memory_warning_mb": _Spec("float", _at_least(0)),
    "hooks": _Spec("str", _module_name),
    "parent_hooks": _Spec("bool"),
}
_METRICS: dict[str, _Spec] = {
    "port": _Spec("int", lambda v: None if 0 <= v <= 65535 else f"must be 0..65535, got {v!r}"),
    "bind": _Spec("str", lambda v: None if v.strip() else "must not be empty"),
    "dir": _Spec("str", lambda v: None if v.strip() else "must not be empty"),
}
_JOB_TYPE: dict[str, _Spec] = {
    "timeout": _Spec("float", _at_least(0)),
    "concurrency": _Spec("int", _at_least(1)),
    "max_memory_mb": _Spec("float", _at_least(0)),
    "max_memory_hard_mb": _Spec("float", _at_least(0)),
    "threads": _Spec("int", _at_least(1)),
    "retry_delay": _Spec("float", _at_least(0)),
}
_KAFKA: dict[str, _Spec] = {
    "brokers": _Spec(
        "host-list",
        lambda v: (
            None
            if v and all(v)
            else 'must list at least one host:port, e.g. "k1:9092,k2:9092" or ["k1:9092"]'
        ),
    ),
    "group": _Spec("str", lambda v: None if v.strip() else "must not be empty"),
    "dedup_window": _Spec("float", _at_least(0)),
    "max_pending_offsets": _Spec("int", _at_least(1)),
}
_LOGGING: dict[str, _Spec] = {
    "level": _Spec("str", _one_of(LOG_LEVELS)),
    "format": _Spec("str", _one_of(LOG_FORMATS)),
}
_TYPE_NAMES = {
    "str": "a string",
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "str-list": "a list of strings",
    "host-list": 'a list of strings or one comma-separated string ("k1:9092,k2:9092")',
}


def _coerce(kind: str, value: Any) -> tuple[Any, bool]:
    """Return (value, ok); ints are accepted where numbers are, bools are not."""
    if kind == "str":
        return value, isinstance(value, str)
    if kind == "bool":
        return value, isinstance(value, bool)
    if kind == "int":
        return value, isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value), ok and math.isfinite(value)) if ok else (value, False)
    if kind == "str-list":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (tuple(value), True) if ok else (value, False)
    if kind == "host-list":
        # The string Kafka users write ("k1:9092,k2:9092"), as KafkaRunner takes it.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",")), True
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (tuple(v.strip() for v in value), True) if ok else (value, False)
    raise AssertionError(kind)


class _Reader:
    """Collects every problem of one file before raising."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.source}: {key}: {text}")

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.problem(key, "must be a table")
            return {}
        return value

    def section(
        self, table: Mapping[str, Any], prefix: str, specs: Mapping[str, _Spec]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            dotted = f"{prefix}.{key}"
            spec = specs.get(key)
            if spec is None:
                self.problem(dotted, f"unknown key (known: {', '.join(sorted(specs))})")
                continue
            coerced, ok = _coerce(spec.kind, value)
            if not ok:
                shown = "a value (not shown)" if spec.secret else repr(value)
                self.problem(dotted, f"must be {_TYPE_NAMES[spec.kind]}, got {shown}")
                continue
            error = spec.check(coerced) if spec.check else None
            if error:
                self.problem(dotted, error)
                continue
            out[key] = coerced
        return out


def parse_config(
    data: Mapping[str, Any],
    source: str = "<dict>",
    environ: Mapping[str, str] | None = None,
    *,
    require_handlers: bool = False,
) -> SupervisorConfig:
    """Build a ``SupervisorConfig`` from parsed TOML (or any nested mapping).

    ``environ`` (default ``os.environ``) supplies ``ROCHALLOR_ENGINE_URL`` and
    ``ROCHALLOR_ENGINE_TOKEN``, which win over the file. With
    ``require_handlers`` a missing or empty ``[supervisor] handlers`` is one
    of the problems reported (code that passes ``registry=`` to the
    ``Supervisor`` may leave it out).
    """
    env = os.environ if environ is None else environ
    reader = _Reader(source)
    known = ("engine", "supervisor", "job_types", "logging", "metrics", "kafka")
    for key in data:
        if key not in known:
            reader.problem(key, f"unknown section (known: {', '.join(known)})")

    engine = reader.section(reader.table(data, "engine"), "engine", _ENGINE)
    token_key = "engine.token"
    secret_env = [ENV_ENGINE_TOKEN]
    token_env = engine.pop("token_env", None)
    if token_env:
        secret_env.append(token_env)
    if token_env and env.get(token_env):
        token_key = f"engine.token_env (${token_env})"
        _take_token(reader, engine, env[token_env], token_key)
    elif token_env:
        reader.problem("engine.token_env", f"environment variable {token_env} is not set")
    if env.get(ENV_ENGINE_URL):
        url = env[ENV_ENGINE_URL]
        error = _http_url(url)
        if error:
            reader.problem(f"${ENV_ENGINE_URL}", error)
        else:
            engine["url"] = url
    if env.get(ENV_ENGINE_TOKEN):
        token_key = f"${ENV_ENGINE_TOKEN}"
        _take_token(reader, engine, env[ENV_ENGINE_TOKEN], token_key)

    pool_table = dict(reader.table(data, "supervisor"))
    worker_env = _env_table(reader, pool_table.pop("env", {}), secret_env)
    pool = reader.section(pool_table, "supervisor", _POOL)
    pool["env"] = MappingProxyType(worker_env)
    if pool.get("parent_hooks") and not pool_table.get("hooks"):
        reader.problem("supervisor.parent_hooks", "needs supervisor.hooks (the module to import)")
    # A value of the wrong type is already reported by section().
    if require_handlers and pool_table.get("handlers") in (None, []):
        reader.problem(
            "supervisor.handlers",
            "missing: list the modules holding your handlers, "
            'e.g. handlers = ["myapp.handlers:registry"]',
        )
    logging_ = reader.section(reader.table(data, "logging"), "logging", _LOGGING)
    metrics = reader.section(reader.table(data, "metrics"), "metrics", _METRICS)
    soft, hard = pool.get("max_memory_mb", 0.0), pool.get("max_memory_hard_mb", 0.0)
    if hard and hard < soft:
        reader.problem(
            "supervisor.max_memory_hard_mb",
            f"must be >= max_memory_mb ({soft:g}), got {hard:g}",
        )

    job_types: dict[str, JobTypeConfig] = {}
    for name, table in reader.table(data, "job_types").items():
        prefix = f'job_types."{name}"'
        if not isinstance(table, Mapping):
            reader.problem(prefix, "must be a table")
            continue
        settings = reader.section(table, prefix, _JOB_TYPE)
        _check_type_memory(reader, prefix, settings, soft)
        job_types[name] = JobTypeConfig(**settings)

    kafka = _kafka_section(reader, data, env, engine.get("dispatch", "poll"))
    secret_env.extend(_config_env_names(data))
    defaults = EngineConfig()
    weak = security.tls_warnings(
        url=engine.get("url", defaults.url),
        token=engine.get("token"),
        verify_tls=engine.get("verify_tls", defaults.verify_tls),
        ca_bundle=engine.get("ca_bundle"),
        dispatch=engine.get("dispatch", defaults.dispatch),
        kafka_config=kafka.config,
        token_key=token_key,
    )

    if reader.problems:
        raise ConfigError("\n".join(reader.problems))
    cpus = None if "workers" in pool else usable_cpus()
    if cpus is not None:
        pool["workers"] = cpus.count
    return SupervisorConfig(
        kafka=kafka,
        engine=EngineConfig(**engine),
        supervisor=SupervisorSection(**pool),
        job_types=MappingProxyType(job_types),
        logging=LoggingConfig(**logging_),
        metrics=MetricsConfig(**metrics),
        source=source,
        warnings=tuple(f"{source}: {w.key}: {w.text}" for w in weak),
        secret_env=tuple(dict.fromkeys(secret_env)),
        workers_from=cpus.describe() if cpus is not None else "",
    )


def _check_type_memory(
    reader: _Reader, prefix: str, settings: Mapping[str, Any], pool_soft: float
) -> None:
    """A type's hard limit below the soft limit in force for it (its own, else
    the pool's) would kill a worker before the soft one could recycle it."""
    hard = settings.get("max_memory_hard_mb")
    soft = settings.get("max_memory_mb", pool_soft)
    if hard and soft and hard < soft:
        where = "" if "max_memory_mb" in settings else " (the pool's)"
        reader.problem(
            f"{prefix}.max_memory_hard_mb",
            f"must be >= max_memory_mb{where} ({soft:g}), got {hard:g}",
        )


def _take_token(reader: _Reader, engine: dict[str, Any], token: str, key: str) -> None:
    """The token from the environment, checked as the file's is (never shown)."""
    problem = security.token_problem(token)
    if problem:
        reader.problem(key, problem)
    else:
        engine["token"] = token


def _env_table(reader: _Reader, table: Any, secret_env: list[str]) -> dict[str, str]:
    """``[supervisor.env]``: NAME = "value" pairs for the workers. The thread
    variables belong to ``threads_per_worker``, the secrets' to this process."""
    if not isinstance(table, Mapping):
        reader.problem("supervisor.env", 'must be a table of NAME = "value"')
        return {}
    env: dict[str, str] = {}
    for name, value in table.items():
        where = f"supervisor.env.{name}"
        if not name or "=" in name or "\0" in name:
            reader.problem(where, "is not an environment variable name")
        elif name in THREAD_ENV_VARS:
            reader.problem(where, "is set by supervisor.threads_per_worker: use that key")
        elif name in secret_env:
            reader.problem(where, "is a secret this configuration reads: workers never see it")
        elif not isinstance(value, str) or "\0" in value:
            reader.problem(where, f"must be a string, got {value!r}")
        else:
            env[name] = value
    return env


def _config_env_names(data: Mapping[str, Any]) -> list[str]:
    """The variables [kafka.config_env] names (whether they are set or not)."""
    kafka = data.get("kafka")
    table = kafka.get("config_env") if isinstance(kafka, Mapping) else None
    if not isinstance(table, Mapping):
        return []
    return [str(name) for name in table.values() if isinstance(name, str) and name]


def _kafka_section(
    reader: _Reader, data: Mapping[str, Any], env: Mapping[str, str], dispatch: str
) -> KafkaConfig:
    table = dict(reader.table(data, "kafka"))
    client_config: dict[str, str] = {}
    for name in ("config", "config_env"):
        sub = table.pop(name, {})
        if not isinstance(sub, Mapping):
            reader.problem(f"kafka.{name}", "must be a table")
            continue
        for key, value in sub.items():
            where = f"kafka.{name}.{key}"
            if not isinstance(value, (str, int, float, bool)):
                reader.problem(where, f"must be a string or a number, got {value!r}")
            elif name == "config":
                client_config[key] = str(value).lower() if isinstance(value, bool) else str(value)
            elif not env.get(str(value)):
                reader.problem(where, f"environment variable {value} is not set")
            else:
                client_config[key] = env[str(value)]
    kafka = reader.section(table, "kafka", _KAFKA)
    if dispatch == "kafka" and not kafka.get("brokers"):
        reader.problem(
            "kafka.brokers",
            'missing: [engine] dispatch = "kafka" needs the brokers, '
            'e.g. brokers = ["kafka-1:9092"]',
        )
    return KafkaConfig(**kafka, config=MappingProxyType(client_config))


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_handlers: bool = True,
) -> SupervisorConfig:
    """Read and validate a TOML file. Raises ``ConfigError`` naming the file.

    ``[supervisor] handlers`` is required unless ``require_handlers`` is
    false (for code that passes its own registry to the ``Supervisor``).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    verdict = security.file_mode_verdict(mode, security.secret_keys(data))
    try:
        config = parse_config(data, source=name, environ=environ, require_handlers=require_handlers)
    except ConfigError as exc:
        if verdict.problem:
            raise ConfigError(f"{name}: {verdict.problem}\n{exc}") from None
        raise
    if verdict.problem:
        raise ConfigError(f"{name}: {verdict.problem}")
    if verdict.warning:
        warnings = (*config.warnings, f"{name}: {verdict.warning}")
        config = dataclasses.replace(config, warnings=warnings)
    return config


def unhandled_job_types(config: SupervisorConfig, job_types: Iterable[str]) -> list[str]:
    """One warning per ``[job_types."x"]`` section that no handler registers
    (a typo in the name, or a module missing from ``supervisor.handlers``)."""
    return [
        f'[job_types."{name}"] has no handler (no module in supervisor.handlers registers {name!r})'
        for name in sorted(set(config.job_types) - set(job_types))
    ]


#: The ``[supervisor]`` section's former name (it holds more than the pool).
PoolConfig = SupervisorSection

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "ENV_ENGINE_TOKEN",
    "ENV_ENGINE_URL",
    "EngineConfig",
    "JobTypeConfig",
    "KafkaConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PoolConfig",
    "SupervisorConfig",
    "SupervisorSection",
    "load_config",
    "parse_config",
    "unhandled_job_types",
]
