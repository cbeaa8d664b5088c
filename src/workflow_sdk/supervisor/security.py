"""Configuration choices that weaken security, each judged by a small verdict.

The configuration module asks these while it reads a file, so ``run``
(one WARNING each at start-up) and ``check`` (printed with the file and the
key) say the same thing:

- ``token_problem``: a bearer token that cannot go into a header as it is
  (a trailing line break from ``$(cat file)`` is the usual one). The value
  is never part of the text.
- ``tls_warnings``: TLS verification turned off, for the engine or Kafka,
  and a token sent in clear to a host that is not this machine.
- ``file_mode_verdict``: a configuration file others may change (it names
  the modules the supervisor imports: an error) or read while it holds a
  secret (a warning).

Nothing here reads the environment, opens a file or logs.
"""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: librdkafka settings that turn certificate checks off, and the value that does.
KAFKA_TLS_OFF = {
    "enable.ssl.certificate.verification": "false",
    "ssl.endpoint.identification.algorithm": "none",
}
#: Words in a [kafka.config] key that say its value is a secret.
_SECRET_WORDS = ("password", "secret", "token", "key.pem")


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be sent as ``Authorization: Bearer <token>``, or None.

    Printable ASCII without spaces: a bearer token never has more (RFC 6750),
    and a line break would split the request or, refused by the HTTP
    library, be printed with the header in its error message.
    """
    if token and all("!" <= c <= "~" for c in token):
        return None
    if not token:
        return "must not be empty"
    return (
        "must be printable ASCII without spaces or line breaks (a trailing newline "
        "from a file is the usual cause); the value is not shown"
    )


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Finding:
    """One verdict: the dotted key it is about, and what to say."""

    key: str
    text: str


def tls_warnings(
    *,
    url: str,
    token: str | None,
    verify_tls: bool,
    ca_bundle: str | None,
    dispatch: str,
    kafka_config: Mapping[str, str],
    token_key: str = "engine.token",
) -> list[Finding]:
    """What of the engine's and Kafka's settings weakens their transport."""
    found: list[Finding] = []
    parts = urlsplit(url)
    if parts.scheme == "https" and not verify_tls and not ca_bundle:
        found.append(
            Finding(
                "engine.verify_tls",
                "false: the engine's certificate is not checked, so anyone on the network "
                "path can pose as the engine and read the token and every job (set "
                "ca_bundle for a private CA instead)",
            )
        )
    if token and parts.scheme == "http" and not is_loopback(parts.hostname):
        found.append(
            Finding(
                token_key,
                f"the token is sent in clear over http:// to {parts.hostname}, which is not "
                "this machine: use https://",
            )
        )
    if dispatch == "kafka":
        for key, off in KAFKA_TLS_OFF.items():
            if str(kafka_config.get(key, "")).strip().lower() == off:
                found.append(
                    Finding(
                        f"kafka.config.{key}",
                        f"{off}: the brokers' certificates are not checked, so anyone on the "
                        "network path can pose as a broker",
                    )
                )
    return found


def secret_keys(data: Mapping[str, object]) -> list[str]:
    """The dotted keys of a parsed file that hold secrets in the file itself."""
    keys: list[str] = []
    engine = data.get("engine")
    if isinstance(engine, Mapping) and "token" in engine:
        keys.append("engine.token")
    kafka = data.get("kafka")
    config = kafka.get("config") if isinstance(kafka, Mapping) else None
    if isinstance(config, Mapping):
        keys.extend(
            f"kafka.config.{key}"
            for key in config
            if any(word in str(key).lower() for word in _SECRET_WORDS)
        )
    return keys


@dataclass(frozen=True)
class FileModeVerdict:
    #: the file must not be used (others may change it)
    problem: str | None
    #: it may be used, but others may read its secrets
    warning: str | None


def file_mode_verdict(mode: int, secrets: Iterable[str]) -> FileModeVerdict:
    """Judge a configuration file's permission bits (``st_mode``)."""
    bits = stat.S_IMODE(mode)
    problem = warning = None
    if bits & stat.S_IWOTH:
        problem = (
            f"file mode {bits:04o}: every user may change this file, which names the "
            "modules the supervisor imports and runs; chmod o-w it"
        )
    names = list(secrets)
    if names and bits & (stat.S_IRGRP | stat.S_IROTH):
        who = "its group and every user" if bits & stat.S_IROTH else "its group"
        warning = (
            f"{', '.join(names)}: file mode {bits:04o} lets {who} read this secret; "
            "chmod 600 the file, or pass the secret in the environment "
            "(ROCHALLOR_ENGINE_TOKEN, engine.token_env, [kafka.config_env])"
        )
    return FileModeVerdict(problem, warning)


__all__ = [
    "KAFKA_TLS_OFF",
    "FileModeVerdict",
    "Finding",
    "file_mode_verdict",
    "is_loopback",
    "secret_keys",
    "tls_warnings",
    "token_problem",
]
