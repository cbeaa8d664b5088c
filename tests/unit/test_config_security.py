"""Config-time security verdicts (issue 21): tokens, TLS, file modes, secrets' names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor import security
from workflow_sdk.supervisor.config import ENV_ENGINE_TOKEN, load_config, parse_config

SECRET = "s3cr3t-TOKEN"
HANDLERS = '[supervisor]\nhandlers = ["a.b"]\n'


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


# -- item 2: a token that cannot go into a header -------------------------------


@pytest.mark.parametrize("bad", [f"{SECRET}\n", f"{SECRET}\r", f"{SECRET} x", f"\t{SECRET}"])
def test_a_token_with_a_line_break_is_refused_naming_the_key_not_the_value(
    tmp_path: Path, bad: str
) -> None:
    """Sequence: engine.token ends with CR or LF (or holds a space or a tab):
    the file is refused at load, naming engine.token; the token is not shown."""
    text = f'[engine]\ntoken = "{bad.encode("unicode_escape").decode()}"\n{HANDLERS}'
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), environ={})
    message = str(raised.value)
    assert "supervisor.toml: engine.token: must be printable ASCII" in message
    assert SECRET not in message


def test_a_token_from_the_environment_with_a_newline_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({}, "sv.toml", environ={ENV_ENGINE_TOKEN: f"{SECRET}\r\n"})
    assert f"sv.toml: ${ENV_ENGINE_TOKEN}: must be printable ASCII" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_token_from_token_env_with_a_newline_is_refused_naming_the_key() -> None:
    data = {"engine": {"token_env": "MY_TOKEN"}}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "sv.toml", environ={"MY_TOKEN": f"{SECRET}\n"})
    assert "sv.toml: engine.token_env ($MY_TOKEN): must be printable ASCII" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_token_of_the_wrong_type_is_not_shown() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"engine": {"token": 987654321}}, "sv.toml", {})
    assert "sv.toml: engine.token: must be a string, got a value (not shown)" in str(raised.value)
    assert "987654321" not in str(raised.value)


def test_a_good_token_passes() -> None:
    config = parse_config({"engine": {"token": "abc.DEF-123_~+/="}}, environ={})
    assert config.engine.token == "abc.DEF-123_~+/="


# -- item 6: credentials in the URL are not echoed ---------------------------------


def test_a_bad_url_with_credentials_is_named_without_them() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"engine": {"url": "ftp://user:pw-SECRET@engine:8080"}}, environ={})
    assert "engine.url: must be an http:// or https:// URL" in str(raised.value)
    assert "pw-SECRET" not in str(raised.value)
    assert "ftp://***@engine:8080" in str(raised.value)


# -- item 4: silent TLS weakening -------------------------------------------------------


def test_verify_tls_false_on_https_is_a_warning_with_file_and_key() -> None:
    """Sequence: verify_tls = false on an https:// engine: accepted, and the
    configuration carries one warning naming the file and engine.verify_tls."""
    config = parse_config(
        {"engine": {"url": "https://engine.example:8443", "verify_tls": False}}, "sv.toml", {}
    )
    (warning,) = config.warnings
    assert warning.startswith("sv.toml: engine.verify_tls: false: the engine's certificate")


def test_verify_tls_false_with_a_ca_bundle_or_on_http_says_nothing() -> None:
    https = {"url": "https://e:1", "verify_tls": False, "ca_bundle": "/etc/ca.pem"}
    assert parse_config({"engine": https}, environ={}).warnings == ()
    http = {"url": "http://127.0.0.1:1", "verify_tls": False}
    assert parse_config({"engine": http}, environ={}).warnings == ()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://engine.internal:8080", True),
        ("http://10.0.0.5:8080", True),
        ("http://127.0.0.1:8080", False),
        ("http://[::1]:8080", False),
        ("http://localhost:8080", False),
        ("https://engine.internal:8443", False),
    ],
)
def test_a_token_over_plain_http_to_another_host_is_a_warning(url: str, warned: bool) -> None:
    config = parse_config({"engine": {"url": url}}, "sv.toml", {ENV_ENGINE_TOKEN: SECRET})
    expected = [f"sv.toml: ${ENV_ENGINE_TOKEN}: the token is sent in clear over http://"]
    assert [w[: len(expected[0])] for w in config.warnings] == (expected if warned else [])
    assert all(SECRET not in w for w in config.warnings)


def test_kafka_certificate_checks_turned_off_are_a_warning() -> None:
    data = {
        "engine": {"dispatch": "kafka"},
        "kafka": {
            "brokers": ["k:9093"],
            "config": {"enable.ssl.certificate.verification": False},
            "config_env": {"ssl.endpoint.identification.algorithm": "ALGO"},
        },
    }
    config = parse_config(data, "sv.toml", {"ALGO": "none"})
    assert sorted(w.split(":")[1].strip() for w in config.warnings) == [
        "kafka.config.enable.ssl.certificate.verification",
        "kafka.config.ssl.endpoint.identification.algorithm",
    ]


# -- item 8: the file's own mode -----------------------------------------------------------


def test_a_world_writable_config_file_is_refused(tmp_path: Path) -> None:
    """Sequence: the file is mode 0666 (it names modules to import): load_config
    refuses it, naming the file and the mode."""
    path = write(tmp_path, HANDLERS, 0o666)
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert f"{path}: file mode 0666: every user may change this file" in str(raised.value)


def test_a_world_writable_file_is_refused_with_its_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[supervisor]\nworkers = 0\n", 0o646)
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert "file mode 0646" in str(raised.value)
    assert "supervisor.workers: must be >= 1" in str(raised.value)


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_token_in_a_file_others_may_read_is_a_warning(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    path = write(tmp_path, f'[engine]\ntoken = "{SECRET}"\n{HANDLERS}', mode)
    config = load_config(path, environ={})
    found = [w for w in config.warnings if "file mode" in w]
    assert bool(found) is warned
    if warned:
        assert found[0].startswith(f"{path}: engine.token: file mode {mode:04o} lets its group")
        assert SECRET not in found[0]


def test_a_kafka_password_in_a_readable_file_is_a_warning(tmp_path: Path) -> None:
    text = f'{HANDLERS}[kafka.config]\n"sasl.password" = "{SECRET}"\n"client.rack" = "r1"\n'
    config = load_config(write(tmp_path, text, 0o604), environ={})
    (warning,) = config.warnings
    assert "kafka.config.sasl.password: file mode 0604 lets its group and every user" in warning


def test_a_readable_file_without_secrets_says_nothing(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, HANDLERS, 0o644), environ={}).warnings == ()


# -- item 7: the names of the variables secrets came from ------------------------------------


def test_the_configuration_names_the_variables_that_held_secrets() -> None:
    data = {
        "engine": {"token_env": "MY_TOKEN"},
        "kafka": {"config_env": {"sasl.password": "KAFKA_PW", "sasl.username": "KAFKA_USER"}},
    }
    env = {"MY_TOKEN": "t", "KAFKA_PW": "p", "KAFKA_USER": "u"}
    config = parse_config(data, environ=env)
    assert set(config.secret_env) == {ENV_ENGINE_TOKEN, "MY_TOKEN", "KAFKA_PW", "KAFKA_USER"}


# -- the verdicts themselves ---------------------------------------------------------------


def test_token_problem() -> None:
    assert security.token_problem("abc") is None
    assert security.token_problem("") == "must not be empty"
    assert "not shown" in (security.token_problem("a\n") or "")
    assert security.token_problem("caf\u00e9") is not None


def test_is_loopback() -> None:
    assert security.is_loopback("127.0.0.2")
    assert security.is_loopback("::1")
    assert security.is_loopback("LOCALHOST")
    assert not security.is_loopback("127.example.com")
    assert not security.is_loopback(None)


def test_file_mode_verdict() -> None:
    assert security.file_mode_verdict(0o100600, ["engine.token"]) == security.FileModeVerdict(
        None, None
    )
    verdict = security.file_mode_verdict(0o100666, [])
    assert verdict.problem is not None and verdict.warning is None
    assert security.file_mode_verdict(0o100640, ["engine.token"]).warning is not None


def test_the_example_file_is_accepted_at_its_documented_mode(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "supervisor.toml.example"
    path = write(tmp_path, example.read_text(), 0o640)
    assert load_config(path, environ={}).warnings == ()
    assert os.stat(path).st_mode & 0o777 == 0o640
