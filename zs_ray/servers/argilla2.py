"""Argilla 2.x: the ``/api/v1`` API (datasets with fields, questions and metadata properties; records
with suggestions and responses), behind the same settings as Rubrix 0.x / Argilla 1.x.

The HTTP plumbing is ``client.RubrixClient`` (one attempt per call, the key headers, redaction of the
key in every message) and the one retry layer is ``client.with_retries``; this module only knows the 2.x
routes and bodies. What zs-ray does on 2.x, and why:

* **Dataset**: one per run, looked up by name in the workspace. The first time it is created with a
  ``text`` field, a ``label`` question whose options are the candidate labels (``label_selection``, or
  ``multi_label_selection`` in multi-label mode), a terms/integer/float metadata property per metadata
  column and a float one per label's score (``score_<label>``, titled with the label) and for the margin and
  entropy (``records.with_scores``), then published (fields and questions are frozen from then on). A dataset left unpublished by a
  crash is completed. One that exists with another question type or other labels is refused (one line).
* **Records**: ``PUT /datasets/{id}/records/bulk`` (at most 500 items per request), the row id as
  ``external_id``, the prediction as a ``model`` suggestion of the ``label`` question (the top label and its
  score; in multi-label mode every label scoring at least 0.5, else the top one, with their scores), the
  model as agent (made to fit the server's agent rule), the text as the ``text`` field, the metadata.
  The server upserts by ``external_id``: a record sent again is updated (suggestion replaced per
  question, fields and metadata rewritten with the same values), never duplicated, and its responses
  (submitted, draft, discarded: a person's work) are kept because the request carries none. So a chunk is
  simply re-sent on a 5xx or transport error (``with_retries``): the 500 the server answers when two
  requests create the same new ``external_id`` at once (a unique-constraint race) is one of those. One
  invalid item makes the server refuse the whole request (422, never retried), so every item is checked
  here before sending.
* **Overlap** (``--min-submitted K``): the dataset's task distribution (``{"strategy": "overlap",
  "min_submitted": K}``), set when it is created and PATCHed when an existing one has another.
* **Pull** (``argilla2_pull``): ``GET /datasets/{id}/records`` by offset (1000 a page) with suggestions and responses, to the
  same Parquet schema as 1.x: the suggestion is the prediction, every response in the ``responses`` column,
  the consensus of the submitted ones the annotation (else the first draft, else a discarded one; see
  ``pull``), and the status mapped to 1.x's names (any submitted -> Validated, else draft -> Edited,
  discarded -> Discarded, none -> Default).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field

from zs_ray.errors import ZsRayError
from zs_ray.servers.client import RubrixClient, RubrixError, client_for, with_retries
from zs_ray.servers.config import SendConfig, ServerConfig

TEXT_FIELD = "text"
QUESTION = "label"
BULK_MAX = 500
PAGE_MAX = 1000
MULTI_LABEL_THRESHOLD = 0.5
AGENT_MAX = 200
# The server's own rule for a suggestion's agent (argilla_server.api.schemas.v1.suggestions.AGENT_REGEX).
AGENT_RE = re.compile(r"^[a-zA-Z0-9\-_:./\s]*[a-zA-Z0-9][a-zA-Z0-9\-_:./\s]*$")
OPTION_MAX = 200
OPTIONS_MIN, OPTIONS_MAX = 2, 500


def sanitise_agent(agent: str) -> str:
    """``agent`` as the server accepts it: accents dropped, characters outside ``[A-Za-z0-9-_:./ ]`` become
    ``-``, at most 200 characters. A name with no letter or digit left is refused (one line)."""
    text = unicodedata.normalize("NFKD", agent or "").encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9\-_:./ ]", "-", text).strip()[:AGENT_MAX]
    if not AGENT_RE.match(text):
        raise ZsRayError(f"prediction agent {agent!r} has no letter or digit the Argilla server accepts: "
                         "set --rubrix-agent")
    return text


@dataclass
class Target:
    """The 2.x dataset a run writes to, and how a row's record becomes one bulk item."""

    dataset_id: str
    question_id: str
    multi_label: bool
    labels: tuple[str, ...]
    agent: str
    metadata_types: dict[str, str] = field(default_factory=dict)
    existed: bool = False

    def item(self, record: dict) -> dict:
        """A 1.x-shaped record from ``records.build_records`` -> one checked 2.x bulk item."""
        rid = record["id"]
        text = record["inputs"]["text"]
        if not isinstance(text, str) or not text:
            raise ZsRayError(f"record {rid!r}: empty text")
        labels = [x["class"] for x in record["prediction"]["labels"]]
        scores = [x["score"] for x in record["prediction"]["labels"]]
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise ZsRayError(f"record {rid!r}: label(s) {unknown} are not options of the dataset's label question "
                             f"({', '.join(self.labels)})")
        for s in scores:
            if not (isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0):
                raise ZsRayError(f"record {rid!r}: score {s!r} is not in [0, 1]")
        best = max(range(len(scores)), key=scores.__getitem__)
        if self.multi_label:
            keep = [k for k in sorted(range(len(scores)), key=lambda k: -scores[k])
                    if scores[k] >= MULTI_LABEL_THRESHOLD] or [best]
            value, score = [labels[k] for k in keep], [scores[k] for k in keep]
        else:
            value, score = labels[best], scores[best]
        metadata = {}
        for name, v in record.get("metadata", {}).items():
            kind = self.metadata_types.get(name)
            if kind == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v)
            elif kind == "integer" and not (isinstance(v, int) and not isinstance(v, bool)):
                raise ZsRayError(f"record {rid!r}: metadata {name!r} = {v!r} is not an integer")
            metadata[name] = v
        return {"external_id": rid, "fields": {TEXT_FIELD: text}, "metadata": metadata,
                "suggestions": [{"question_id": self.question_id, "value": value, "score": score,
                                 "agent": self.agent, "type": "model"}]}

    def encode(self, record: dict) -> bytes:
        return json.dumps(self.item(record), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def bulk_body(encoded: list[bytes]) -> bytes:
    return b'{"items":[' + b",".join(encoded) + b"]}"


# ---------------------------------------------------------------------------------------------
# Connection: key, workspace, dataset (``connect.connect`` calls this for a 2.x server)
# ---------------------------------------------------------------------------------------------
@dataclass
class Session:
    workspace: dict
    dataset: dict | None
    user: dict


def open_session(client: RubrixClient, config: ServerConfig) -> Session:
    """Check the key and the workspace, find the dataset (None if there is none). One ``ZsRayError`` line for
    what the user can fix; ``RubrixError`` for the rest (the caller words it)."""
    try:
        me = with_retries(config, lambda: client.request("GET", "/api/v1/me").json())
    except RubrixError as exc:
        if exc.status in (401, 403) and not exc.front:
            default = "" if config.rubrix_api_key is not None else (
                f" (no key was given, so the default {config.api_key_for('argilla2')} was tried: set ARGILLA_API_KEY)")
            raise ZsRayError(f"the Argilla server refused the API key: {exc}{default}") from None
        raise
    user = {"id": me.get("id"), "username": me.get("username"), "role": me.get("role")}  # never keep its api_key
    spaces = with_retries(config, lambda: client.request("GET", "/api/v1/me/workspaces").json()).get("items") or []
    names = sorted(w["name"] for w in spaces)
    if config.rubrix_workspace:
        found = [w for w in spaces if w["name"] == config.rubrix_workspace]
        if not found:
            raise ZsRayError(f"workspace {config.rubrix_workspace!r} is not one of yours on {config.public_url}: "
                             f"{', '.join(names) or 'none'} (an owner creates workspaces in Argilla)")
        workspace = found[0]
    elif len(spaces) == 1:
        workspace = spaces[0]
    else:
        raise ZsRayError(f"Argilla needs a workspace: set --rubrix-workspace or ARGILLA_WORKSPACE "
                         f"(yours: {', '.join(names) or 'none'})")
    found = with_retries(config, lambda: client.request(
        "GET", "/api/v1/me/datasets", params={"workspace_id": workspace["id"],
                                              "name": config.rubrix_dataset}).json()).get("items") or []
    found = [d for d in found if d.get("name") == config.rubrix_dataset and d.get("workspace_id") == workspace["id"]]
    return Session(workspace, found[0] if found else None, user)


# ---------------------------------------------------------------------------------------------
# Dataset settings
# ---------------------------------------------------------------------------------------------
def metadata_types(dataset, fields) -> dict[str, str]:
    """Metadata property type per metadata column: integer, float, else terms (strings, dates, booleans)."""
    import pyarrow as pa

    out = {}
    for name in fields:
        t = dataset.schema.field(name).type if name in dataset.schema.names else pa.string()
        if pa.types.is_dictionary(t):
            t = t.value_type
        out[name] = "integer" if pa.types.is_integer(t) else \
            "float" if (pa.types.is_floating(t) or pa.types.is_decimal(t)) else "terms"
    return out


def distribution(min_submitted: int) -> dict:
    """The task distribution under which a record is completed once ``min_submitted`` people submitted."""
    return {"strategy": "overlap", "min_submitted": int(min_submitted)}


def check_labels(labels: list[str]) -> None:
    if not OPTIONS_MIN <= len(labels) <= OPTIONS_MAX:
        raise ZsRayError(f"an Argilla 2.x label question takes {OPTIONS_MIN}-{OPTIONS_MAX} labels, not {len(labels)}")
    for label in labels:
        if not 1 <= len(label) <= OPTION_MAX:
            raise ZsRayError(f"label {label[:40]!r} must be 1-{OPTION_MAX} characters on Argilla 2.x")


def prepare(client: RubrixClient, config: SendConfig, session: Session, labels: list[str], multi_label: bool,
            agent: str, meta_types: dict[str, str], dataset_metadata: dict | None = None,
            titles: dict[str, str] | None = None) -> Target:
    """The dataset ready to take records: created, set up and published the first time (a draft left by a
    crash is completed); an existing one checked against ``labels`` and the question type (refused, one line,
    if they differ); metadata properties added where missing (the server takes new ones on a published dataset: a dataset made
    before the score properties gets them). Every step is safe to repeat."""
    check_labels(labels)
    kind = "multi_label_selection" if multi_label else "label_selection"
    r = lambda op: with_retries(config, op)  # noqa: E731
    dataset, existed = session.dataset, session.dataset is not None
    name = config.rubrix_dataset
    if dataset is None:
        body = {"name": name, "workspace_id": session.workspace["id"],
                "guidelines": "Zero-shot predictions by zs-ray: check or correct the suggested label.",
                "metadata": {"zs_ray": {"tags": config.rubrix_tags, **(dataset_metadata or {})}}}
        if config.min_submitted:
            body["distribution"] = distribution(config.min_submitted)
        try:
            dataset = r(lambda: client.request("POST", "/api/v1/datasets", json_body=body, ok=(201,)).json())
        except RubrixError as exc:
            if exc.status != 409:  # created meanwhile by another run: use it
                raise
            dataset = open_session(client, config).dataset
            if dataset is None:
                raise
    did = dataset["id"]
    base = f"/api/v1/datasets/{did}"
    if config.min_submitted and dataset.get("distribution") != distribution(config.min_submitted):
        r(lambda: client.request("PATCH", base, json_body={"distribution": distribution(config.min_submitted)}))
    fields = r(lambda: client.request("GET", f"{base}/fields").json())["items"]
    questions = r(lambda: client.request("GET", f"{base}/questions").json())["items"]
    props = r(lambda: client.request("GET", f"/api/v1/me/datasets/{did}/metadata-properties").json())["items"]
    published = dataset.get("status") == "ready"

    field_names = {f["name"] for f in fields}
    if TEXT_FIELD not in field_names:
        if published:
            raise ZsRayError(f"dataset {name} exists without a {TEXT_FIELD!r} field (its fields: "
                             f"{', '.join(sorted(field_names))}): it was not made by zs-ray; choose another "
                             "--rubrix-dataset")
        r(lambda: client.request("POST", f"{base}/fields", ok=(201,), json_body={
            "name": TEXT_FIELD, "title": "Text", "required": True, "settings": {"type": "text"}}))
    question = next((q for q in questions if q["name"] == QUESTION), None)
    if question is None:
        if published:
            raise ZsRayError(f"dataset {name} exists without a {QUESTION!r} question: it was not made by zs-ray; "
                             "choose another --rubrix-dataset")
        question = r(lambda: client.request("POST", f"{base}/questions", ok=(201,), json_body={
            "name": QUESTION, "title": "Labels" if multi_label else "Label", "required": True,
            "settings": {"type": kind, "options": [{"value": x, "text": x} for x in labels]}}).json())
    theirs_kind = question["settings"]["type"]
    theirs = [o["value"] for o in question["settings"].get("options") or []]
    if theirs_kind != kind or sorted(theirs) != sorted(labels):
        raise ZsRayError(
            f"dataset {name} exists with a {theirs_kind} question of labels [{', '.join(theirs)}], not a {kind} "
            f"question of [{', '.join(labels)}]: choose another --rubrix-dataset (records are never mixed)")
    have = {p["name"]: p["settings"]["type"] for p in props}
    for mname, mtype in meta_types.items():
        if mname in have:
            if have[mname] != mtype:
                raise ZsRayError(f"dataset {name}: metadata property {mname!r} is {have[mname]}, not {mtype}: "
                                 "leave it out with --rubrix-metadata-fields or choose another --rubrix-dataset")
            continue
        try:
            r(lambda: client.request("POST", f"{base}/metadata-properties", ok=(201,), json_body={
                "name": mname, "title": (titles or {}).get(mname, mname), "settings": {"type": mtype}, "visible_for_annotators": True}))
        except RubrixError as exc:
            if exc.status != 409:
                raise
    if not published:
        r(lambda: client.request("PUT", f"{base}/publish", ok=(200,)))
    return Target(did, question["id"], multi_label, tuple(labels), agent, dict(meta_types), existed)


# ---------------------------------------------------------------------------------------------
# Sender: runs in a Ray task (see ``ingest._send_all``), one chunk per call
# ---------------------------------------------------------------------------------------------
def send_chunk(config: SendConfig, dataset_id: str, ids: list[str], encoded: list[bytes]) -> dict:
    """Upsert one chunk (a bulk PUT by external_id; re-sending it is harmless, see the module doc), retried
    on a 5xx or transport error. Returns what ``ingest.send_chunk`` returns."""
    cpu0 = time.process_time()
    client = client_for(config)
    out = {"sent": [], "present": [], "failed": [], "error": None, "status": None}
    body = bulk_body(encoded)
    try:
        with_retries(config, lambda: client.request("PUT", f"/api/v1/datasets/{dataset_id}/records/bulk",
                                                    data=body, ok=(200,)))
        out["sent"] = list(ids)
    except RubrixError as exc:
        out["failed"], out["error"], out["status"] = list(ids), str(exc), exc.status
    out["cpu_s"] = time.process_time() - cpu0
    return out
