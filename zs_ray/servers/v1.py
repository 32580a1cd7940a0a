"""The Rubrix 0.x / Argilla 1.x text-classification REST API, as functions over the shared ``client.RubrixClient``.

What zs-ray asks of these servers: who the key belongs to (``me``), the dataset (``get_dataset``,
``create_dataset``), a ``:bulk`` of records (``bulk``; ``records`` builds them), every record matching a query,
paged as the generation requires (``iter_records``: Rubrix 0.x streams ``/data`` pages, Argilla 1.2+ has
``records/:search``), and which ids the server holds (``existing_ids``, before every send). Each function makes
one attempt per request; the callers wrap whole operations in ``client.with_retries``. Argilla 2.x's
``/api/v1`` API is ``argilla2`` / ``argilla2_pull``.
"""

from __future__ import annotations

import json
from typing import Iterator

from zs_ray.servers.client import RubrixClient, RubrixError, server_error, with_retries

TASK = "TextClassification"
ARGILLA_PAGE_MAX = 1000


def me(client: RubrixClient) -> dict:
    """``GET /api/me``: checks the key; returns username and workspaces."""
    return client.request("GET", "/api/me").json()


def get_dataset(client: RubrixClient) -> dict | None:
    """The dataset, or None where the server says it does not exist (any other 404 is an error)."""
    try:
        return client.request("GET", f"/api/datasets/{client.config.rubrix_dataset}").json()
    except RubrixError as exc:
        if exc.not_found:
            return None
        raise


def create_dataset(client: RubrixClient, metadata: dict | None = None) -> bool:
    """``POST /api/datasets`` (both generations), before any bulk: Argilla 1.13+ needs it, and on Rubrix
    0.x / older Argilla concurrent first bulks would each re-create the index. False if it existed (409)."""
    config = client.config
    body = {"name": config.rubrix_dataset, "task": TASK, "tags": config.rubrix_tags, "metadata": metadata or {}}
    if config.rubrix_workspace:
        body["workspace"] = config.rubrix_workspace
    resp = client.request("POST", "/api/datasets", json_body=body, ok=(200, 201, 409))
    return resp.status_code != 409


def bulk(client: RubrixClient, body: bytes) -> dict:
    """One ``:bulk`` request with a pre-serialised body (see ``ingest.send_chunk`` for its retries)."""
    path = f"/api/datasets/{client.config.rubrix_dataset}/{TASK}:bulk"
    return client.request("POST", path, data=body).json()


def iter_records(client: RubrixClient, query: dict | None = None, page: int = ARGILLA_PAGE_MAX,
                 retry: bool = False, fields: list[str] | None = None) -> Iterator[dict]:
    """Every record matching ``query``, paging as the server generation requires. ``retry`` wraps each
    page (request and reading) in ``with_retries`` (for a read on its own; not inside an operation
    itself retried). ``fields`` limits what Argilla returns (Rubrix 0.x ``/data`` sends whole records)."""
    def fetch(page_op):
        return with_retries(client.config, page_op) if retry else page_op()

    query = query or {}
    base = f"/api/datasets/{client.config.rubrix_dataset}"
    if client.info().generation == "rubrix":
        last_id = None
        while True:
            params = {"limit": page, **({} if last_id is None else {"id_from": last_id})}
            records = fetch(lambda: _stream(client, f"{base}/{TASK}/data", params, query))
            yield from records
            if len(records) < page:
                return
            last_id = records[-1]["id"]
    else:
        next_idx = None
        page = min(page, ARGILLA_PAGE_MAX)
        while True:
            body = {"query": query, **({"fields": fields} if fields else {}),
                    **({} if next_idx is None else {"next_idx": next_idx})}
            data = fetch(lambda: client.request("POST", f"{base}/records/:search", params={"limit": page},
                                                json_body=body).json())
            records = data.get("records") or []
            if not records:
                return
            yield from records
            next_idx = data.get("next_idx")
            if next_idx is None:
                return


def _stream(client: RubrixClient, path: str, params: dict, query: dict) -> list[dict]:
    """One Rubrix 0.x ``/data`` page. An error while streaming arrives as HTTP 200 and a last line
    ``{"detail": ...}``: raised (as a 5xx: the page is worth retrying), never read as a record."""
    resp = client.request("POST", path, params=params, json_body=query)
    records = []
    for line in resp.content.decode("utf-8", "replace").split("\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise RubrixError(f"POST {path}: a torn line after {len(records)} records: {line[:80]!r}") from None
        if not isinstance(item, dict) or ("detail" in item and "id" not in item):
            code, text = server_error(item)
            raise RubrixError(f"POST {path}: the stream ended in a server error after {len(records)} "
                              f"records: {text}", status=500, code=code)
        records.append(item)
    return records


def existing_ids(client: RubrixClient, ids: list[str]) -> set[str]:
    """Which of ``ids`` the server holds now (query by ids, asking for the id field only; read-only,
    safe to retry). Only the server's own "not found" (the dataset is not there yet) means none: any
    other 404 or 405 (a proxy, an unknown route) raises, so it can never lead to a resend."""
    found: set[str] = set()
    try:
        for start in range(0, len(ids), ARGILLA_PAGE_MAX):
            part = ids[start:start + ARGILLA_PAGE_MAX]
            for r in iter_records(client, {"ids": part}, fields=["id"]):
                if r.get("id") is None:  # cannot tell which ids it holds: never guess "none"
                    raise RubrixError("the id look-up answered a record without an id", retryable=False)
                found.add(str(r["id"]))
    except RubrixError as exc:
        if not exc.not_found:
            raise
    return found & set(ids)
