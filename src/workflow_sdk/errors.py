"""Exceptions raised by the SDK.

Every error that comes from talking to the engine is an ``EngineClientError``
(or a subclass) and carries a ``retryable`` verdict, so callers decide whether
to try again without parsing messages themselves.
"""

from __future__ import annotations

from workflow_sdk.sanitize import redact_text, redact_url


class WorkflowSDKError(Exception):
    """Base class of every error the SDK raises on purpose."""

    #: Whether repeating the same request may succeed.
    retryable: bool = False


class NonRetryableError(WorkflowSDKError):
    """Raised by a handler to fail its job without using the step's retries.

    The job, its step and the whole instance become FAILED with the message
    as ``failureReason``.
    """


class ConfigError(WorkflowSDKError):
    """A configuration value is missing, malformed or out of range."""


class EngineClientError(WorkflowSDKError):
    """The engine answered with an error, or could not be reached.

    ``status_code`` is the HTTP status (0 when no answer arrived), ``message``
    the engine's ``reason`` (or ``message``, or the raw body), ``error_code``
    the envelope's ``error`` field (``not-found``, ``internal-error``...) when
    there was one.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_code: str | None = None,
        retryable: bool = False,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status_code = status_code
        # Credentials written into the engine's URL stay out of every message.
        self.message = redact_text(message)
        self.error_code = error_code
        self.retryable = retryable
        self.method = method
        self.url = redact_url(url)
        where = f" ({method} {self.url})" if method else ""
        super().__init__(f"engine error {status_code}: {self.message}{where}")


class EngineConnectionError(EngineClientError):
    """No HTTP answer arrived: refused, reset, DNS failure, TLS failure, timeout.

    ``request_sent`` tells whether the request may have reached the engine.
    It is False only when the engine surely did not receive the whole
    request: the connection was never established (refused, unresolvable
    host, TLS handshake failed), or writing the request itself failed, so a
    non-idempotent call such as ``fail_job`` can safely be repeated. When it
    is True the engine may have acted on the request.
    """

    def __init__(
        self,
        message: str,
        *,
        request_sent: bool,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(0, message, retryable=True, method=method, url=url)
        self.request_sent = request_sent


class EngineTimeoutError(EngineConnectionError):
    """The engine did not answer in time; the request may have been acted on."""


class EngineResponseError(EngineClientError):
    """The engine answered 2xx but the body is not the JSON the contract promises."""


class DispatchModeError(EngineClientError):
    """The engine dispatches jobs through Kafka: its poll path answers 410 for good.

    Not retryable. ``dispatch_mode`` is the mode the engine named
    (``kafka_outbox`` on the released engine). Workers of such an engine
    consume the jobs from Kafka (``dispatch = "kafka"`` in the supervisor
    config); ``complete`` and ``fail`` stay the same REST calls.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        dispatch_mode: str,
        error_code: str | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(
            status_code,
            message,
            error_code=error_code,
            retryable=False,
            method=method,
            url=url,
        )
        self.dispatch_mode = dispatch_mode


class LeaseLostError(EngineClientError):
    """A lease extension was refused: the job may already run elsewhere."""


class WorkerShutdown(BaseException):
    """Raised inside a worker process to stop it.

    Derives from BaseException so a handler's ``except Exception`` cannot
    swallow it.
    """


__all__ = [
    "ConfigError",
    "DispatchModeError",
    "EngineClientError",
    "EngineConnectionError",
    "EngineResponseError",
    "EngineTimeoutError",
    "LeaseLostError",
    "NonRetryableError",
    "WorkerShutdown",
    "WorkflowSDKError",
]
