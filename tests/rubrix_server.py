"""A protocol-faithful Rubrix 0.x / Argilla 1.x test server (no Elasticsearch), on 127.0.0.1.

Modes:
  * ``rubrix-0.18``: ``{"rubrix_version"}`` info, ``X-Rubrix-Api-Key``, bulk creates the dataset,
    a re-logged record REPLACES the stored one (its annotation is lost), reads via ``/data`` NDJSON
    paged by ``id_from``.
  * ``argilla-1.4``: ``{"version": "1.4.0"}``, either key header, replace semantics, bulk creates.
  * ``argilla-1.29``: only ``X-Argilla-Api-Key``, workspace required (400), dataset must be created
    first (bulk -> 404), upsert keeps fields left out; reads via ``records/:search`` + ``next_idx``.

Payloads are validated by the real servers' rules (422 ``{"detail": {"code", "params"}}``);
metadata strings over 128 characters are cut silently, as the servers do. Faults: ``fail_next``
(status N for the next bulk requests, nothing stored), ``lose_next`` (store, then drop the
connection without an answer, or answer 5xx), ``delay_s`` (before handling), ``respond_delay_s`` (after storing,
before answering). ``writes[dataset][id]`` counts every store of an id.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from zs_ray.output import MANIFEST

NAME_RE = re.compile(r"^(?!-|_)[a-z0-9-_]+$")
STATUSES = {"Default", "Edited", "Discarded", "Validated"}
MODES = {
    "rubrix-0.18": {"info": {"rubrix_version": "0.18.0"}, "headers": ("x-rubrix-api-key",),
                    "prefix": "rubrix", "replace": True, "ws_required": False,
                    "create_on_bulk": True, "reads": "data"},
    "argilla-1.4": {"info": {"version": "1.4.0"}, "headers": ("x-argilla-api-key", "x-rubrix-api-key"),
                    "prefix": "argilla", "replace": True, "ws_required": False,
                    "create_on_bulk": True, "reads": "search"},
    "argilla-1.29": {"info": {"version": "1.29.0"}, "headers": ("x-argilla-api-key",),
                     "prefix": "argilla", "replace": False, "ws_required": True,
                     "create_on_bulk": False, "reads": "search"},
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, **params):
        self.status, self.error, self.params = status, error, params


class RubrixTestServer:
    def __init__(self, mode: str = "rubrix-0.18", api_key: str = "rubrix.apikey",
                 username: str = "rubrix", workspaces=("rubrix",)):
        self.mode, self.m = mode, MODES[mode]
        self.api_key, self.username, self.workspaces = api_key, username, list(workspaces)
        self.lock = threading.Lock()
        self.datasets: dict[tuple, dict] = {}
        self.writes: dict[str, Counter] = defaultdict(Counter)
        self.requests: list[dict] = []  # method, path, header names, auth header seen
        self.fail_status, self.fail_count, self.lose_count, self.lose_status = 503, 0, 0, None
        self.fail_path = ":bulk"
        self.delay_s = 0.0
        self.respond_delay_s = 0.0
        self.inflight = 0
        self.max_inflight = 0
        self.bulk_requests = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "RubrixTestServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- test controls -----------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503, path: str = ":bulk") -> None:
        self.fail_count, self.fail_status, self.fail_path = n, status, path

    def lose_next(self, n: int, status: int | None = None) -> None:
        """Store the next ``n`` bulk requests, then drop the connection (or answer ``status``)."""
        self.lose_count, self.lose_status = n, status

    def records(self, dataset: str, workspace: str | None = None) -> dict[str, dict]:
        ds = self.datasets.get((workspace or self.workspaces[0], dataset))
        return {} if ds is None else ds["records"]

    def annotate(self, dataset: str, rid: str, labels: list[str], agent: str = "ana",
                 status: str = "Validated", workspace: str | None = None) -> None:
        """What a person does in the web app: set the annotation and the status."""
        with self.lock:
            r = self.records(dataset, workspace)[rid]
            r["annotation"] = {"agent": agent, "labels": [{"class": c, "score": 1.0} for c in labels]}
            r["status"] = status

    # -- request handling --------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, headers, body: bytes):
        """Returns (status, json-able or bytes) or raises ApiError. ``None`` = drop connection."""
        self.requests.append({"method": method, "path": path, "headers": dict(headers)})
        if path == "/api/_info" and method == "GET":
            return 200, self.m["info"]
        self._auth(headers)
        ws = (query.get("workspace") or [None])[0]
        if path == "/api/me" and method == "GET":
            return 200, {"username": self.username, "workspaces": self.workspaces}
        if self.m["ws_required"] and not ws:
            raise ApiError(400, "MissingInputParamError", message="A workspace must be provided")
        ws = ws or self.username
        if ws not in self.workspaces and ws != self.username:
            raise ApiError(403, "ForbiddenOperationError",
                           detail=f"User {self.username} cannot access workspace {ws}")
        if path == "/api/datasets" and method == "POST":
            return self._create(ws, json.loads(body or b"{}"))
        m = re.fullmatch(r"/api/datasets/([^/]+)(/.*)?", path)
        if not m:
            raise ApiError(404, "EntityNotFoundError", name=path, type="route")
        name, rest = m.group(1), m.group(2) or ""
        if rest == "" and method == "GET":
            ds = self._dataset(ws, name)
            return 200, {"name": name, "task": ds["task"], "workspace": ws, "tags": ds["tags"]}
        if rest == "/TextClassification:bulk" and method == "POST":
            return self._bulk(ws, name, body)
        if rest == "/TextClassification/data" and method == "POST" and self.m["reads"] == "data":
            return self._data(ws, name, query, json.loads(body or b"{}"))
        if rest == "/records/:search" and method == "POST" and self.m["reads"] == "search":
            return self._search(ws, name, query, json.loads(body or b"{}"))
        raise ApiError(404, "EntityNotFoundError", name=path, type="route")

    def _auth(self, headers) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        if "authorization" in lower:  # servers expect a JWT there
            raise ApiError(401, "UnauthorizedError", message="Could not validate credentials")
        if not any(lower.get(h) == self.api_key for h in self.m["headers"]):
            raise ApiError(401, "UnauthorizedError", message="Could not validate credentials")

    def _dataset(self, ws: str, name: str) -> dict:
        ds = self.datasets.get((ws, name))
        if ds is None:
            raise ApiError(404, "EntityNotFoundError", name=name, type="ServiceDataset")
        return ds

    def _new_dataset(self, ws, name, tags=None, metadata=None) -> dict:
        if not NAME_RE.match(name):
            raise ApiError(422, "ValidationError", field="name",
                           message=f"string does not match regex {NAME_RE.pattern}")
        ds = {"task": "TextClassification", "tags": dict(tags or {}), "metadata": dict(metadata or {}),
              "records": {}, "metadata_keys": set()}
        self.datasets[(ws, name)] = ds
        return ds

    def _create(self, ws: str, body: dict):
        name = body.get("name", "")
        with self.lock:
            if (body.get("workspace") or ws, name) in self.datasets:
                raise ApiError(409, "EntityAlreadyExistsError", name=name, type="ServiceDataset")
            self._new_dataset(body.get("workspace") or ws, name, body.get("tags"), body.get("metadata"))
        return 200, {"name": name, "task": "TextClassification"}

    def _bulk(self, ws: str, name: str, body: bytes):
        if not NAME_RE.match(name):
            raise ApiError(422, "ValidationError", field="name", message="bad dataset name")
        try:
            payload = json.loads(body)
        except ValueError:
            raise ApiError(422, "ValidationError", message="body is not JSON")
        records = _validate_bulk(payload)
        with self.lock:
            ds = self.datasets.get((ws, name))
            if ds is None:
                if not self.m["create_on_bulk"]:
                    raise ApiError(404, "EntityNotFoundError", name=name, type="ServiceDataset")
                ds = self._new_dataset(ws, name)
            ds["tags"].update(payload.get("tags") or {})
            keys = set(ds["metadata_keys"])
            for r in records:
                keys.update(_flatten(r.get("metadata") or {}))
            if len(keys) > 50:
                raise ApiError(422, "MetadataLimitExceededError", length=len(keys), limit=50)
            ds["metadata_keys"] = keys
            for r in records:
                rid = str(r.get("id") or uuid.uuid4())
                meta = {k: (v[:128] if isinstance(v, str) else v)
                        for k, v in _flatten(r.get("metadata") or {}).items()}
                new = {**r, "id": rid, "metadata": meta}
                new.setdefault("status", "Validated" if r.get("annotation") else "Default")
                old = ds["records"].get(rid)
                if old is not None and not self.m["replace"]:
                    new = {**old, **{k: v for k, v in r.items() if v is not None}, "id": rid,
                           "metadata": meta}
                ds["records"][rid] = new
                self.writes[name][rid] += 1
        return 200, {"dataset": name, "processed": len(records), "failed": 0}

    def _select(self, ds: dict, q: dict) -> list[dict]:
        rows = sorted(ds["records"].values(), key=lambda r: r["id"])
        if q.get("ids"):
            wanted = {str(i) for i in q["ids"]}
            rows = [r for r in rows if r["id"] in wanted]
        if q.get("status"):
            rows = [r for r in rows if r.get("status") in q["status"]]
        return rows

    def _data(self, ws, name, query, body):
        limit = int((query.get("limit") or ["0"])[0]) or None
        id_from = (query.get("id_from") or [None])[0]
        with self.lock:
            rows = self._select(self._dataset(ws, name), body)
        if id_from is not None:
            rows = [r for r in rows if r["id"] > id_from]
        rows = rows[:limit] if limit else rows
        return 200, b"".join(json.dumps(r).encode() + b"\n" for r in rows)

    def _search(self, ws, name, query, body):
        limit = int((query.get("limit") or ["50"])[0])
        if not 1 <= limit <= 1000:
            raise ApiError(422, "ValidationError", field="limit", message="must be <= 1000")
        after = body.get("next_idx")
        after = base64.b64decode(after).decode() if after else None
        with self.lock:
            rows = self._select(self._dataset(ws, name), body.get("query") or {})
        total = len(rows)
        if after is not None:
            rows = [r for r in rows if r["id"] > after]
        rows = rows[:limit]
        nxt = base64.b64encode(rows[-1]["id"].encode()).decode() if rows else None
        return 200, {"records": rows, "total": total, "next_idx": nxt}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _err(msg: str, i: int):
    return ApiError(422, "ValidationError", record=i, message=msg)


def _validate_task(ann, i: int, what: str, multi: bool) -> None:
    if not isinstance(ann, dict) or not isinstance(ann.get("labels"), list):
        raise _err(f"{what} must be {{agent, labels}}", i)
    agent = ann.get("agent")
    if not isinstance(agent, str) or len(agent) > 64:
        raise _err(f"{what}.agent must be a string of at most 64 characters", i)
    total = 0.0
    for lab in ann["labels"]:
        c, s = lab.get("class"), lab.get("score", 1.0)
        if not isinstance(c, str) or not 1 <= len(c) <= 128:
            raise _err(f"{what} label class must be 1-128 characters", i)
        if not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise _err(f"{what} score must be in [0, 1]", i)
        total += s
    if what == "prediction" and not multi and total > 1.001:
        raise _err(f"Wrong score distributions: {total}", i)


def _validate_bulk(payload) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ApiError(422, "ValidationError", message="records: field required")
    tags = payload.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ApiError(422, "ValidationError", message="tags must map str to str")
    if not isinstance(payload.get("metadata") or {}, dict):
        raise ApiError(422, "ValidationError", message="metadata must be a dict")
    records = payload["records"]
    multis = {bool(r.get("multi_label", False)) for r in records if isinstance(r, dict)}
    if len(multis) > 1:
        raise ApiError(422, "ValidationError", message="multi_label must agree within a request")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise _err("record must be an object", i)
        if "id" in r and not isinstance(r["id"], (str, int)):
            raise _err("id must be str or int", i)
        inputs = r.get("inputs")
        if (not isinstance(inputs, dict) or not inputs
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items())):
            raise _err("inputs must be a non-empty dict of str -> str", i)
        if not isinstance(r.get("multi_label", False), bool):
            raise _err("multi_label must be a bool", i)
        for what in ("prediction", "annotation"):
            if r.get(what) is not None:
                _validate_task(r[what], i, what, r.get("multi_label", False))
        if "status" in r and r["status"] not in STATUSES:
            raise _err(f"status must be one of {sorted(STATUSES)}", i)
        if not isinstance(r.get("metadata") or {}, dict):
            raise _err("metadata must be a dict", i)
    return records


def _make_handler(server: RubrixTestServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
        disable_nagle_algorithm = True  # TCP_NODELAY, as uvicorn: no 40 ms delayed-ACK stalls

        def log_message(self, *args):  # quiet
            pass

        def _serve(self, method: str):
            u = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            is_bulk = ":bulk" in u.path
            if is_bulk:
                with server.lock:
                    server.bulk_requests += 1
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
            try:
                if server.delay_s and is_bulk:
                    time.sleep(server.delay_s)
                with server.lock:
                    fail = server.fail_path in u.path and server.fail_count > 0
                    if fail:
                        server.fail_count -= 1
                if fail:
                    return self._send(server.fail_status, {"detail": "Service Unavailable"})
                try:
                    status, out = server.handle(method, u.path, parse_qs(u.query), self.headers, body)
                except ApiError as e:
                    code = f"{server.m['prefix']}.api.errors::{e.error}"
                    return self._send(e.status, {"detail": {"code": code, "params": e.params}})
                if is_bulk:
                    if server.respond_delay_s:
                        time.sleep(server.respond_delay_s)
                    with server.lock:
                        lose = server.lose_count > 0
                        if lose:
                            server.lose_count -= 1
                    if lose and server.lose_status:  # stored, but answered as a failure
                        return self._send(server.lose_status, {"detail": "Bad Gateway"})
                    if lose:  # stored, but the answer never reaches the client
                        self.close_connection = True
                        return
                self._send(status, out)
            finally:
                if is_bulk:
                    with server.lock:
                        server.inflight -= 1

        def _send(self, status: int, out) -> None:
            data = out if isinstance(out, bytes) else json.dumps(out).encode()
            self.send_response(status)
            ctype = "application/x-ndjson" if isinstance(out, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

    return Handler


# -- test data: an annotation-job output directory, as the annotation job writes it -------------
LABELS = ["política", "economía", "cultura", "sociedad", "deportes", "tecnología"]
MODEL = "Recognai/zeroshot_selectra_medium"


def make_output(path, n: int = 600, *, multi_label: bool = False, empty_every: int = 50,
                files: int = 2, long_url: bool = False, extra_cols: int = 0):
    """Write ``path/part-*.parquet`` + ``_zs_ray_manifest.json`` with ``n`` MLSum-like rows.

    Every ``empty_every``-th row has an empty summary and null predictions (must not be logged).
    Returns the list of ids that should be logged.
    """
    import math
    import random
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    rnd = random.Random(n)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rows, logged = [], []
    for i in range(n):
        rid = f"es-test-{i:06d}"
        empty = empty_every and i % empty_every == 7
        logits = [rnd.gauss(0, 2) for _ in LABELS]
        if multi_label:
            scores = [1 / (1 + math.exp(-x)) for x in logits]
        else:
            z = sum(math.exp(x) for x in logits)
            scores = [math.exp(x) / z for x in logits]
        order = sorted(range(len(LABELS)), key=lambda k: -scores[k])
        row = {
            "text": f"Texto completo del artículo {i}. " * 20,
            "summary": "" if empty else f"Resumen de la noticia número {i} sobre {LABELS[i % 6]}",
            "topic": LABELS[i % 6][:8],
            "url": (f"https://elpais.com/{i}/" + "x" * (200 if long_url and i == 3 else 10)),
            "title": f"Título {i}",
            "date": "01/01/2019",
            "id": rid,
            "labels": None if empty else [LABELS[k] for k in order],
            "scores": None if empty else [scores[k] for k in order],
            "prediction": None if empty else LABELS[order[0]],
            "score": None if empty else scores[order[0]],
        }
        for c in range(extra_cols):
            row[f"extra{c}"] = "v"
        rows.append(row)
        if not empty:
            logged.append(rid)
    per = math.ceil(n / files)
    for f in range(files):
        part = rows[f * per:(f + 1) * per]
        if part:
            pq.write_table(pa.Table.from_pylist(part), out / f"part-{f:03d}.parquet")
    (out / "README.txt").write_text("not parquet")
    manifest = {"model": MODEL, "text_field": "summary", "multi_label": multi_label,
                "candidate_labels": LABELS, "hypothesis_template": "Esta noticia habla de {}.",
                "rows": n, "skipped": n - len(logged)}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return logged


if __name__ == "__main__":  # python tests/rubrix_server.py [mode] [respond_delay_s] [api_key]
    import sys

    srv = RubrixTestServer(sys.argv[1] if len(sys.argv) > 1 else "rubrix-0.18",
                           api_key=sys.argv[3] if len(sys.argv) > 3 else "rubrix.apikey")
    srv.respond_delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    print(srv.url, flush=True)
    srv._httpd.serve_forever()
