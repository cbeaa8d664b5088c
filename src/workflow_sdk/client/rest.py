"""HTTP client for the engine's REST API (``/v1``), on one ``requests.Session``.

Two layers: the public methods build paths and bodies and check answers;
``_request`` sends. What an answer or a transport failure means is decided in
``workflow_sdk.client.wire``, shared with ``LeanJobClient``; this module only
says which ``requests`` failure is which case (``_transport_error``).

A ``requests`` exception does not say whether the request had been written
when the connection failed: a TLS error, in particular, is ``SSLError``
whether the handshake failed (nothing sent) or the answer came back garbled
(the engine may have acted). So the connections this client uses record,
for the calling thread, how far each request got (``_Progress``): the
translation then knows, as ``LeanJobClient`` knows from its own code path.
"""

from __future__ import annotations

import enum
import functools
import threading
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
)
from urllib3.poolmanager import PoolManager

from workflow_sdk import _version
from workflow_sdk.client import models, wire
from workflow_sdk.errors import EngineClientError, LeaseLostError
from workflow_sdk.sanitize import redact_url

_VERSION = _version.VERSION
_segment = wire.segment


class _Progress(enum.Enum):
    """How far the calling thread's current request got."""

    #: No tracked connection was used: the classes below are not in place
    #: (``responses`` in tests, a pool this client did not make). Judge by
    #: the exception alone, and when in doubt assume the request was sent.
    UNTRACKED = "untracked"
    #: Connecting (TCP, TLS handshake) or writing: the request is not whole.
    STARTED = "started"
    #: ``request()`` returned: the whole request was handed to the socket.
    WRITTEN = "written"


class _ThreadProgress(threading.local):
    state: _Progress = _Progress.UNTRACKED


_progress = _ThreadProgress()


@functools.cache
def _tracking_pool(pool_cls: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool_cls`` whose connections record ``_progress`` for the calling thread."""
    if getattr(pool_cls, "_rochallor_tracking", False):
        return pool_cls
    base = pool_cls.ConnectionCls

    class TrackingConnection(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            _progress.state = _Progress.STARTED
            super().connect()

        def request(self, *args: Any, **kwargs: Any) -> None:
            _progress.state = _Progress.STARTED
            super().request(*args, **kwargs)
            _progress.state = _Progress.WRITTEN

    TrackingConnection.__name__ = TrackingConnection.__qualname__ = f"Tracking{base.__name__}"
    attributes = {"ConnectionCls": TrackingConnection, "_rochallor_tracking": True}
    return cast(
        "type[HTTPConnectionPool]", type(f"Tracking{pool_cls.__name__}", (pool_cls,), attributes)
    )


def _track(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {
        scheme: _tracking_pool(pool_cls)
        for scheme, pool_cls in manager.pool_classes_by_scheme.items()
    }
    return manager


class _TrackingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose pools (direct or through a proxy) track ``_progress``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _track(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _track(super().proxy_manager_for(proxy, **proxy_kwargs))


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never established, so nothing was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _transport_error(
    exc: requests.RequestException,
    timeout: float,
    *,
    method: str,
    url: str,
    progress: _Progress = _Progress.UNTRACKED,
) -> EngineClientError:
    """Which of the shared transport failures a ``requests`` exception is;
    ``progress``: how far the request got, when the connection recorded it."""
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return wire.invalid_url_error(exc, method=method, url=url)
    if isinstance(exc, requests.exceptions.SSLError):
        # The same exception for a failed handshake and for a garbled answer
        # to a request already written: only the progress tells them apart.
        written = progress is not _Progress.STARTED
        return wire.tls_error(exc, request_written=written, method=method, url=url)
    if isinstance(exc, requests.Timeout):
        if _never_sent(exc):
            return wire.connect_timeout_error(exc, method=method, url=url)
        return wire.answer_timeout_error(timeout, exc, method=method, url=url)
    if _never_sent(exc):
        return wire.not_connected_error(exc, method=method, url=url)
    return wire.lost_error(exc, request_sent=True, method=method, url=url)


class RestEngineClient:
    """Client for one engine, safe to share between threads.

    :param base_url: the engine's REST address, e.g. ``http://engine:8080``.
    :param timeout: seconds for each request (connect and read).
    :param headers: extra headers sent with every request.
    :param token: bearer token sent as ``Authorization`` (for a proxy in
        front of the engine; the engine itself does not check it).
    :param verify: TLS verification, as in ``requests`` (bool or CA bundle).
    :param cert: client certificate, as in ``requests``.
    :param pool_size: keep-alive connections kept per host; raise it above
        the number of threads that call the client at once.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        pool_size: int = 32,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._adapter = _TrackingAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._headers: dict[str, str] = {
            "User-Agent": f"rochallor-sdk/{_VERSION} {requests.utils.default_user_agent()}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
        }
        self._headers.update(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # Here, not at each request: requests' own error would print the value.
        wire.check_headers(self._headers)
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        # What Session.request would recompute from the environment on every
        # call (proxies, REQUESTS_CA_BUNDLE...): a quarter of a request's CPU,
        # spent once here instead. The client sends through the adapter.
        self._send_settings: dict[str, Any] = dict(
            self._session.merge_environment_settings(self.base_url, {}, False, verify, cert)
        )

    # -- transport -----------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        expect_json: bool = True,
        success: frozenset[int] | None = None,
    ) -> Any:
        url = self.base_url + path
        prepared = self._prepare(method, url, body, params)
        _progress.state = _Progress.UNTRACKED
        try:
            response = self._adapter.send(prepared, timeout=self.timeout, **self._send_settings)
            # Read the body now (as Session.send does): it returns the
            # connection to the pool, and a read error is translated below.
            content = response.content
        except requests.RequestException as exc:
            raise _transport_error(
                exc, self.timeout, method=method, url=url, progress=_progress.state
            ) from exc
        return wire.read_answer(
            response.status_code,
            response.reason or "",
            content or b"",
            method=method,
            url=url,
            expect_json=expect_json,
            success=success,
        )

    def _prepare(
        self, method: str, url: str, body: Any, params: dict[str, Any] | None
    ) -> requests.PreparedRequest:
        """Build the request without a Session's per-call merging of cookies,
        hooks, auth and environment: none of them apply to the engine."""
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        try:
            prepared.prepare_url(url, params)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise wire.invalid_url_error(exc, method=method, url=url) from exc
        if body is None:
            prepared.prepare_headers(self._headers)
            prepared.prepare_body(None, None)
        else:
            data = wire.encode_json(body)
            prepared.prepare_headers(self._json_headers)
            prepared.prepare_body(data, None)
        return prepared

    # -- definitions ---------------------------------------------------------

    def upload_definition(self, definition: dict[str, Any]) -> dict[str, Any]:
        """Upload a definition; returns ``{"id", "version", "name", "uploadedAt"}``."""
        body = self._request("POST", "/v1/definitions", body=definition)
        return models.expect_object(body, "definition summary")

    def get_definition(self, definition_id: str) -> dict[str, Any]:
        """The latest version of a definition, whole."""
        body = self._request("GET", f"/v1/definitions/{_segment(definition_id)}")
        return models.expect_object(body, "definition")

    def get_definition_version(self, definition_id: str, version: int) -> dict[str, Any]:
        path = f"/v1/definitions/{_segment(definition_id)}/versions/{int(version)}"
        return models.expect_object(self._request("GET", path), "definition")

    def list_definitions(
        self, keyword: str = "", page: int = 0, page_size: int = 20
    ) -> dict[str, Any]:
        """``{"items": [summary...], "total": n}``; ``items`` is always a list."""
        params: dict[str, Any] = {"page": page, "pageSize": page_size}
        if keyword:
            params["keyword"] = keyword
        body = self._request("GET", "/v1/definitions", params=params)
        return models.parse_page(body, "definition list")

    # -- instances -----------------------------------------------------------

    def start_instance(
        self,
        definition_id: str,
        variables: dict[str, Any] | None = None,
        definition_version: int | None = None,
        business_key: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"definitionId": definition_id}
        if variables is not None:
            payload["variables"] = variables
        if definition_version is not None:
            payload["definitionVersion"] = definition_version
        if business_key is not None:
            payload["businessKey"] = business_key
        body = self._request("POST", "/v1/instances", body=payload)
        return models.expect_object(body, "instance")

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        body = self._request("GET", f"/v1/instances/{_segment(instance_id)}")
        return models.expect_object(body, "instance")

    def list_instances(
        self,
        definition_id: str | None = None,
        status: str | None = None,
        business_key: str | None = None,
        page: int = 0,
        page_size: int = 20,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "pageSize": page_size}
        if definition_id:
            params["definitionId"] = definition_id
        if status:
            params["status"] = status
        if business_key:
            params["businessKey"] = business_key
        body = self._request("GET", "/v1/instances", params=params)
        return models.parse_page(body, "instance list")

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        """History items with camelCase keys, whichever spelling the engine used."""
        body = self._request("GET", f"/v1/instances/{_segment(instance_id)}/history")
        return models.parse_history(body)

    def cancel_instance(self, instance_id: str, reason: str = "") -> dict[str, Any]:
        path = f"/v1/instances/{_segment(instance_id)}/cancel"
        body = self._request("POST", path, body={"reason": reason})
        return models.expect_object(body, "instance")

    def complete_user_task(
        self,
        instance_id: str,
        step_id: str,
        completed_by: str = "",
        result: dict[str, Any] | None = None,
    ) -> None:
        """Complete the open user task at ``step_id``; ``result`` is merged into
        the instance's variables.

        The engine reads ``variables`` (and ``workerId``); the OpenAPI file's
        ``result``/``completedBy`` are sent beside them for engines that
        follow that file.
        """
        payload: dict[str, Any] = {"variables": result or {}, "result": result or {}}
        if completed_by:
            payload["workerId"] = completed_by
            payload["completedBy"] = completed_by
        path = f"/v1/instances/{_segment(instance_id)}/user-tasks/{_segment(step_id)}/complete"
        self._request("POST", path, body=payload, expect_json=False)

    def signal(
        self, instance_id: str, wait_step_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        """Resume the WAIT step ``wait_step_id``; the body is the variable map itself."""
        path = f"/v1/instances/{_segment(instance_id)}/signals/{_segment(wait_step_id)}"
        self._request("POST", path, body=variables or {}, expect_json=False)

    # -- jobs ----------------------------------------------------------------

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1, *, lease_seconds: int = 0
    ) -> list[dict[str, Any]]:
        """Claim up to ``max_jobs`` jobs (each leased for 30 s by the engine).

        ``max_jobs`` must be at least 1: the engine reads 0 as "10".
        ``lease_seconds`` (5-3600; 0 = not sent) asks engines with lease
        extension for that lease from the claim on; released engines ignore it.
        """
        payload = wire.poll_body(worker_id, job_types, max_jobs, lease_seconds)
        return models.parse_poll(self._request("POST", wire.POLL_PATH, body=payload))

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        path = wire.complete_path(job_id)
        self._request(
            "POST", path, body=wire.complete_body(worker_id, variables), expect_json=False
        )

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        """Fail a job. Not idempotent: never call it twice for one delivery."""
        payload = wire.fail_body(worker_id, error_message, retryable)
        self._request("POST", wire.fail_path(job_id), body=payload, expect_json=False)

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        """Renew a job's lease on engines that support it (newer than the released ones).

        Returns the answer (``{"accepted", "lockExpiresAt"}``), or ``None`` when
        the engine has no such endpoint. Raises ``LeaseLostError`` when the
        engine refuses: the job may already run on another worker.
        """
        path = f"/v1/jobs/{_segment(job_id)}/heartbeat"
        payload = {"workerId": worker_id, "leaseSeconds": lease_seconds}
        try:
            body = self._request("POST", path, body=payload)
        except EngineClientError as exc:
            # A plain-text 404 (no error envelope), 405 or 501: no such route,
            # the engine cannot extend leases. A JSON 404 names the job.
            unsupported = exc.status_code in (405, 501) or (
                exc.status_code == 404 and exc.error_code is None
            )
            if unsupported:
                return None
            if exc.status_code in (404, 409):
                raise LeaseLostError(
                    exc.status_code,
                    exc.message,
                    error_code=exc.error_code,
                    method="POST",
                    url=exc.url,
                ) from exc
            raise
        return models.expect_object(body, "heartbeat answer")

    # -- misc ----------------------------------------------------------------

    def health(self) -> bool:
        """True when ``/healthz`` answers 200; False on any error or no answer."""
        try:
            self._request("GET", "/healthz", expect_json=False, success=wire.HEALTH_SUCCESS)
        except EngineClientError:
            return False
        return True

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RestEngineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RestEngineClient({redact_url(self.base_url)!r})"


__all__ = ["RestEngineClient"]
