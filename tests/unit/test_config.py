"""The supervisor's configuration file: defaults, validation messages, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from workflow_sdk.cpus import usable_cpus
from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.config import (
    DEFAULT_JOB_TIMEOUT,
    JobTypeConfig,
    SupervisorConfig,
    default_worker_count,
    load_config,
    parse_config,
    unhandled_job_types,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(text)
    return path


def test_example_file_is_valid_and_matches_defaults() -> None:
    config = load_config(REPO / "supervisor.toml.example", environ={})
    defaults = SupervisorConfig()
    assert config.engine == defaults.engine
    assert config.logging == defaults.logging
    assert config.supervisor.handlers == ("myapp.handlers:registry",)
    for name in ("poll_interval", "graceful_timeout", "job_timeout", "report_deadline"):
        assert getattr(config.supervisor, name) == getattr(defaults.supervisor, name), name


def test_every_key_of_the_dataclasses_is_documented_in_the_example() -> None:
    text = (REPO / "supervisor.toml.example").read_text()
    defaults = SupervisorConfig()
    sections = (defaults.engine, defaults.supervisor, defaults.metrics, defaults.logging)
    for section in (*sections, defaults.kafka):
        for f in dataclasses.fields(section):
            if section is defaults.kafka and f.name == "config":
                assert "[kafka.config]" in text and "[kafka.config_env]" in text
                continue
            if section is defaults.supervisor and f.name == "env":
                assert "[supervisor.env]" in text
                continue
            assert f"{f.name} =" in text or f"# {f.name} =" in text, f.name


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[supervisor]\nhandlers = ["a.b"]\n'), environ={})
    assert config.supervisor.workers == default_worker_count()
    assert config.supervisor.worker_id
    assert config.job_timeout("anything") == DEFAULT_JOB_TIMEOUT
    assert config.source.endswith("supervisor.toml")


def test_job_type_sections(tmp_path: Path) -> None:
    text = (
        '[supervisor]\nhandlers = ["a"]\njob_timeout = 5\n[job_types."render-pdf"]\ntimeout = 0\n'
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.job_timeout("render-pdf") == 0.0
    assert config.job_timeout("other") == 5.0


def test_a_job_type_section_without_timeout_keeps_the_pools_job_timeout(tmp_path: Path) -> None:
    """Pins: a section without ``timeout`` (empty, or setting another key such
    as ``concurrency``) gave its type the built-in hour instead of the file's
    ``job_timeout``."""
    text = (
        '[supervisor]\nhandlers = ["a"]\njob_timeout = 5\n[job_types."empty"]\n'
        '[job_types."gpu"]\nconcurrency = 1\n'
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.job_timeout("empty") == 5.0
    assert config.job_timeout("gpu") == 5.0


def test_job_type_limits(tmp_path: Path) -> None:
    text = (
        '[supervisor]\nhandlers = ["a"]\nmax_memory_mb = 500\n'
        '[job_types."big-model"]\nconcurrency = 1\nmax_memory_mb = 5000\n'
        "max_memory_hard_mb = 6000\nthreads = 4\nretry_delay = 2.5\n"
        '[job_types."light"]\ntimeout = 3\n'
    )
    config = load_config(write(tmp_path, text), environ={})
    big, light = config.job_types["big-model"], config.job_types["light"]
    assert (big.concurrency, big.max_memory_mb, big.max_memory_hard_mb) == (1, 5000.0, 6000.0)
    assert (big.threads, big.retry_delay, big.timeout) == (4, 2.5, None)
    assert (light.concurrency, light.max_memory_mb, light.threads, light.retry_delay) == (
        None,
        None,
        None,
        0.0,
    )


def test_every_job_type_key_is_documented_in_the_example() -> None:
    text = (REPO / "supervisor.toml.example").read_text()
    for f in dataclasses.fields(JobTypeConfig):
        assert f"# {f.name} =" in text or f"{f.name} =" in text, f.name


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[supervisor]\nhandlers = ["a"]\n'), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.supervisor.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.job_types["x"] = None  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[supervisor]\nworkers = 0\n", "supervisor.toml: supervisor.workers: must be >= 1, got 0"),
        ('[supervisor]\nworkers = "4"\n', "supervisor.workers: must be an integer, got '4'"),
        ("[supervisor]\nworkers = true\n", "supervisor.workers: must be an integer, got True"),
        ("[supervisor]\npoll_interval = 0\n", "supervisor.poll_interval: must be > 0"),
        ("[supervisor]\nwokers = 2\n", "supervisor.wokers: unknown key"),
        ("[engine]\nurl = 'ftp://x'\n", "engine.url: must be an http:// or https:// URL"),
        ("[engine]\ntimeout = -1\n", "engine.timeout: must be > 0, got -1.0"),
        ("[logging]\nlevel = 'LOUD'\n", "logging.level: must be one of DEBUG"),
        ("[supervisor]\nhandlers = 'a.b'\n", "supervisor.handlers: must be a list of strings"),
        ("[supervisor]\nhandlers = ['not a module']\n", "supervisor.handlers: 'not a module'"),
        ('[job_types."x"]\ntimeout = -2\n', 'job_types."x".timeout: must be >= 0'),
        ('[job_types."x"]\ntimout = 2\n', 'job_types."x".timout: unknown key'),
        ('[job_types."x"]\nconcurrency = 0\n', 'job_types."x".concurrency: must be >= 1, got 0'),
        ('[job_types."x"]\nconcurrency = 1.5\n', 'job_types."x".concurrency: must be an integer'),
        ('[job_types."x"]\nthreads = 0\n', 'job_types."x".threads: must be >= 1, got 0'),
        ('[job_types."x"]\nthreads = "4"\n', 'job_types."x".threads: must be an integer'),
        ('[job_types."x"]\nretry_delay = -1\n', 'job_types."x".retry_delay: must be >= 0'),
        ('[job_types."x"]\nretry_delay = true\n', 'job_types."x".retry_delay: must be a number'),
        ('[job_types."x"]\nmax_memory_mb = -5\n', 'job_types."x".max_memory_mb: must be >= 0'),
        (
            '[job_types."x"]\nmax_memory_hard_mb = -1\n',
            'job_types."x".max_memory_hard_mb: must be >= 0',
        ),
        (
            '[job_types."x"]\nmax_memory_mb = 500\nmax_memory_hard_mb = 400\n',
            'job_types."x".max_memory_hard_mb: must be >= max_memory_mb (500), got 400',
        ),
        (
            '[supervisor]\nmax_memory_mb = 500\n[job_types."x"]\nmax_memory_hard_mb = 400\n',
            'job_types."x".max_memory_hard_mb: must be >= max_memory_mb (the pool\'s) (500), '
            "got 400",
        ),
        ("[metrix]\n", "supervisor.toml: metrix: unknown section"),
        ("engine = 3\n", "supervisor.toml: engine: must be a table"),
        ("[engine]\ntoken_env = 'NOPE_NOT_SET'\n", "engine.token_env: environment variable"),
        ("[metrics]\nport = 70000\n", "metrics.port: must be 0..65535, got 70000"),
        ("[supervisor]\nmax_jobs_jitter = 2\n", "supervisor.max_jobs_jitter: must be 0..1"),
        (
            "[supervisor]\nmax_memory_mb = 500\nmax_memory_hard_mb = 400\n",
            "supervisor.max_memory_hard_mb: must be >= max_memory_mb (500), got 400",
        ),
    ],
)
def test_bad_values_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "supervisor.toml"))


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = "[supervisor]\nworkers = 0\npoll_interval = -1\n[engine]\nurl = 'x'\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    lines = str(info.value).splitlines()
    # The three bad values and the missing handlers key.
    assert len(lines) == 4
    assert any("supervisor.handlers: missing" in line for line in lines)
    assert all(line.startswith(str(tmp_path)) for line in lines)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"supervisor\.toml: invalid TOML"):
        load_config(write(tmp_path, "[supervisor\n"), environ={})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", environ={})


def test_environment_overrides_url_and_token(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[engine]\nurl = "http://file:1"\ntoken = "from-file"\n[supervisor]\nhandlers = ["a"]\n',
    )
    env = {"ROCHALLOR_ENGINE_URL": "http://env:2", "ROCHALLOR_ENGINE_TOKEN": "secret"}
    config = load_config(path, environ=env)
    assert config.engine.url == "http://env:2"
    assert config.engine.token == "secret"
    with pytest.raises(ConfigError, match=r"\$ROCHALLOR_ENGINE_URL"):
        load_config(path, environ={"ROCHALLOR_ENGINE_URL": "nope"})


def test_token_env_names_a_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[engine]\ntoken_env = "MY_TOKEN"\n[supervisor]\nhandlers = ["a"]\n')
    assert load_config(path, environ={"MY_TOKEN": "t0k"}).engine.token == "t0k"


def test_memory_hard_limit_defaults_to_a_margin_above_the_soft_one() -> None:
    config = parse_config({"supervisor": {"max_memory_mb": 400}}, environ={})
    assert config.supervisor.memory_hard_limit_mb == 500
    assert config.metrics.port is None, "no metrics server unless asked"


def test_parse_config_from_code() -> None:
    config = parse_config({"supervisor": {"workers": 2, "handlers": ["x"]}}, environ={})
    assert config.supervisor.workers == 2
    assert config.source == "<dict>"
    with pytest.raises(ConfigError, match=r"<dict>: supervisor\.workers"):
        parse_config({"supervisor": {"workers": -1}}, environ={})


@pytest.mark.parametrize(
    "text", ["[supervisor]\nworkers = 2\n", "", "[supervisor]\nhandlers = []\n"]
)
def test_a_file_without_handlers_is_a_problem_naming_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{tmp_path / 'supervisor.toml'}: supervisor.handlers: missing")


def test_handlers_may_come_from_code_instead() -> None:
    # Supervisor(config, registry=...) needs no handlers key.
    assert parse_config({"supervisor": {"workers": 1}}, environ={}).supervisor.handlers == ()
    with pytest.raises(ConfigError, match=r"supervisor\.handlers: missing"):
        parse_config({"supervisor": {"workers": 1}}, environ={}, require_handlers=True)


def test_handlers_key_optional_for_a_file_read_from_code(tmp_path: Path) -> None:
    path = write(tmp_path, "[supervisor]\nworkers = 1\n")
    config = load_config(path, environ={}, require_handlers=False)
    assert config.supervisor.handlers == ()


def test_job_type_sections_without_a_handler_are_named() -> None:
    config = parse_config(
        {"supervisor": {"handlers": ["a"]}, "job_types": {"x": {}, "y": {}}}, environ={}
    )
    (warning,) = unhandled_job_types(config, ["y", "z"])
    assert warning.startswith('[job_types."x"] has no handler')


def test_kafka_section(tmp_path: Path) -> None:
    text = (
        '[engine]\ndispatch = "kafka"\n[supervisor]\nhandlers = ["a"]\n'
        '[kafka]\nbrokers = ["k1:9092", "k2:9092"]\ngroup = "fleet.{job_type}"\n'
        '[kafka.config]\n"security.protocol" = "SASL_SSL"\n"enable.idempotence" = true\n'
        '[kafka.config_env]\n"sasl.password" = "KAFKA_SECRET"\n'
    )
    config = load_config(write(tmp_path, text), environ={"KAFKA_SECRET": "s3cret"})
    assert config.engine.dispatch == "kafka"
    assert config.kafka.brokers == ("k1:9092", "k2:9092")
    assert config.kafka.group_for("render") == "fleet.render"
    assert dict(config.kafka.config) == {
        "security.protocol": "SASL_SSL",
        "enable.idempotence": "true",
        "sasl.password": "s3cret",
    }


@pytest.mark.parametrize(
    "brokers", ['"k1:9092,k2:9092"', '" k1:9092 , k2:9092 "', '["k1:9092", "k2:9092"]']
)
def test_kafka_brokers_take_the_comma_separated_string_kafka_users_write(
    tmp_path: Path, brokers: str
) -> None:
    text = (
        '[engine]\ndispatch = "kafka"\n[supervisor]\nhandlers = ["a"]\n'
        f"[kafka]\nbrokers = {brokers}\n"
    )
    assert load_config(write(tmp_path, text)).kafka.brokers == ("k1:9092", "k2:9092")


@pytest.mark.parametrize("brokers", ['""', '"k1:9092,,k2:9092"', "[]", '["k1:9092", ""]', "9092"])
def test_kafka_brokers_that_name_no_host_are_refused(tmp_path: Path, brokers: str) -> None:
    text = (
        '[engine]\ndispatch = "kafka"\n[supervisor]\nhandlers = ["a"]\n'
        f"[kafka]\nbrokers = {brokers}\n"
    )
    with pytest.raises(ConfigError, match=r"kafka\.brokers"):
        load_config(write(tmp_path, text))


def test_kafka_dispatch_needs_brokers_and_set_secrets(tmp_path: Path) -> None:
    text = (
        '[engine]\ndispatch = "kafka"\n[supervisor]\nhandlers = ["a"]\n'
        '[kafka.config_env]\n"sasl.password" = "NOT_SET_ANYWHERE"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    message = str(info.value)
    assert "kafka.brokers: missing" in message
    assert "kafka.config_env.sasl.password: environment variable NOT_SET_ANYWHERE is not set" in (
        message
    )


# -- issue 18: CPU-heavy handlers (threads, CPUs, hooks, memory) --------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("threads_per_worker = 0", "supervisor.threads_per_worker: must be >= 1, got 0"),
        ("threads_per_worker = 1.5", "supervisor.threads_per_worker: must be an integer"),
        ('cpu_affinity = "yes"', "supervisor.cpu_affinity: must be true or false, got 'yes'"),
        ("memory_warning_mb = -1", "supervisor.memory_warning_mb: must be >= 0, got -1.0"),
        ('hooks = "my app.hooks"', "supervisor.hooks: 'my app.hooks' is not a module name"),
        ("hooks = 3", "supervisor.hooks: must be a string, got 3"),
        ("parent_hooks = true", "supervisor.parent_hooks: needs supervisor.hooks"),
        ("env = 3", 'supervisor.env: must be a table of NAME = "value"'),
        ("[supervisor.env]\nMODEL_DIR = 3", "supervisor.env.MODEL_DIR: must be a string, got 3"),
        (
            '[supervisor.env]\nOMP_NUM_THREADS = "4"',
            "supervisor.env.OMP_NUM_THREADS: is set by supervisor.threads_per_worker",
        ),
        (
            '[supervisor.env]\n"A=B" = "x"',
            "supervisor.env.A=B: is not an environment variable name",
        ),
        (
            '[supervisor.env]\nROCHALLOR_ENGINE_TOKEN = "x"',
            "supervisor.env.ROCHALLOR_ENGINE_TOKEN: is a secret this configuration reads",
        ),
    ],
)
def test_the_worker_setup_keys_are_checked_naming_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, f'[supervisor]\nhandlers = ["a"]\n{text}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert f"{path}: {expected}" in str(info.value)


def test_the_worker_setup_keys_and_their_defaults(tmp_path: Path) -> None:
    defaults = load_config(write(tmp_path, '[supervisor]\nhandlers = ["a"]\n'), environ={})
    settings = defaults.supervisor
    assert settings.threads_per_worker == 1
    assert (settings.cpu_affinity, settings.memory_warning_mb) == (False, 0.0)
    assert (settings.hooks, settings.parent_hooks, dict(settings.env)) == ("", False, {})
    text = (
        '[supervisor]\nhandlers = ["a"]\nthreads_per_worker = 2\ncpu_affinity = true\n'
        'memory_warning_mb = 800\nhooks = "app.hooks"\nparent_hooks = true\n'
        '[supervisor.env]\nMODEL_DIR = "/srv/models"\nEMPTY = ""\n'
    )
    settings = load_config(write(tmp_path, text), environ={}).supervisor
    assert settings.threads_per_worker == 2 and settings.cpu_affinity
    assert settings.memory_warning_mb == 800.0
    assert (settings.hooks, settings.parent_hooks) == ("app.hooks", True)
    assert dict(settings.env) == {"MODEL_DIR": "/srv/models", "EMPTY": ""}
    with pytest.raises(TypeError):
        settings.env["X"] = "y"  # type: ignore[index]


def test_the_worker_count_says_where_it_came_from(tmp_path: Path) -> None:
    """Not set: the CPUs this process may use (affinity and cgroup quota),
    with the reason for the start-up line; set: the file's, no reason."""
    chosen = load_config(write(tmp_path, '[supervisor]\nhandlers = ["a"]\n'), environ={})
    cpus = usable_cpus()
    assert chosen.supervisor.workers == cpus.count
    assert chosen.workers_from == cpus.describe()
    text = '[supervisor]\nhandlers = ["a"]\nworkers = 7\n'
    assert load_config(write(tmp_path, text), environ={}).workers_from == ""
