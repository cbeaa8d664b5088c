"""HTTP client for the engine's REST API (``/v1``), on one ``requests.Session``.

Two layers: the public methods build paths and bodies and check answers;
``_request`` sends and is the only place where transport failures and error
answers become SDK exceptions.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
)

from workflow_sdk import _version
from workflow_sdk.client import models
from workflow_sdk.errors import (
    EngineClientError,
    EngineConnectionError,
    EngineResponseError,
    EngineTimeoutError,
    LeaseLostError,
)

_VERSION = _version.VERSION

# Reasons of a 500 that will never turn into a success on retry: the engine
# reports unknown jobs, definitions and instances as internal errors.
_PERMANENT_500_MARKERS = ("not found", "no rows in result set")
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
# Path characters that may stay as they are (RFC 3986 pchar); everything else
# is percent-encoded. The engine decodes only definition ids, so ids with
# ':' must not be turned into '%3A'.
_SAFE_PATH_CHARS = ":@!$&'()*+,;="


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id in a path must be a non-empty string, got {value!r}")
    return quote(value, safe=_SAFE_PATH_CHARS)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never established, so nothing was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        # The handshake failed before any request byte was written.
        return True
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _error_text(response: requests.Response) -> tuple[str, str | None]:
    """The engine's ``reason``, else ``message``, else the raw body."""
    raw = response.text.strip()
    code: str | None = None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("error") if isinstance(body.get("error"), str) else None
        for key in ("reason", "message", "hint"):
            text = body.get(key)
            if isinstance(text, str) and text:
                return text, code
        if code:
            return code, code
    if raw:
        return (raw[:500] + "...") if len(raw) > 500 else raw, code
    return response.reason or f"HTTP {response.status_code}", code


def _is_transient(status: int, message: str) -> bool:
    if status in _TRANSIENT_STATUSES:
        return True
    if status == 500:
        lowered = message.lower()
        return not any(marker in lowered for marker in _PERMANENT_500_MARKERS)
    return False


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
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
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
    ) -> Any:
        url = self.base_url + path
        prepared = self._prepare(method, url, body, params)
        try:
            response = self._adapter.send(prepared, timeout=self.timeout, **self._send_settings)
            # Read the body now (as Session.send does): it returns the
            # connection to the pool, and a read error is translated below.
            response.content  # noqa: B018
        except requests.Timeout as exc:
            if _never_sent(exc):
                raise EngineConnectionError(
                    f"could not connect to the engine in time: {exc}",
                    request_sent=False,
                    method=method,
                    url=url,
                ) from exc
            raise EngineTimeoutError(
                f"no answer within {self.timeout} s: {exc}",
                request_sent=True,
                method=method,
                url=url,
            ) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise EngineClientError(
                0, f"invalid engine URL: {exc}", method=method, url=url
            ) from exc
        except requests.RequestException as exc:
            raise EngineConnectionError(
                f"engine unreachable: {exc}",
                request_sent=not _never_sent(exc),
                method=method,
                url=url,
            ) from exc

        if response.status_code >= 400:
            message, code = _error_text(response)
            raise EngineClientError(
                response.status_code,
                message,
                error_code=code,
                retryable=_is_transient(response.status_code, message),
                method=method,
                url=url,
            )
        if not expect_json:
            return None
        try:
            return response.json()
        except ValueError as exc:
            text = response.text.strip()
            raise EngineResponseError(
                response.status_code,
                f"expected a JSON body, got {text[:200]!r}",
                method=method,
                url=url,
            ) from exc

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
            raise EngineClientError(
                0, f"invalid engine URL: {exc}", method=method, url=url
            ) from exc
        if body is None:
            prepared.prepare_headers(self._headers)
            prepared.prepare_body(None, None)
        else:
            try:
                # allow_nan=False: the engine's JSON decoder rejects NaN and
                # Infinity; refuse them here, before anything is sent.
                data = json.dumps(body, allow_nan=False).encode()
            except ValueError as exc:
                raise ValueError(f"request body is not valid JSON: {exc}") from exc
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
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        """Claim up to ``max_jobs`` jobs (each leased for 30 s by the engine).

        ``max_jobs`` must be at least 1: the engine reads 0 as "10".
        """
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        if isinstance(job_types, str):
            # list("score") would poll for the job types "s", "c", "o", ...
            raise TypeError(f"job_types must be a list of strings, got the string {job_types!r}")
        if not job_types:
            raise ValueError("job_types must not be empty")
        payload = {"workerId": worker_id, "jobTypes": list(job_types), "maxJobs": max_jobs}
        return models.parse_poll(self._request("POST", "/v1/jobs/poll", body=payload))

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        payload = {"workerId": worker_id, "variables": variables or {}}
        path = f"/v1/jobs/{_segment(job_id)}/complete"
        self._request("POST", path, body=payload, expect_json=False)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        """Fail a job. Not idempotent: never call it twice for one delivery."""
        payload = {"workerId": worker_id, "errorMessage": error_message, "retryable": retryable}
        path = f"/v1/jobs/{_segment(job_id)}/fail"
        self._request("POST", path, body=payload, expect_json=False)

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
            self._request("GET", "/healthz", expect_json=False)
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
        return f"RestEngineClient({self.base_url!r})"


__all__ = ["RestEngineClient"]
