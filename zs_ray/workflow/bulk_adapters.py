"""The server side of ``zs-ray bulk-label`` (``bulk``) and of ``zs-ray log --update-suggestions`` (``suggest``): one
adapter per server API, behind one small contract (``Adapter``: read all, read some, annotate, restore, suggest). ``V1Adapter`` speaks Rubrix 0.x / Argilla 1.x (whole
records through ``:bulk``), ``V2Adapter`` Argilla 2.x (responses of the key's user); ``adapter_for`` picks one
once the server has said which it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

from zs_ray.errors import ZsRayError

UNTOUCHED_STATUSES = (None, "Default")
BULK_AGENT_HINT = "the bulk agent (zs-ray-bulk)"
# The metadata that marks a record of the audit sample (``audit``): kept for a person, never bulk-labelled.
AUDIT_KEY, AUDIT_VALUE = "zs_ray_audit", "audit"


@dataclass
class Rec:
    """A record as bulk-label needs it: top prediction, whether anyone touched it, and its restorable state."""

    id: str
    label: Optional[str]
    score: float
    annotated: bool
    annotation_agent: Optional[str]
    annotation_labels: Optional[list]
    status: Optional[str]
    state: dict  # the record as a request would send it (what undo puts back)
    audit: Optional[str] = None  # its audit mark (metadata ``zs_ray_audit``), if any
    agent: Optional[str] = None  # the prediction's (suggestion's) agent
    metadata: Optional[dict] = None  # the record's metadata as stored

    @property
    def untouched(self) -> bool:
        return not self.annotated and self.status in UNTOUCHED_STATUSES


class Adapter(Protocol):
    """The server-specific part of bulk-label."""

    name: str
    replaces: bool  # whether a re-sent record replaces the stored one (else fields left out are kept)

    def read_all(self) -> Iterator[Rec]: ...
    def read(self, ids: list[str]) -> dict[str, Rec]: ...
    def annotate(self, recs: list[Rec], labels: dict[str, str], agent: str, status: str) -> None: ...
    def can_restore(self) -> Optional[str]: ...
    def author(self, agent: str) -> str: ...
    def restore(self, states: list[dict]) -> None: ...
    def mark(self, recs: list[Rec], value: str) -> None: ...
    def suggest(self, recs: list[Rec], records: dict[str, dict], target=None) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# Rubrix 0.x / Argilla 1.x
# ---------------------------------------------------------------------------------------------------------
KEEP = ("id", "inputs", "prediction", "annotation", "status", "metadata", "multi_label", "event_timestamp")


def _request_labels(value: Optional[dict], agent: Optional[str]) -> Optional[dict]:
    from zs_ray.servers.pull import _labels

    if value is None:
        return None
    classes, scores = _labels(value)
    return {"agent": agent, "labels": [{"class": c, "score": s} for c, s in zip(classes, scores)]}


def request_form(r: dict) -> dict:
    """A record as read (Rubrix 0.x: as sent; Argilla 1.2+: the stored document) -> as a bulk request sends it."""
    from zs_ray.servers.pull import _one

    pred, pred_agent = _one(r.get("prediction") or r.get("predictions"))
    ann, ann_agent = _one(r.get("annotation") or r.get("annotations"))
    out = {k: r[k] for k in KEEP if k in r and r[k] is not None and k not in ("prediction", "annotation")}
    out["id"] = str(r.get("id"))
    if "inputs" not in out and "text" in r:
        out["inputs"] = {"text": r["text"]}
    if pred is not None:
        out["prediction"] = _request_labels(pred, pred_agent or (r.get("predicted_by") or [None])[0])
    if ann is not None:
        out["annotation"] = _request_labels(ann, ann_agent or (r.get("annotated_by") or [None])[0])
    return out


def to_rec(r: dict) -> Rec:
    state = request_form(r)
    pred = state.get("prediction")
    label, score = None, float("nan")
    if pred and pred["labels"]:
        best = max(pred["labels"], key=lambda x: x["score"])
        label, score = best["class"], float(best["score"])
    ann = state.get("annotation")
    return Rec(state["id"], label, score, ann is not None, ann and ann.get("agent"),
               ann and [x["class"] for x in ann["labels"]], state.get("status"), state,
               audit=(state.get("metadata") or {}).get(AUDIT_KEY), agent=pred and pred.get("agent"),
               metadata=state.get("metadata") or {})


class V1Adapter:
    """Rubrix 0.x / Argilla 1.x (``servers.v1``): reads with ``iter_records``, writes with ``:bulk`` (a whole
    record)."""

    def __init__(self, config, client, info):
        self.config, self.client, self.info = config, client, info
        self.name = f"{self.info.generation} {self.info.version}"
        # Rubrix 0.x and Argilla < 1.7 replace a re-sent record; 1.7+ upsert (fields left out are kept).
        self.replaces = self.info.generation == "rubrix" or self.info.version_tuple[:2] < (1, 7)

    def close(self) -> None:
        self.client.close()

    def read_all(self) -> Iterator[Rec]:
        from zs_ray.servers import v1

        for r in v1.iter_records(self.client, None, retry=True):
            yield to_rec(r)

    def read(self, ids: list[str]) -> dict[str, Rec]:
        from zs_ray.servers import v1

        # One attempt (the caller's operation is what is retried).
        return {rec.id: rec for rec in map(to_rec, v1.iter_records(self.client, {"ids": list(ids)}))}

    def _send(self, records: list[dict]) -> None:
        from zs_ray.servers import records as rec
        from zs_ray.servers import v1
        from zs_ray.servers.client import RubrixError

        answer = v1.bulk(self.client, rec.bulk_body([json.dumps(r, ensure_ascii=False).encode() for r in records], {}))
        if answer.get("failed"):
            raise RubrixError(f"server reported {answer['failed']} failed records", status=500)

    def annotate(self, recs: list[Rec], labels: dict[str, str], agent: str, status: str) -> None:
        self._send([{**r.state, "annotation": {"agent": agent, "labels": [{"class": labels[r.id], "score": 1.0}]},
                     "status": status} for r in recs])

    def author(self, agent: str) -> str:
        """Who a bulk annotation is recorded as: the agent sent."""
        return agent

    def can_restore(self) -> Optional[str]:
        """None if ``restore`` can put a record back exactly; else why not."""
        if self.replaces:
            return None
        return (f"{self.name} keeps the fields a re-sent record leaves out (Argilla 1.7+ upserts), so a bulk "
                "annotation cannot be taken back through :bulk without deleting the record")

    def restore(self, states: list[dict]) -> None:
        self._send(states)  # a replacing server stores exactly the state sent

    def mark(self, recs: list[Rec], value: str) -> None:
        """The audit mark: the record as read, with the metadata ``zs_ray_audit`` added (nothing else changes)."""
        self._send([{**r.state, "metadata": {**(r.state.get("metadata") or {}), AUDIT_KEY: value}} for r in recs])

    def suggest(self, recs: list[Rec], records: dict[str, dict], target=None) -> None:
        """Replace the prediction of ``recs`` by that of ``records`` (id -> a record as ``records.build_records``
        makes it), the record otherwise as read (its metadata updated with the new record's)."""
        self._send([{**r.state, "prediction": records[r.id]["prediction"],
                     "metadata": {**(r.state.get("metadata") or {}), **records[r.id]["metadata"]}} for r in recs])


# ---------------------------------------------------------------------------------------------------------
# Argilla 2.x
# ---------------------------------------------------------------------------------------------------------
V2_STATUS = {"Validated": "submitted", "Edited": "draft"}


class V2Adapter:
    """Argilla 2.x (``/api/v1``, via ``zs_ray.servers.argilla2``): a bulk label is a response of the key's user to
    the ``label`` question (``POST /api/v1/me/responses/bulk``); undo deletes that response. A response always
    belongs to the key's user, so the "agent" is that user: give bulk-label the key of a user kept for it
    (e.g. one named zs-ray-bulk), never a person's own key, or its bulk labels look like that person's."""

    replaces = True

    def __init__(self, config, client, info, single_label_only: bool = True):
        from zs_ray.servers import argilla2_pull as argilla2  # the 2.x reads (and its QUESTION)
        from zs_ray.servers.client import with_retries

        self.config, self.client, self.a2 = config, client, argilla2
        self.session = client.argilla2
        self.name = f"argilla {info.version}"
        self.user = self.session.user
        did = self.session.dataset["id"]
        questions = with_retries(config, lambda: client.request("GET", f"/api/v1/datasets/{did}/questions").json())
        question = next((q for q in questions["items"] if q["name"] == argilla2.QUESTION), None)
        if question is None:
            raise ZsRayError(f"dataset {config.rubrix_dataset} has no {argilla2.QUESTION!r} question: not made by zs-ray")
        if single_label_only and question["settings"]["type"] != "label_selection":
            raise ZsRayError("bulk-label handles single-label datasets only")
        self.question_id = str(question["id"])
        self.names = argilla2.usernames(client, config, self.session)
        self.internal: dict[str, str] = {}  # external id -> record id
        self._listed = False

    def close(self) -> None:
        self.client.close()

    def can_restore(self) -> Optional[str]:
        return None

    def author(self, agent: str) -> str:
        """A response's author is the key's user, whatever the agent asked for."""
        return self.user["username"]

    def _rec(self, r: dict) -> Rec:
        row = self.a2.to_row(r, self.question_id, False, self.names)
        self.internal[row["id"]] = str(r["id"])
        responses = sorted(({"user": self.names.get(str(x.get("user_id")), str(x.get("user_id"))),
                             "status": x.get("status"), "values": x.get("values")}
                            for x in r.get("responses") or []), key=lambda x: (x["user"], str(x["status"])))
        metadata = r.get("metadata") or {}
        state = {"id": row["id"], "record_id": str(r["id"]), "responses": responses, "metadata": metadata}
        label, score = None, float("nan")
        if row["prediction_labels"]:
            label, score = row["prediction_labels"][0], (row["prediction_scores"] or [float("nan")])[0]
        status = row["status"] if responses else "Default"
        return Rec(row["id"], label, float(score), bool(responses), row["annotation_agent"],
                   row["annotation_labels"], status, state, audit=metadata.get(AUDIT_KEY),
                   agent=row["prediction_agent"], metadata=r.get("metadata") or {})

    def read_all(self) -> Iterator[Rec]:
        for r in self.a2.iter_records(self.client, self.config, self.session.dataset["id"]):
            yield self._rec(r)

    def read(self, ids: list[str]) -> dict[str, Rec]:
        if any(i not in self.internal for i in ids) and not self._listed:  # (undo): learn the record ids once
            for _ in self.read_all():
                pass
            self._listed = True  # (only once the listing is complete: a failed one is tried again)
        out = {}
        for i in ids:
            rid = self.internal.get(i)
            if rid is None:
                continue
            r = self.client.request("GET", f"/api/v1/records/{rid}").json()
            out[i] = self._rec(r)
        return out

    def annotate(self, recs: list[Rec], labels: dict[str, str], agent: str, status: str) -> None:
        from zs_ray.servers.client import RubrixError

        for start in range(0, len(recs), 100):  # the server's most items per request
            items = [{"record_id": self.internal[r.id], "status": V2_STATUS[status],
                      "values": {self.a2.QUESTION: {"value": labels[r.id]}}} for r in recs[start:start + 100]]
            answer = self.client.request("POST", "/api/v1/me/responses/bulk", json_body={"items": items}).json()
            errors = [x["error"]["detail"] for x in answer.get("items") or [] if x.get("error")]
            if errors:
                raise RubrixError(f"{len(errors)} responses refused: {errors[0]}", status=422)

    def suggest(self, recs: list[Rec], records: dict[str, dict], target=None) -> None:
        """Replace the ``label`` suggestion of ``recs`` by that of ``records`` (checked 2.x items from ``target``,
        an ``argilla2.Target``), metadata updated: a bulk upsert by external_id without fields and without
        responses, which keeps the record's fields and every response (the server replaces suggestions per
        question, and the metadata as a whole: hence the merge)."""
        from zs_ray.servers.argilla2 import BULK_MAX, bulk_body

        items = []
        for r in recs:
            item = target.item(records[r.id])
            items.append(json.dumps({"external_id": r.id, "metadata": {**(r.metadata or {}), **item["metadata"]},
                                     "suggestions": item["suggestions"]}, ensure_ascii=False).encode())
        did = self.session.dataset["id"]
        for start in range(0, len(items), BULK_MAX):
            self.client.request("PUT", f"/api/v1/datasets/{did}/records/bulk",
                                data=bulk_body(items[start:start + BULK_MAX]), ok=(200,))

    def restore(self, states: list[dict]) -> None:
        # Undo puts back only records whose responses were none but ours: delete this user's response, and
        # put the metadata back (an audit mark) where it differs.
        for s in states:
            r = self.client.request("GET", f"/api/v1/records/{s['record_id']}").json()
            for x in r.get("responses") or []:
                if str(x.get("user_id")) == str(self.user["id"]):
                    self.client.request("DELETE", f"/api/v1/responses/{x['id']}")
            if "metadata" in s and (r.get("metadata") or {}) != s["metadata"]:
                self.client.request("PATCH", f"/api/v1/records/{s['record_id']}", json_body={"metadata": s["metadata"]})

    def mark(self, recs: list[Rec], value: str) -> None:
        """The audit mark: the metadata ``zs_ray_audit`` (a terms property, made once, visible to annotators, so
        they can filter on it) added to the record; it stays pending, with its suggestion."""
        from zs_ray.servers.client import RubrixError

        if recs and not getattr(self, "_audit_property", False):
            try:
                self.client.request("POST", f"/api/v1/datasets/{self.session.dataset['id']}/metadata-properties",
                                    ok=(201,), json_body={"name": AUDIT_KEY, "title": "zs-ray audit",
                                                          "settings": {"type": "terms"}, "visible_for_annotators": True})
            except RubrixError as exc:
                if exc.status != 409:  # made already
                    raise
            self._audit_property = True
        for r in recs:
            self.client.request("PATCH", f"/api/v1/records/{self.internal[r.id]}",
                                json_body={"metadata": {**r.state["metadata"], AUDIT_KEY: value}})


def adapter_for(config, single_label_only: bool = True) -> Adapter:
    """The adapter of the server at ``config``: ``V1Adapter`` for Rubrix 0.x / Argilla 1.x, ``V2Adapter`` for
    Argilla 2.x (bulk-label: single-label datasets only)."""
    from zs_ray.servers.connect import connect

    client, info, existed = connect(config)
    if not existed:
        client.close()
        raise ZsRayError(f"dataset {config.rubrix_dataset} does not exist on {config.public_url}")
    if info.generation == "argilla2":
        return V2Adapter(config, client, info, single_label_only)
    return V1Adapter(config, client, info)
