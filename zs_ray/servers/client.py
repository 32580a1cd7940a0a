"""The HTTP client every server generation shares, and the one retry layer: no API of its own.

Speaks HTTP directly (the ``rubrix`` package cannot be installed on Python 3.11+), on one
``requests.Session``: the key headers, TLS and extra headers (``transport``), secrets redacted from every
error, and which server this is (``RubrixClient.info``: Rubrix 0.x, Argilla 1.x or 2.x). The APIs are
functions over this client, one module per generation: ``v1`` (Rubrix 0.x / Argilla 1.x: the
text-classification datasets and records) and ``argilla2`` / ``argilla2_pull`` (Argilla 2.x's ``/api/v1``).
No Ray and no model imports: usable on its own.

Retries live in one place, ``with_retries`` below: every request makes exactly one attempt, and the
callers wrap whole server operations in ``with_retries`` (a page of a pull, the connection checks, and, in
``ingest.send_chunk``, "ask which ids the server holds, then send the rest": one operation, so a resend
after a lost answer never replaces a stored record). What is retried: 5xx answers and transport errors (no
answer), up to ``rubrix_retries`` times, with exponential backoff and jitter. A 4xx is the server refusing
the request and is never retried; a 404 means "not there" only when it carries the server's own
``EntityNotFoundError`` (``RubrixError.not_found``). With no key given, the first authenticated request
sends the default key of the server's generation.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import requests

from zs_ray.errors import ZsRayError
from zs_ray.servers import transport
from zs_ray.servers.config import ServerConfig

class RubrixError(ZsRayError):
    """A request the server refused (``status`` 4xx) or that kept failing (5xx, transport).

    ``code`` is the server's own error name (``EntityNotFoundError``, ...) when the answer carries one:
    a 404 without it came from something else (a proxy, an unknown route) and means nothing about data.
    ``front``: a 401/403 from the Hugging Face Space or proxy in front of the server, not the server's.
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retryable: bool | None = None, front: bool = False):
        super().__init__(message)
        self.status, self.code, self._retryable, self.front = status, code, retryable, front

    @property
    def retryable(self) -> bool:
        if self._retryable is not None:
            return self._retryable
        return self.status is None or self.status >= 500

    @property
    def not_found(self) -> bool:
        """The server itself says the dataset (or record) does not exist."""
        return self.status == 404 and self.code == "EntityNotFoundError"


@dataclass(frozen=True)
class ServerInfo:
    generation: str  # "rubrix" (0.x), "argilla" (1.x) or "argilla2" (2.x: the /api/v1 API, zs_ray.servers.argilla2)
    version: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        parts = []
        for p in self.version.split(".")[:3]:
            digits = "".join(c for c in p if c.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)


BACKOFF_CAP_S = 20.0
T = TypeVar("T")


def backoff_delay(attempt: int, base: float, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with +-50% jitter: attempt 0 -> ~base, 1 -> ~2*base, ... <= 1.5*cap."""
    return min(cap, base * (2**attempt)) * random.uniform(0.5, 1.5)


def with_retries(config: ServerConfig, operation: Callable[[], T]) -> T:
    """The one retry layer: run ``operation`` (a whole server operation, safe to repeat), retrying a
    5xx or transport error ``config.rubrix_retries`` times with backoff; a 4xx is raised at once."""
    attempt = 0
    while True:
        try:
            return operation()
        except RubrixError as exc:
            if not exc.retryable or attempt >= config.rubrix_retries:
                raise
        time.sleep(backoff_delay(attempt, config.rubrix_backoff))
        attempt += 1


def server_error(body) -> tuple[str | None, str]:
    """(error name, text) of an error body: ``{"detail": {"code": "...::Name", "params"}}`` is the
    server's own; anything else (``{"detail": "Not Found"}``, HTML) has no name."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        params = detail.get("params") or {}
        text = detail["code"] + (f" {json.dumps(params, ensure_ascii=False)}" if params else "")
        return detail["code"].rpartition("::")[2], text[:500]
    return None, (detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False))[:500]


def server_message(resp: requests.Response) -> tuple[str | None, str]:
    try:
        return server_error(resp.json())
    except ValueError:
        return None, (resp.text or resp.reason or "").strip()[:500]


class RubrixClient:
    """One connection to a server of any generation, bound to one config (URL, key, workspace, dataset): one
    attempt per ``request``; the APIs (``v1``, ``argilla2``) are functions over it."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.session = transport.new_session(config)  # extra headers, TLS
        self._secrets = transport.secrets_of(config)
        self._info: ServerInfo | None = None
        self._key: str | None = None
        if config.rubrix_api_key is not None:
            self._use_key(config.rubrix_api_key)

    def _use_key(self, key: str) -> None:
        # Both generations' key headers; never Authorization: Bearer (servers expect a JWT there).
        self._key = key
        self.session.headers.update({"X-Rubrix-Api-Key": key, "X-Argilla-Api-Key": key})

    def __repr__(self) -> str:
        return f"RubrixClient(api_url={self.config.public_url!r}, dataset={self.config.rubrix_dataset!r})"

    def close(self) -> None:
        self.session.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return transport.redact(transport.redact(text, self._secrets), [self._key] if self._key else [])

    def _params(self, extra: dict | None = None) -> dict:
        params = dict(extra or {})
        if self.config.rubrix_workspace:
            params["workspace"] = self.config.rubrix_workspace
        return params

    def request(self, method: str, path: str, *, params=None, data=None, json_body=None,
                ok=(200,), auth=True) -> requests.Response:
        """One attempt. Raises RubrixError (status None for transport errors) unless ``ok``."""
        if auth and self._key is None:  # no key given: the default of this server's generation
            self._use_key(self.config.api_key_for(self.info().generation))
        try:  # verify given each time: else REQUESTS_CA_BUNDLE would win over --rubrix-ca-bundle
            resp = self.session.request(
                method, self.config.rubrix_api_url + path, params=self._params(params) if auth else params,
                data=data if json_body is None else json.dumps(json_body),
                timeout=self.config.rubrix_timeout, verify=self.session.verify,
                headers=None if auth else {"X-Rubrix-Api-Key": None, "X-Argilla-Api-Key": None},
            )
        except requests.RequestException as exc:
            text, retryable = transport.transport_error(exc, method, self.config.public_url + path)
            raise RubrixError(self._redact(text), retryable=None if retryable else False) from None
        if resp.status_code in ok:
            return resp
        code, text = server_message(resp)
        front = transport.front_refusal(resp.status_code, code, method, path)
        if front:
            raise RubrixError(self._redact(front), status=resp.status_code, front=True)
        hint = " (not the server's own answer: a proxy, or a server without this route)" \
            if code is None and resp.status_code in (404, 405) else ""
        raise RubrixError(self._redact(f"{method} {path} -> HTTP {resp.status_code}: {text}{hint}"),
                          status=resp.status_code, code=code)

    # -- server and dataset -----------------------------------------------------------------------
    def info(self) -> ServerInfo:
        """Which server this is: ``GET /api/_info`` (no auth) tells Rubrix 0.x from Argilla 1.x; Argilla 2.x
        has no such route (its web app answers the path with HTML), so then ``GET /api/v1/version``."""
        if self._info is None:
            try:
                body = self.request("GET", "/api/_info", auth=False).json()
            except ValueError:  # not JSON: Argilla 2.x's web app
                body = None
            except RubrixError as exc:
                if exc.status not in (404, 405):
                    raise
                body = None
            if isinstance(body, dict) and "rubrix_version" in body:
                self._info = ServerInfo("rubrix", str(body["rubrix_version"]))
            elif isinstance(body, dict) and "version" in body:
                self._info = ServerInfo("argilla", str(body["version"]))
            else:
                self._info = self._info_v1()
            if self._info.generation == "argilla" and self._info.version_tuple[:1] >= (2,):
                self._info = ServerInfo("argilla2", self._info.version)
            if self._info.generation == "argilla" and self._info.version_tuple[:1] != (1,):
                raise RubrixError(f"Argilla {self._info.version} is not a version zs-ray knows; it supports "
                                  "Rubrix 0.x, Argilla 1.2 - 1.x and Argilla 2.x", retryable=False)
            if self._info.generation == "argilla" and self._info.version_tuple[:2] < (1, 2):
                raise RubrixError(
                    f"Argilla {self._info.version} has no records search endpoint (it came with Argilla 1.2), "
                    "which zs-ray needs to check ids before sending and to read records back: upgrade the "
                    "server to Argilla 1.2 or later", retryable=False)
        return self._info

    def _info_v1(self) -> ServerInfo:
        """``GET /api/v1/version`` (no auth), Argilla 2.x's: ``{"version": "2.8.0"}``."""
        not_argilla = RubrixError(f"{self.config.public_url} does not look like a Rubrix/Argilla server",
                                  retryable=False)
        try:
            body = self.request("GET", "/api/v1/version", auth=False).json()
        except ValueError:
            raise not_argilla from None
        except RubrixError as exc:
            if exc.status is not None and exc.status < 500:
                raise not_argilla from None
            raise
        if not isinstance(body, dict) or "version" not in body:
            raise not_argilla
        info = ServerInfo("argilla2", str(body["version"]))
        if info.version_tuple[:1] != (2,):
            raise RubrixError(f"Argilla {info.version} is not a version zs-ray knows; it supports Rubrix 0.x, "
                              "Argilla 1.2 - 1.x and Argilla 2.x", retryable=False)
        return info


_CLIENTS: dict[tuple, RubrixClient] = {}


def client_for(config: ServerConfig) -> RubrixClient:
    """The sender tasks' client (1.x ``ingest.send_chunk`` and 2.x ``argilla2.send_chunk``): one keep-alive
    session per worker process and server settings, reused across tasks."""
    k = (config.rubrix_workspace, config.rubrix_dataset, config.rubrix_timeout, transport.fingerprint(config))
    if k not in _CLIENTS:
        _CLIENTS[k] = RubrixClient(config)
    return _CLIENTS[k]
