"""The reference pages' content, read from the code at build time.

Each ``*_model()`` function reads one source of truth and returns plain
records; each ``render_*()`` turns them into Markdown. The mkdocs hook
(``hooks.py`` beside this file) puts that Markdown where a page says
``<!-- reference: NAME -->``, so nothing generated is ever committed, and
the tests (``tests/unit/test_docs_reference.py``) compare the models with the
code they were read from.

- Configuration keys: the parser's own tables (``_Spec`` per section in
  ``workflow_sdk.supervisor.config``) for the type and the allowed values
  (what the parser says when a value is refused), the dataclasses for the
  defaults, ``workflow_sdk.supervisor.reload`` for what needs a restart, and
  ``supervisor.toml.example`` for each key's description.
- Metrics: a fresh registry with the SDK's ``Metrics`` and the supervisor's
  ``PoolCollector`` (fed a stub worker and Kafka counters), collected.
- The command line: the argument parsers themselves.
- Signals and exit statuses: ``workflow_sdk.supervisor.exposition.manual``, and
  ``worker.sigpolicy`` for what the fork server and the workers do.

Nothing here imports mkdocs: the unit tests run it without the docs extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "supervisor.toml.example"

# -- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKey:
    """One key of the supervisor's configuration file."""

    #: the section as written in the file: ``engine``, ``job_types."<type>"``...
    section: str
    name: str
    #: what the parser accepts: ``a number``, ``a list of strings``...
    kind: str
    #: the default, as TOML, or a sentence for computed defaults
    default: str
    #: what the parser's check says when a value is refused, without the value
    allowed: tuple[str, ...]
    #: True: a SIGHUP does not change it; only a restart does
    restart: bool
    #: from supervisor.toml.example (the comment above the key)
    description: str
    #: an environment variable that overrides it
    env: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def anchor(self) -> str:
        section = self.section.replace('."<type>"', "")
        return re.sub(r"[^a-z0-9]+", "-", f"{section}-{self.name}".lower()).strip("-")


#: Values tried against each check to make it say what it refuses. A check
#: that none of them trips documents nothing (a unit test says so).
_PROBES: dict[str, tuple[Any, ...]] = {
    "float": (-1.0, 0.0, 0.5, 2.0, 1e9),
    "int": (-1, 0, 1, 2, 4, 70000),
    "str": ("", " ", "\x00"),
    "str-list": ((), ("",), ("-",)),
    "host-list": ((), ("",), ("-",)),
    "bool": (),
}


def _config_sections() -> list[tuple[str, Mapping[str, Any], type]]:
    """(section as written, its _Spec table, its dataclass), in file order."""
    from workflow_sdk.supervisor import config  # noqa: PLC0415

    return [
        ("engine", config._ENGINE, config.EngineConfig),
        ("supervisor", config._POOL, config.SupervisorSection),
        ('job_types."<type>"', config._JOB_TYPE, config.JobTypeConfig),
        ("kafka", config._KAFKA, config.KafkaConfig),
        ("metrics", config._METRICS, config.MetricsConfig),
        ("logging", config._LOGGING, config.LoggingConfig),
    ]


def spec_tables() -> dict[str, Mapping[str, Any]]:
    """Every ``_Spec`` table of the config module, by its name there (for the
    test that no table is left out of ``_config_sections``)."""
    from workflow_sdk.supervisor import config  # noqa: PLC0415

    return {
        name: value
        for name, value in vars(config).items()
        if isinstance(value, dict)
        and value
        and all(isinstance(v, config._Spec) for v in value.values())
    }


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{}"
            if not value
            else "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
        )
    return repr(value)


def _default(cls: type, name: str) -> str:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    spec = fields.get(name)
    if spec is None:
        return "none"
    if spec.default is not dataclasses.MISSING:
        return _toml(spec.default)
    factory = spec.default_factory
    if factory is dataclasses.MISSING:  # pragma: no cover - every field has a default
        return "required"
    doc = (getattr(factory, "__doc__", None) or "").strip()
    if getattr(factory, "__name__", "") != "<lambda>" and doc:
        return "computed: " + doc.splitlines()[0].replace("``", "`")
    return _toml(factory())


def _constraint(message: str) -> str:
    text = re.split(r"[,;] got ", message)[0]
    quoted = re.match(r"^'.*?' is not (.*)$", text)
    if quoted:
        return quoted.group(1)
    text = re.sub(r"^must (be )?", "", text)
    return text.replace("not be ", "not ")


def allowed_values(kind: str, check: Callable[[Any], str | None] | None) -> tuple[str, ...]:
    """What ``check`` refuses, in the parser's words (without the value)."""
    if check is None:
        return ()
    found: dict[str, None] = {}
    for probe in _PROBES[kind]:
        try:
            message = check(probe)
        except Exception:  # a probe of a kind the check does not expect
            continue
        if message:
            found[_constraint(message)] = None
    return tuple(found)


def example_descriptions(text: str) -> dict[str, str]:
    """Each key's comment in ``supervisor.toml.example``, by dotted key.

    A key takes the comment lines right above it; a key right below another
    key (no line between them) shares that key's comment. Commented-out
    sections (``# [kafka]``) and keys (``# workers = 4``) count as written.
    """
    from workflow_sdk.supervisor import config  # noqa: PLC0415

    known = {section: set(table) for section, table, _ in _config_sections()}
    known["kafka.config"] = set()
    known["kafka.config_env"] = set()
    section = ""
    pending: list[str] = []
    last: str | None = None
    out: dict[str, str] = {}
    header = re.compile(r"^#?\s*\[([^\]]+)\]\s*$")
    key_line = re.compile(r'^#?\s*"?([A-Za-z_][\w.-]*)"?\s*=')
    for raw in text.splitlines():
        line = raw.strip()
        match = header.match(line)
        if match:
            name = match.group(1)
            section = 'job_types."<type>"' if name.startswith("job_types.") else name
            pending, last = [], None
            continue
        if not line:
            pending, last = [], None
            continue
        match = key_line.match(line)
        if match and match.group(1) in known.get(section, ()):
            dotted = f"{section}.{match.group(1)}"
            if pending:
                out[dotted] = " ".join(pending)
            elif last is not None and last in out:
                out[dotted] = out[last]
            pending, last = [], dotted
            continue
        if line.startswith("#") and section:
            pending.append(line.lstrip("#").strip())
            last = None
    del config
    return out


def config_model() -> list[ConfigKey]:
    """Every key the configuration parser accepts, with what it knows of it."""
    from workflow_sdk.supervisor import config, reload  # noqa: PLC0415

    descriptions = example_descriptions(EXAMPLE_CONFIG.read_text())
    envs = {"engine.url": config.ENV_ENGINE_URL, "engine.token": config.ENV_ENGINE_TOKEN}
    keys: list[ConfigKey] = []
    for section, table, cls in _config_sections():
        top = section.split(".", 1)[0]
        for name, spec in table.items():
            restart = top in reload.RESTART_SECTIONS or (
                section == "supervisor" and name in reload.RESTART_KEYS
            )
            dotted = f"{section}.{name}"
            keys.append(
                ConfigKey(
                    section=section,
                    name=name,
                    kind=config._TYPE_NAMES[spec.kind],
                    default=_default(cls, name),
                    allowed=allowed_values(spec.kind, spec.check),
                    restart=restart,
                    description=descriptions.get(dotted, ""),
                    env=envs.get(dotted, ""),
                )
            )
    # Tables read by the parser's own code, not a _Spec.
    keys.append(
        ConfigKey(
            "supervisor",
            "env",
            "a table of strings",
            "{}",
            (),
            False,  # each worker a reload starts applies it again
            _SUPERVISOR_ENV_DOC,
        )
    )
    # The two librdkafka tables are read by the parser's own code, not a _Spec.
    for name, kind, description in (
        ("config", "a table of strings, numbers or booleans", _kafka_table_doc("config")),
        ("config_env", "a table of environment variable names", _kafka_table_doc("config_env")),
    ):
        keys.append(
            ConfigKey("kafka", name, kind, "{}", (), True, description),
        )
    return keys


_SUPERVISOR_ENV_DOC = (
    "Variables set for the fork server and every worker (not the supervisor itself), "
    'as `NAME = "value"` pairs: a proxy or a library setting your handlers need. The '
    "thread variables (`OMP_NUM_THREADS`...) come from `threads_per_worker` and cannot "
    "be set here."
)


def _kafka_table_doc(name: str) -> str:
    if name == "config":
        return (
            "Settings passed to the Kafka client (librdkafka), e.g. TLS and SASL: "
            '`"security.protocol" = "SASL_SSL"`. Booleans are passed as `true`/`false`. '
            '`"enable.ssl.certificate.verification" = false` or '
            '`"ssl.endpoint.identification.algorithm" = "none"` is accepted with a warning.'
        )
    return (
        "Secrets from the environment: librdkafka setting = environment variable "
        '(`"sasl.password" = "KAFKA_PASSWORD"`); a variable that is not set is an error '
        "naming the key. Workers never see these variables."
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_config(keys: Iterable[ConfigKey]) -> str:
    by_section: dict[str, list[ConfigKey]] = {}
    for key in keys:
        by_section.setdefault(key.section, []).append(key)
    out: list[str] = []
    for section, items in by_section.items():
        title = '[job_types."&lt;type&gt;"]' if section.startswith("job_types") else f"[{section}]"
        out.append(f"## `{title}`" if not section.startswith("job_types") else f"## {title}")
        out.append("")
        out.append("| key | type | default | allowed | on SIGHUP |")
        out.append("|---|---|---|---|---|")
        for key in items:
            allowed = "; ".join(_cell(a) for a in key.allowed) or "any"
            reload_ = "restart needed" if key.restart else "applies"
            out.append(
                f"| [`{key.name}`](#{key.anchor}) | {key.kind} | `{_cell(key.default)}` "
                f"| {allowed} | {reload_} |"
                if not key.default.startswith("computed")
                else f"| [`{key.name}`](#{key.anchor}) | {key.kind} | {_cell(key.default)} "
                f"| {allowed} | {reload_} |"
            )
        out.append("")
        for key in items:
            out.append(f"### `{key.dotted}` {{ #{key.anchor} }}")
            out.append("")
            out.append(key.description or "(no description in `supervisor.toml.example`)")
            out.append("")
            facts = [f"**Type** {key.kind}"]
            default = key.default if key.default.startswith("computed") else f"`{key.default}`"
            facts.append(f"**Default** {default}")
            if key.allowed:
                facts.append("**Allowed** " + "; ".join(key.allowed))
            facts.append("**SIGHUP** needs a restart" if key.restart else "**SIGHUP** applies it")
            if key.env:
                facts.append(f"**Environment** `${key.env}` overrides it")
            out.append(" · ".join(facts))
            out.append("")
    return "\n".join(out)


# -- metrics ---------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """One metric as ``/metrics`` shows it."""

    #: the name of its samples (counters end in ``_total``; a histogram's
    #: samples add ``_bucket``, ``_sum`` and ``_count``)
    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    #: ``sdk`` (every process: workflow_sdk.metrics), ``supervisor`` (the
    #: parent's collector), ``kafka`` (the parent's, with dispatch = "kafka")
    origin: str
    #: label -> the values the code can give it, where it lists them
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _exposed(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def _known_values() -> dict[tuple[str, str], tuple[str, ...]]:
    from workflow_sdk.metrics import metrics  # noqa: PLC0415
    from workflow_sdk.reporting import ReportStatus  # noqa: PLC0415
    from workflow_sdk.staleness import FINISHED_STATUSES  # noqa: PLC0415
    from workflow_sdk.supervisor.exposition.exporter import KAFKA_SKIP_REASONS  # noqa: PLC0415
    from workflow_sdk.supervisor.exposition.stats import RESTART_REASONS  # noqa: PLC0415

    return {
        ("workflow_supervisor_worker_restarts_total", "reason"): RESTART_REASONS,
        ("workflow_supervisor_kafka_records_skipped_total", "reason"): tuple(
            reason for reason, _ in KAFKA_SKIP_REASONS
        ),
        (metrics.JOBS_COMPLETED, "outcome"): typing.get_args(metrics.Outcome),
        (metrics.LEASE_RENEWALS, "result"): typing.get_args(metrics.RenewalResult),
        # jobcore.record_outcome: every report ending but these two is a give-up.
        (metrics.REPORTS_GIVEN_UP, "reason"): tuple(
            status.value
            for status in ReportStatus
            if status not in (ReportStatus.DELIVERED, ReportStatus.STALE)
        ),
        # staleness: instance_<its finished status>, instance_gone, step_<its status>.
        (metrics.STALE_JOBS, "reason"): (
            *sorted(f"instance_{status.lower()}" for status in FINISHED_STATUSES),
            "instance_gone",
            "step_<status>",
        ),
    }


def sdk_metrics() -> list[MetricInfo]:
    """``workflow_sdk.metrics.Metrics``, registered on a fresh registry."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415
    from prometheus_client.metrics import MetricWrapperBase  # noqa: PLC0415

    from workflow_sdk.metrics.metrics import Metrics  # noqa: PLC0415

    instance = Metrics(CollectorRegistry())
    instance.backlog_gauges()  # created on first use
    found: list[MetricInfo] = []
    collectors = list(vars(instance).values())
    for value in collectors:
        pair = value if isinstance(value, tuple) else (value,)
        for collector in pair:
            if not isinstance(collector, MetricWrapperBase):
                continue
            (family,) = collector.describe()
            labels = tuple(getattr(collector, "_labelnames", ()))
            found.append(
                MetricInfo(
                    _exposed(family.name, family.type),
                    family.type,
                    labels,
                    family.documentation,
                    "sdk",
                )
            )
    return found


def supervisor_metrics() -> list[MetricInfo]:
    """The supervisor's ``PoolCollector``, collected in poll and in Kafka mode
    with one stub worker (this process) so that every labelled family has a
    sample to read its labels from."""
    import psutil  # noqa: PLC0415

    from workflow_sdk.kafka.stats import SourceStats  # noqa: PLC0415
    from workflow_sdk.supervisor.exposition.exporter import (  # noqa: PLC0415
        PoolCollector,
        WorkerView,
    )
    from workflow_sdk.supervisor.exposition.stats import SupervisorStats  # noqa: PLC0415

    def workers() -> tuple[WorkerView, ...]:
        return (WorkerView(slot=0, pid=os.getpid(), busy=False, ps=psutil.Process()),)

    def collect(kafka: bool) -> dict[str, MetricInfo]:
        collector = PoolCollector(SupervisorStats(), workers, kafka=SourceStats if kafka else None)
        out: dict[str, MetricInfo] = {}
        for family in collector.collect():
            labels: dict[str, None] = {}
            for sample in family.samples:
                labels.update(dict.fromkeys(sample.labels))
            name = _exposed(family.name, family.type)
            out[name] = MetricInfo(name, family.type, tuple(labels), family.documentation, "")
        return out

    poll = collect(kafka=False)
    kafka = collect(kafka=True)
    return [
        dataclasses.replace(info, origin="supervisor" if name in poll else "kafka")
        for name, info in kafka.items()
    ]


def metrics_model() -> list[MetricInfo]:
    values = _known_values()
    return [
        dataclasses.replace(
            info,
            values={
                label: values[(info.name, label)]
                for label in info.labels
                if (info.name, label) in values
            },
        )
        for info in [*sdk_metrics(), *supervisor_metrics()]
    ]


def render_metrics(metrics: Iterable[MetricInfo], origin: str) -> str:
    """A definition list: the sample name, then its type, labels and help."""
    out: list[str] = []
    for info in sorted((m for m in metrics if m.origin == origin), key=lambda m: m.name):
        facts = [info.kind]
        for label in info.labels:
            values = info.values.get(label)
            shown = f"label `{label}`"
            if values:
                shown += " (" + ", ".join(f"`{v}`" for v in values) + ")"
            facts.append(shown)
        out.append(f"`{info.name}`")
        out.append(f":   {' · '.join(facts)}: {info.help}")
        out.append("")
    return "\n".join(out)


# -- the command line --------------------------------------------------------------


@dataclass(frozen=True)
class CliOption:
    flags: tuple[str, ...]
    metavar: str
    help: str
    default: str
    required: bool


@dataclass(frozen=True)
class CliCommand:
    #: as typed: ``rochallor-supervisor run``
    name: str
    usage: str
    description: str
    options: tuple[CliOption, ...]
    epilog: str
    #: subcommands listed by this command (name, help)
    subcommands: tuple[tuple[str, str], ...] = ()


def _option(action: argparse.Action) -> CliOption | None:
    if not action.option_strings:
        return None
    metavar = ""
    if action.nargs != 0:
        metavar = str(action.metavar or action.dest.upper())
        if action.choices:
            metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    default = ""
    if action.default not in (None, argparse.SUPPRESS, [], False) and action.nargs != 0:
        default = str(action.default)
    help_text = (action.help or "") % {"default": action.default, "prog": ""}
    return CliOption(
        tuple(action.option_strings), metavar, help_text, default, bool(action.required)
    )


def _command(name: str, parser: argparse.ArgumentParser) -> CliCommand:
    options = tuple(o for o in map(_option, parser._actions) if o is not None)
    subcommands: list[tuple[str, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            subcommands.extend((sub, helps.get(sub, "")) for sub in action.choices)
    return CliCommand(
        name,
        parser.format_usage().strip().removeprefix("usage: "),
        parser.description or "",
        options,
        parser.epilog or "",
        tuple(subcommands),
    )


def cli_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command line the package installs, by how it is typed."""
    from workflow_sdk.supervisor import cli  # noqa: PLC0415
    from workflow_sdk.testing.__main__ import build_parser  # noqa: PLC0415

    top = cli._parser()
    parsers = {cli.PROG: top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, parser in action.choices.items():
                parsers[f"{cli.PROG} {sub}"] = parser
    # local-engine hands its arguments to the local engine's own parser.
    parsers[f"{cli.PROG} local-engine"] = build_parser(f"{cli.PROG} local-engine")
    return parsers


def cli_model() -> list[CliCommand]:
    return [_command(name, parser) for name, parser in cli_parsers().items()]


def render_cli(commands: Iterable[CliCommand]) -> str:
    out: list[str] = []
    for command in commands:
        out.append(f"## `{command.name}`")
        out.append("")
        if command.description:
            out.append(command.description)
            out.append("")
        out.append("```text")
        out.append(command.usage)
        out.append("```")
        out.append("")
        if command.subcommands:
            out.append("| command | what it does |")
            out.append("|---|---|")
            for sub, text in command.subcommands:
                anchor = re.sub(r"[^a-z0-9]+", "-", f"{command.name} {sub}".lower()).strip("-")
                out.append(f"| [`{sub}`](#{anchor}) | {_cell(text)} |")
            out.append("")
        options = [o for o in command.options if o.flags != ("-h", "--help")]
        if options:
            out.append("| option | argument | default | what it does |")
            out.append("|---|---|---|---|")
            for option in options:
                flags = ", ".join(f"`{f}`" for f in option.flags)
                argument = f"`{option.metavar}`" if option.metavar else ""
                if option.required:
                    argument += " (required)"
                default = f"`{option.default}`" if option.default else ""
                out.append(f"| {flags} | {argument} | {default} | {_cell(option.help)} |")
            out.append("")
        if command.epilog:
            out.append("`--help` goes on:")
            out.append("")
            out.append("```text")
            out.append(command.epilog.rstrip())
            out.append("```")
            out.append("")
    return "\n".join(out)


# -- signals and exit statuses ---------------------------------------------------------


def render_signals() -> str:
    from workflow_sdk.supervisor.exposition import manual  # noqa: PLC0415

    out = ["| signal | effect |", "|---|---|"]
    for row in manual.SIGNALS:
        names = ", ".join(f"`SIG{n}`" for n in row.names)
        if row.repeat:
            names = f"second {names}"
        out.append(f"| {names} | {_cell(row.details)} |")
    return "\n".join(out) + "\n"


def children_signals() -> list[tuple[str, str, str]]:
    """(signal, fork server, worker) for each signal the supervisor handles."""
    from workflow_sdk.supervisor.loop.signals import HANDLED_SIGNALS  # noqa: PLC0415
    from workflow_sdk.supervisor.worker.sigpolicy import PARENT_ONLY  # noqa: PLC0415

    rows = []
    for signum in HANDLED_SIGNALS:
        name = signal.Signals(signum).name
        ignored_by_worker = signum in PARENT_ONLY
        fork_server = "ignored"  # ignore_in_fork_server: PARENT_ONLY and SIGTERM
        worker = (
            "ignored"
            if ignored_by_worker
            else "stops the running job (`WorkerShutdown`: the job is failed retryable)"
        )
        rows.append((name, fork_server, worker))
    return rows


def render_children_signals() -> str:
    out = ["| signal sent to the process group | fork server | worker |", "|---|---|---|"]
    for name, fork_server, worker in children_signals():
        out.append(f"| `{name}` | {fork_server} | {worker} |")
    return "\n".join(out) + "\n"


def render_exit_statuses() -> str:
    from workflow_sdk.supervisor.exposition import manual  # noqa: PLC0415

    out = [
        "| status | constant | `run` | `check` | `status`, `pause`, `resume` |",
        "|---|---|---|---|---|",
    ]
    for status in manual.EXIT_STATUSES:
        out.append(
            f"| {status.code} | `{status.constant}` | {_cell(status.run) or '—'} "
            f"| {_cell(status.check) or '—'} | {_cell(status.remote) or '—'} |"
        )
    return "\n".join(out) + "\n"


# -- all of it -------------------------------------------------------------------------

#: What ``<!-- reference: NAME -->`` in a page is replaced with.
SECTIONS: dict[str, Callable[[], str]] = {
    "config": lambda: render_config(config_model()),
    "cli": lambda: render_cli(cli_model()),
    "signals": render_signals,
    "children-signals": render_children_signals,
    "exit-statuses": render_exit_statuses,
    "metrics-sdk": lambda: render_metrics(metrics_model(), "sdk"),
    "metrics-supervisor": lambda: render_metrics(metrics_model(), "supervisor"),
    "metrics-kafka": lambda: render_metrics(metrics_model(), "kafka"),
}

MARKER = re.compile(r"<!-- reference: ([\w-]+) -->")


def expand(markdown: str, where: str) -> str:
    """``markdown`` with every reference marker replaced; an unknown one is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in SECTIONS:
            raise KeyError(
                f"{where}: unknown reference section {name!r} (known: {sorted(SECTIONS)})"
            )
        return SECTIONS[name]()

    return MARKER.sub(replace, markdown)
