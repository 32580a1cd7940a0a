"""A small HTTP client for the Rubrix 0.x / Argilla 1.x text-classification REST API.

Speaks the protocol directly (the ``rubrix`` package cannot be installed on Python 3.11+), on one
``requests.Session``. No Ray and no model imports: usable on its own.

Retries live in one place, ``with_retries`` below: every method of the client makes exactly one
attempt, and the callers wrap whole server operations in ``with_retries`` (a page of a pull, the
connection checks, and, in ``ingest.send_chunk``, "ask which ids the server holds, then send the rest":
one operation, so a resend after a lost answer never replaces a stored record). What is retried: 5xx
answers and transport errors (no answer), up to ``rubrix_retries`` times, with exponential backoff and
jitter. A 4xx is the server refusing the request and is never retried.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import requests

from zs_ray.errors import ZsRayError
from zs_ray.rubrix.config import ServerConfig

TASK = "TextClassification"
ARGILLA_PAGE_MAX = 1000


class RubrixError(ZsRayError):
    """A request the server refused (``status`` 4xx) or that kept failing (5xx, transport)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


@dataclass(frozen=True)
class ServerInfo:
    generation: str  # "rubrix" (0.x) or "argilla" (1.x)
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


def server_message(resp: requests.Response) -> str:
    """The server's own error text: ``code: params`` from ``{"detail": {...}}`` or the raw body."""
    try:
        detail = resp.json().get("detail", resp.json())
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:500]
    if isinstance(detail, dict) and "code" in detail:
        params = detail.get("params") or {}
        return f"{detail['code']}" + (f" {json.dumps(params, ensure_ascii=False)}" if params else "")
    return json.dumps(detail, ensure_ascii=False)[:500]


class RubrixClient:
    """One connection to a server, bound to one config (URL, key, workspace, dataset)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._key = config.rubrix_api_key
        self.session = requests.Session()
        self.session.verify = not config.rubrix_no_verify_tls
        # Both generations' key headers; never Authorization: Bearer (servers expect a JWT there).
        self.session.headers.update(
            {"X-Rubrix-Api-Key": config.rubrix_api_key, "X-Argilla-Api-Key": config.rubrix_api_key,
             "Content-Type": "application/json"}
        )
        self._info: ServerInfo | None = None

    def __repr__(self) -> str:
        return f"RubrixClient(api_url={self.config.rubrix_api_url!r}, dataset={self.config.rubrix_dataset!r})"

    def close(self) -> None:
        self.session.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _params(self, extra: dict | None = None) -> dict:
        params = dict(extra or {})
        if self.config.rubrix_workspace:
            params["workspace"] = self.config.rubrix_workspace
        return params

    def request(self, method: str, path: str, *, params=None, data=None, json_body=None,
                ok=(200,), auth=True) -> requests.Response:
        """One attempt. Raises RubrixError (status None for transport errors) unless ``ok``."""
        url = self.config.rubrix_api_url + path
        try:
            resp = self.session.request(
                method, url, params=self._params(params) if auth else params,
                data=data if json_body is None else json.dumps(json_body),
                timeout=self.config.rubrix_timeout,
                headers=None if auth else {"X-Rubrix-Api-Key": None, "X-Argilla-Api-Key": None},
            )
        except requests.RequestException as exc:
            raise RubrixError(
                self._redact(f"cannot reach {method} {url}: {type(exc).__name__}: {exc}")
            ) from None
        if resp.status_code in ok:
            return resp
        raise RubrixError(
            self._redact(f"{method} {path} -> HTTP {resp.status_code}: {server_message(resp)}"),
            status=resp.status_code,
        )

    # -- server and dataset -----------------------------------------------------------------------
    def info(self) -> ServerInfo:
        """``GET /api/_info`` (no auth): tells Rubrix 0.x from Argilla 1.x."""
        if self._info is None:
            body = self.request("GET", "/api/_info", auth=False).json()
            if "rubrix_version" in body:
                self._info = ServerInfo("rubrix", str(body["rubrix_version"]))
            elif "version" in body:
                self._info = ServerInfo("argilla", str(body["version"]))
            else:
                raise RubrixError(f"{self.config.rubrix_api_url} does not look like a Rubrix/Argilla server")
            if self._info.generation == "argilla" and not self._info.version.startswith("1."):
                raise RubrixError(
                    f"Argilla {self._info.version} has no TextClassification API; zs-ray supports "
                    "Rubrix 0.x and Argilla 1.x"
                )
        return self._info

    def me(self) -> dict:
        """``GET /api/me``: checks the key; returns username and workspaces."""
        return self.request("GET", "/api/me").json()

    def get_dataset(self) -> dict | None:
        try:
            return self.request("GET", f"/api/datasets/{self.config.rubrix_dataset}").json()
        except RubrixError as exc:
            if exc.status == 404:
                return None
            raise

    def create_dataset(self, metadata: dict | None = None) -> bool:
        """``POST /api/datasets`` (Argilla 1.x needs it before bulk). False if it existed (409)."""
        body = {"name": self.config.rubrix_dataset, "task": TASK, "tags": self.config.rubrix_tags,
                "metadata": metadata or {}}
        if self.config.rubrix_workspace:
            body["workspace"] = self.config.rubrix_workspace
        resp = self.request("POST", "/api/datasets", json_body=body, ok=(200, 201, 409))
        return resp.status_code != 409

    # -- writing ----------------------------------------------------------------------------------
    def bulk(self, body: bytes) -> dict:
        """One ``:bulk`` request with a pre-serialised body (see ``ingest.send_chunk`` for its retries)."""
        path = f"/api/datasets/{self.config.rubrix_dataset}/{TASK}:bulk"
        return self.request("POST", path, data=body).json()

    # -- reading ----------------------------------------------------------------------------------
    def iter_records(self, query: dict | None = None, page: int = ARGILLA_PAGE_MAX,
                     retry: bool = False) -> Iterator[dict]:
        """Every record matching ``query``, paging as the server generation requires. ``retry`` wraps each
        page request in ``with_retries`` (for a read on its own; not inside an operation itself retried)."""
        def call(*args, **kwargs):
            return with_retries(self.config, lambda: self.request(*args, **kwargs)) if retry else \
                self.request(*args, **kwargs)

        query = query or {}
        name = self.config.rubrix_dataset
        if self.info().generation == "rubrix":
            last_id = None
            while True:
                params = {"limit": page}
                if last_id is not None:
                    params["id_from"] = last_id
                resp = call("POST", f"/api/datasets/{name}/{TASK}/data", params=params, json_body=query)
                records = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
                yield from records
                if len(records) < page:
                    return
                last_id = records[-1]["id"]
        else:
            next_idx = None
            page = min(page, ARGILLA_PAGE_MAX)
            while True:
                body = {"query": query}
                if next_idx is not None:
                    body["next_idx"] = next_idx
                data = call("POST", f"/api/datasets/{name}/records/:search", params={"limit": page},
                            json_body=body).json()
                records = data.get("records") or []
                if not records:
                    return
                yield from records
                next_idx = data.get("next_idx")
                if next_idx is None:
                    return

    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` the server holds now (query by ids; read-only, safe to retry).

        A dataset that does not exist (404; Rubrix 0.x creates it on the first bulk) holds none.
        """
        found: set[str] = set()
        try:
            for start in range(0, len(ids), ARGILLA_PAGE_MAX):
                part = ids[start:start + ARGILLA_PAGE_MAX]
                found.update(str(r["id"]) for r in self.iter_records({"ids": part}))
        except RubrixError as exc:
            if exc.status != 404:
                raise
        return found & set(ids)
