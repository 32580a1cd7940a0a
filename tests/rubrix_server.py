"""A Rubrix 0.x / Argilla 1.x test server (no Elasticsearch) on 127.0.0.1, answering as the real ones do.

The flavor is ``rubrix-0.18`` or ``argilla-X.Y`` (``FLAVORS``); its rules (``flavor``) come from the
version, as read in the real servers' code (Rubrix 0.18.0, Argilla 1.13.0, argilla-server 1.29.1) and in
shared/notes/rubrix-protocol.md:

* reads: Rubrix 0.x and Argilla 1.0-1.1 stream ``/data`` (records as sent: labels ``{"class"}``); 1.2+
  have ``records/:search`` (stored documents: labels ``{"class_label"}``, ``{agent: ...}`` maps,
  ``annotated_by``), honouring ``fields`` and paging by ``next_idx`` (the last id);
* a re-sent id is replaced (Rubrix 0.x, Argilla < 1.7) or upserted (1.7+: fields left out are kept, but
  a record sent without ``status`` gets ``Default``, and ``annotated_by`` follows what was sent);
* a workspace is required from 1.6 (400 ``MissingInputParamError``); the username works as one;
* a bulk into a missing dataset creates it (before 1.13; 404 from 1.13): it first waits
  ``create_window_s`` (adding the dataset document, then re-creating the index), so concurrent first
  bulks each re-create it and records another one stored and acknowledged meanwhile vanish;
* key headers: Rubrix only on 0.x, both on 1.0-1.12, Argilla only from 1.13; default keys
  ``rubrix.apikey`` / ``argilla.apikey``; ``/api/me`` of 1.11+ carries the user's ``api_key``;
* metadata: NaN/inf -> 500 (Elasticsearch), more than 50 keys -> 400, None values dropped, strings over
  128 characters cut to their last 128 on 1.x (0.18 stores them unindexed); a query's ``query_text`` is
  parsed as far as a metadata range goes (``metadata.KEY:[LO TO HI]``), anything else answered 400;
* unknown route: FastAPI's ``404 {"detail": "Not Found"}``, wrong method 405; the server's own errors:
  ``{"detail": {"code": "<rubrix|argilla>.api.errors::Name", "params"}}``.

``records()`` shows what is stored in request form (labels ``{"class", "score"}``); ``render`` gives it
as the flavor's reads do. Faults: ``fail_next`` (status N from a proxy, nothing stored), ``lose_next``
(store, then drop the connection or answer 5xx), ``delay_s`` / ``respond_delay_s`` (before handling /
after storing), ``stream_error_next`` (a ``/data`` stream ending, with HTTP 200, in ``{"detail"}``).
``writes[dataset][id]`` counts every store of an id. The argilla-server package's own request models are
not used: its 1.2x releases require Python < 3.11 and pydantic < 2 (and import FastAPI, SQLAlchemy, ...),
so ``validate_bulk`` carries their rules.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from http.client import responses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from zs_ray.output import MANIFEST

NAME_RE = re.compile(r"^(?!-|_)[a-z0-9-_]+$")
STATUSES = {"Default", "Edited", "Discarded", "Validated"}
FLAVORS = ["rubrix-0.18", "argilla-1.1", "argilla-1.4", "argilla-1.7", "argilla-1.13", "argilla-1.29"]


def flavor(mode: str) -> dict:
    gen, _, ver = mode.partition("-")
    v = tuple(int(x) for x in ver.split("."))
    if gen == "rubrix":
        return {"info": {"rubrix_version": f"{ver}.0"}, "headers": ("x-rubrix-api-key",), "prefix": "rubrix",
                "reads": "data", "label_key": "class", "replace": True, "ws_required": False,
                "create_on_bulk": True, "cut": False, "key": "rubrix.apikey", "me_key": False}
    assert gen == "argilla" and v[0] == 1, mode
    return {"info": {"version": f"{ver}.0"}, "prefix": "argilla",
            "headers": ("x-argilla-api-key",) + (("x-rubrix-api-key",) if v < (1, 13) else ()),
            "reads": "search" if v >= (1, 2) else "data", "label_key": "class_label" if v >= (1, 2) else "class",
            "replace": v < (1, 7), "ws_required": v >= (1, 6), "create_on_bulk": v < (1, 13), "cut": True,
            "key": "argilla.apikey", "me_key": v >= (1, 11)}


class ApiError(Exception):
    def __init__(self, status: int, error: str, **params):
        self.status, self.error, self.params = status, error, params


class RouteError(Exception):  # FastAPI's own answers, not the server's error format
    def __init__(self, status: int):
        self.status = status


class RubrixTestServer:
    def __init__(self, mode: str = "rubrix-0.18", api_key: str | None = None, username: str = "rubrix",
                 workspaces=("rubrix",)):
        self.mode, self.m = mode, flavor(mode)
        self.api_key, self.username, self.workspaces = api_key or self.m["key"], username, list(workspaces)
        self.lock = threading.Lock()
        self.datasets: dict[tuple, dict] = {}
        self.writes: dict[str, Counter] = defaultdict(Counter)
        self.requests: list[dict] = []  # method, path, query, header names, JSON body (not of bulks)
        self.fail_status, self.fail_count, self.lose_count, self.lose_status = 503, 0, 0, None
        self.fail_path = ":bulk"
        self.delay_s = self.respond_delay_s = 0.0
        self.create_window_s = 0.3
        self.stream_errors, self.stream_error_after = 0, 0
        self.inflight = self.max_inflight = self.bulk_requests = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "RubrixTestServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
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
        """Answer the next ``n`` requests whose path contains ``path`` with ``status`` (a proxy's
        ``{"detail": "<reason>"}``, not the server's error format); nothing is stored."""
        self.fail_count, self.fail_status, self.fail_path = n, status, path

    def lose_next(self, n: int, status: int | None = None) -> None:
        """Store the next ``n`` bulk requests, then drop the connection (or answer ``status``)."""
        self.lose_count, self.lose_status = n, status

    def stream_error_next(self, n: int, after: int = 0) -> None:
        """The next ``n`` ``/data`` streams end, after ``after`` records, in an error line (HTTP 200)."""
        self.stream_errors, self.stream_error_after = n, after

    def records(self, dataset: str, workspace: str | None = None) -> dict[str, dict]:
        ds = self.datasets.get((workspace or self.workspaces[0], dataset))
        return {} if ds is None else ds["records"]

    def annotate(self, dataset: str, rid: str, labels: list[str], agent: str = "ana",
                 status: str = "Validated", workspace: str | None = None) -> None:
        """What a person does in the web app: set the annotation and the status."""
        with self.lock:
            r = self.records(dataset, workspace)[rid]
            r["annotation"] = {"agent": agent, "labels": [{"class": c, "score": 1.0} for c in labels]}
            r["status"], r["_annotated_by"] = status, [agent]

    # -- request handling --------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, headers, body: bytes):
        """Returns (status, json-able or bytes) or raises ApiError / RouteError."""
        routes = [("GET", r"/api/_info"), ("GET", r"/api/me"), ("POST", r"/api/datasets"),
                  ("GET", r"/api/datasets/([^/]+)"), ("DELETE", r"/api/datasets/([^/]+)"),
                  ("POST", r"/api/datasets/([^/]+)/TextClassification:bulk"),
                  ("POST", r"/api/datasets/([^/]+)/TextClassification/data" if self.m["reads"] == "data"
                   else r"/api/datasets/([^/]+)/records/:search")]
        matches = [(m, re.fullmatch(p, path)) for m, p in routes if re.fullmatch(p, path)]
        if not matches:
            raise RouteError(404)
        if method not in {m for m, _ in matches}:
            raise RouteError(405)
        match = next(mt for m, mt in matches if m == method)
        if path == "/api/_info":
            return 200, self.m["info"]
        self._auth(headers)
        if path == "/api/me":
            if self.m["me_key"]:
                return 200, {"id": str(uuid.UUID(int=1)), "first_name": self.username, "username": self.username,
                             "role": "owner", "workspaces": self.workspaces, "api_key": self.api_key}
            return 200, {"username": self.username, "email": None, "full_name": None,
                         "workspaces": self.workspaces, "disabled": False}
        data = {} if path.endswith(":bulk") else json.loads(body or b"{}")
        ws = self._workspace((query.get("workspace") or [None])[0] or (
            data.get("workspace") if path == "/api/datasets" else None))
        if path == "/api/datasets":
            return self._create(ws, data)
        name = match.group(1)
        if path.endswith(":bulk"):
            return self._bulk(ws, name, body)
        if path.endswith("/data"):
            return self._data(ws, name, query, data)
        if path.endswith(":search"):
            return self._search(ws, name, query, data)
        ds = self._dataset(ws, name)
        if method == "DELETE":  # the dataset and its records (0.x and 1.x answer 200, no body)
            with self.lock:
                self.datasets.pop((ws, name), None)
            return 200, None
        return 200, {"name": name, "task": ds["task"], "tags": ds["tags"], "metadata": ds["metadata"],
                     ("owner" if self.m["prefix"] == "rubrix" else "workspace"): ws}

    def _auth(self, headers) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        if "authorization" in lower or not any(lower.get(h) == self.api_key for h in self.m["headers"]):
            raise ApiError(401, "UnauthorizedError", message="Could not validate credentials")

    def _workspace(self, ws: str | None) -> str:
        if not ws:
            if self.m["ws_required"]:
                raise ApiError(400, "MissingInputParamError", message="A workspace must be provided")
            return self.username  # the user's own (default) workspace
        if ws not in self.workspaces and ws != self.username:
            raise ApiError(403, "ForbiddenOperationError", detail=f"User {self.username} cannot access workspace {ws}")
        return ws

    def _dataset(self, ws: str, name: str) -> dict:
        ds = self.datasets.get((ws, name))
        if ds is None:
            raise ApiError(404, "EntityNotFoundError", name=name, type="ServiceDataset")
        return ds

    def _new_dataset(self, ws, name, tags=None, metadata=None) -> dict:
        if not NAME_RE.match(name or ""):
            raise ApiError(422, "ValidationError", field="name", message=f"string does not match {NAME_RE.pattern}")
        ds = {"task": "TextClassification", "tags": dict(tags or {}), "metadata": dict(metadata or {}),
              "records": {}, "metadata_keys": set()}
        self.datasets[(ws, name)] = ds  # (re)creates the index: what it held is gone
        return ds

    def _create(self, ws: str, body: dict):
        name = body.get("name", "")
        with self.lock:
            if (ws, name) in self.datasets:
                raise ApiError(409, "EntityAlreadyExistsError", name=name, type="ServiceDataset", workspace=ws)
            self._new_dataset(ws, name, body.get("tags"), body.get("metadata"))
        return 200, {"name": name, "task": "TextClassification"}

    def _bulk(self, ws: str, name: str, body: bytes):
        try:
            payload = json.loads(body)
        except ValueError:
            raise ApiError(422, "ValidationError", message="body is not JSON") from None
        records = validate_bulk(payload)
        metas = [_flatten(r.get("metadata") or {}) for r in records]
        if any(isinstance(v, float) and not math.isfinite(v) for meta in metas for v in meta.values()):
            raise ApiError(500, "GenericServerError", type="BulkIndexError",
                           message="mapper_parsing_exception: non-finite number in metadata")
        with self.lock:
            ds = self.datasets.get((ws, name))
        if ds is None:
            if not self.m["create_on_bulk"]:
                raise ApiError(404, "EntityNotFoundError", name=name, type="ServiceDataset")
            time.sleep(self.create_window_s)  # add the dataset document, then re-create the index
            with self.lock:
                ds = self._new_dataset(ws, name, payload.get("tags"), payload.get("metadata"))
        with self.lock:
            ds = self.datasets.get((ws, name), ds)
            ds["tags"].update(payload.get("tags") or {})
            keys = ds["metadata_keys"] | {k for meta in metas for k in meta}
            if len(keys) > 50:
                raise ApiError(400, "MetadataLimitExceededError", length=len(keys), limit=50)
            ds["metadata_keys"] = keys
            for r, meta in zip(records, metas):
                self._store(ds, name, r, meta)
        return 200, {"dataset": name, "processed": len(records), "failed": 0}

    def _store(self, ds: dict, name: str, r: dict, meta: dict) -> None:
        rid = str(r.get("id") or uuid.uuid4())
        meta = {k: (v[-128:] if self.m["cut"] and isinstance(v, str) else v) for k, v in meta.items() if v is not None}
        new = {k: v for k, v in r.items() if v is not None}
        new.update(id=rid, metadata=meta, status=r.get("status") or "Default")
        new["_annotated_by"] = [r["annotation"]["agent"]] if r.get("annotation") else []
        old = ds["records"].get(rid)
        if old is not None and not self.m["replace"]:  # upsert: keeps what is left out, except status
            new = {**old, **new, "metadata": {**old.get("metadata", {}), **meta}}
        ds["records"][rid] = new
        self.writes[name][rid] += 1

    def _select(self, ds: dict, q: dict) -> list[dict]:
        rows = sorted(ds["records"].values(), key=lambda r: r["id"])
        if q.get("ids"):
            wanted = {str(i) for i in q["ids"]}
            rows = [r for r in rows if r["id"] in wanted]
        if q.get("status"):
            rows = [r for r in rows if r.get("status") in q["status"]]
        if q.get("query_text"):
            rows = [r for r in rows if _query_text(r, q["query_text"])]
        return rows

    def render(self, r: dict) -> dict:
        """A stored record as this flavor's reads return it."""
        doc = {k: v for k, v in r.items() if not k.startswith("_") and (v is not None or k == "status")}
        if self.m["label_key"] == "class":  # Rubrix 0.x /data: the record model, by alias
            return doc
        for what in ("prediction", "annotation"):
            if r.get(what):
                labels = [{"class_label": x["class"], "score": x.get("score", 1.0)} for x in r[what]["labels"]]
                doc[what] = {"agent": r[what]["agent"], "labels": labels}
                doc[what + "s"] = {r[what]["agent"]: {"labels": labels}}
        doc["predicted_by"] = [r["prediction"]["agent"]] if r.get("prediction") else []
        doc["annotated_by"] = r.get("_annotated_by", [])
        doc.update(text="\n".join(r["inputs"].values()), metrics={}, last_updated="2024-01-01T00:00:00")
        return doc

    def _data(self, ws, name, query, body):
        limit = int((query.get("limit") or ["0"])[0]) or None
        id_from = (query.get("id_from") or [None])[0]
        with self.lock:
            rows = self._select(self._dataset(ws, name), body)
            error, self.stream_errors = self.stream_errors > 0, max(0, self.stream_errors - 1)
        rows = [r for r in rows if id_from is None or r["id"] > id_from][:limit]
        if error:
            rows = rows[:self.stream_error_after]
        out = b"".join(json.dumps(self.render(r)).encode() + b"\n" for r in rows)
        if error:  # StreamingResponseWithErrorHandling: the error body after what was streamed
            out += json.dumps({"detail": {"code": "rubrix.api.errors::GenericServerError",
                                          "params": {"message": "ConnectionTimeout caused by ReadTimeout"}}}).encode()
        return 200, out

    def _search(self, ws, name, query, body):
        limit = int((query.get("limit") or ["100"])[0])
        if not 0 <= limit <= 1000:
            raise ApiError(422, "ValidationError", field="limit", message="ensure this value is <= 1000")
        after, fields = body.get("next_idx"), body.get("fields")
        with self.lock:
            rows = self._select(self._dataset(ws, name), body.get("query") or {})
        rows = [self.render(r) for r in rows if after is None or r["id"] > after][:limit]
        if fields:
            rows = [{k: r[k] for k in fields if k in r} for r in rows]
        return 200, {"records": rows, "next_idx": rows[-1]["id"] if rows and "id" in rows[-1] else after,
                     "next_page_cfg": "{}"}


RANGE_RE = re.compile(r"^metadata\.([^:\s]+):\[(\S+) TO (\S+)\]$")


def _query_text(r: dict, text: str) -> bool:
    """Elasticsearch's query string, as far as a metadata range goes (``metadata.KEY:[LO TO HI]``, ``*`` for
    open, bounds included): the UI's and the client's way of filtering 1.x records by a number."""
    m = RANGE_RE.match(text.strip())
    if not m:
        raise ApiError(400, "QueryNotSupported", message=f"this test server parses metadata ranges only: {text!r}")
    v = (r.get("metadata") or {}).get(m.group(1))
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    lo, hi = (None if b == "*" else float(b) for b in m.groups()[1:])
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _err(msg: str, i: int):
    return ApiError(422, "ValidationError", record=i, message=msg)


def _validate_task(ann, i: int, what: str, multi: bool) -> None:
    if not isinstance(ann, dict) or not isinstance(ann.get("labels"), list):
        raise _err(f"{what} must be {{agent, labels}}", i)
    agent = ann.get("agent")
    if not isinstance(agent, str) or not agent or len(agent) > 64:
        raise _err(f"{what}: Agent must be defined! (a string of 1-64 characters)", i)
    for lab in ann["labels"]:
        c, s = lab.get("class"), lab.get("score", 1.0)
        if not isinstance(c, str) or not 1 <= len(c) <= 128:
            raise _err(f"{what} label class must be 1-128 characters", i)
        if not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise _err(f"{what} score must be in [0, 1]", i)
    total = sum(lab.get("score", 1.0) for lab in ann["labels"])
    if what == "prediction" and not multi and total > 1.001:
        raise _err(f"Wrong score distributions: {total}", i)
    if what == "annotation" and not multi and len(ann["labels"]) != 1:
        raise _err("Single label record must include only one annotation label", i)


def validate_bulk(payload) -> list[dict]:
    """The TextClassificationBulkRequest rules of the real servers; 422 ``ValidationError`` otherwise."""
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ApiError(422, "ValidationError", message="records: field required")
    tags = payload.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ApiError(422, "ValidationError", message="tags must map str to str")
    if not isinstance(payload.get("metadata") or {}, dict):
        raise ApiError(422, "ValidationError", message="metadata must be a dict")
    records = payload["records"]
    if len({bool(r.get("multi_label", False)) for r in records if isinstance(r, dict)}) > 1:
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
        multi = r.get("multi_label", False)
        if not isinstance(multi, bool):
            raise _err("multi_label must be a bool", i)
        if r.get("status") is not None and r["status"] not in STATUSES:
            raise _err(f"status must be one of {sorted(STATUSES)}", i)
        if r.get("status") == "Validated" and not multi and not r.get("annotation"):
            raise _err("Annotation must include some label for validated records", i)
        for what in ("prediction", "annotation"):
            if r.get(what) is not None:
                _validate_task(r[what], i, what, multi)
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
            query = parse_qs(u.query)
            is_bulk = u.path.endswith(":bulk")
            entry = {"method": method, "path": u.path, "query": query, "headers": dict(self.headers)}
            if body and not is_bulk:
                try:
                    entry["body"] = json.loads(body)
                except ValueError:
                    pass
            server.requests.append(entry)
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
                    server.fail_count -= fail
                if fail:
                    return self._send(server.fail_status, {"detail": responses.get(server.fail_status, "Error")})
                try:
                    status, out = server.handle(method, u.path, query, self.headers, body)
                except RouteError as e:
                    return self._send(e.status, {"detail": responses[e.status]})
                except ApiError as e:
                    code = f"{server.m['prefix']}.api.errors::{e.error}"
                    return self._send(e.status, {"detail": {"code": code, "params": e.params}})
                if is_bulk:
                    if server.respond_delay_s:
                        time.sleep(server.respond_delay_s)
                    with server.lock:
                        lose = server.lose_count > 0
                        server.lose_count -= lose
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
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_DELETE(self):
            self._serve("DELETE")

    return Handler


# -- test data: an annotation-job output directory, as the annotation job writes it -------------
LABELS = ["política", "economía", "cultura", "sociedad", "deportes", "tecnología"]
MODEL = "Recognai/zeroshot_selectra_medium"


def make_output(path, n: int = 600, *, multi_label: bool = False, empty_every: int = 50,
                files: int = 2, long_url: bool = False, extra_cols: int = 0, columns: dict | None = None):
    """Write ``path/part-*.parquet`` + ``_zs_ray_manifest.json`` with ``n`` MLSum-like rows.

    Every ``empty_every``-th row has an empty summary and null predictions (must not be logged).
    ``columns`` adds source columns: name -> ``n`` values (a list or a pyarrow array). Returns the ids
    to be logged.
    """
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
    table = pa.Table.from_pylist(rows)
    for name, values in (columns or {}).items():
        table = table.append_column(name, values if isinstance(values, pa.Array) else pa.array(values))
    per = math.ceil(n / files)
    for f in range(files):
        if f * per < n:
            pq.write_table(table.slice(f * per, per), out / f"part-{f:03d}.parquet")
    (out / "README.txt").write_text("not parquet")
    manifest = {"model": MODEL, "text_field": "summary", "multi_label": multi_label,
                "candidate_labels": LABELS, "hypothesis_template": "Esta noticia habla de {}.",
                "rows": n, "skipped": n - len(logged)}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return logged


if __name__ == "__main__":  # python tests/rubrix_server.py [mode] [respond_delay_s] [api_key]
    import sys

    srv = RubrixTestServer(sys.argv[1] if len(sys.argv) > 1 else "rubrix-0.18",
                           api_key=sys.argv[3] if len(sys.argv) > 3 else None)
    srv.respond_delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    print(srv.url, flush=True)
    srv._httpd.serve_forever()
