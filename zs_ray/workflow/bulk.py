"""``zs-ray bulk-label``: annotate, on the server, the records whose top prediction scores at or above its
label's threshold; dry run by default, ``--apply`` to write, ``--undo`` to take back exactly what was written.

What is never touched: a record with any annotation (a person's, or an earlier bulk label) or with a
status other than Default (Validated, Edited, Discarded: a person acted on it). The check is made twice:
once on the full read (what the dry run reports), and again per chunk right before writing, on a fresh
read of that chunk's ids, inside the one retry layer (``with_retries``) like ``ingest.send_chunk``: "read
these ids, keep those still untouched, write them" is one operation, so a retry after a lost answer finds
its own bulk labels and does not write again.

Undo: before each chunk is written, the records' state before the write (as a request would send it) and
the label written are appended to an undo file (JSON lines, fsync'd: a crash leaves at most entries for
records that were not written, which undo skips). ``--undo`` reads each id again and restores the saved
state only where the record still holds exactly the bulk label that was written (agent, label and status);
a record a person changed since is left alone and counted. Once every entry is settled, the undo file is
renamed ``*.undone``.

The server-specific part is an adapter (``Adapter``: read all, read some, annotate, restore):
``V1Adapter`` for Rubrix 0.x / Argilla 1.x (whole records through ``:bulk``; on Argilla 1.7+, which keeps
the fields a re-sent record leaves out, an annotation cannot be taken back that way, so ``--undo`` refuses
there before writing), ``V2Adapter`` for Argilla 2.x (responses of the key's user; undo deletes them).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Protocol

from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)
UNTOUCHED_STATUSES = (None, "Default")
BULK_AGENT_HINT = "the bulk agent (zs-ray-bulk)"


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


# ---------------------------------------------------------------------------------------------------------
# Rubrix 0.x / Argilla 1.x
# ---------------------------------------------------------------------------------------------------------
KEEP = ("id", "inputs", "prediction", "annotation", "status", "metadata", "multi_label", "event_timestamp")


def _request_labels(value: Optional[dict], agent: Optional[str]) -> Optional[dict]:
    from zs_ray.rubrix.pull import _labels

    if value is None:
        return None
    classes, scores = _labels(value)
    return {"agent": agent, "labels": [{"class": c, "score": s} for c, s in zip(classes, scores)]}


def request_form(r: dict) -> dict:
    """A record as read (Rubrix 0.x: as sent; Argilla 1.2+: the stored document) -> as a bulk request sends it."""
    from zs_ray.rubrix.pull import _one

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
               ann and [x["class"] for x in ann["labels"]], state.get("status"), state)


class V1Adapter:
    """Rubrix 0.x / Argilla 1.x: reads with ``iter_records``, writes with ``:bulk`` (a whole record)."""

    def __init__(self, config, client, info):
        self.config, self.client, self.info = config, client, info
        self.name = f"{self.info.generation} {self.info.version}"
        # Rubrix 0.x and Argilla < 1.7 replace a re-sent record; 1.7+ upsert (fields left out are kept).
        self.replaces = self.info.generation == "rubrix" or self.info.version_tuple[:2] < (1, 7)

    def close(self) -> None:
        self.client.close()

    def read_all(self) -> Iterator[Rec]:
        for r in self.client.iter_records(None, retry=True):
            yield to_rec(r)

    def read(self, ids: list[str]) -> dict[str, Rec]:
        # One attempt (the caller's operation is what is retried).
        return {rec.id: rec for rec in map(to_rec, self.client.iter_records({"ids": list(ids)}))}

    def _send(self, records: list[dict]) -> None:
        from zs_ray.rubrix import records as rec
        from zs_ray.rubrix.client import RubrixError

        answer = self.client.bulk(rec.bulk_body([json.dumps(r, ensure_ascii=False).encode() for r in records], {}))
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


# ---------------------------------------------------------------------------------------------------------
# Argilla 2.x
# ---------------------------------------------------------------------------------------------------------
V2_STATUS = {"Validated": "submitted", "Edited": "draft"}


class V2Adapter:
    """Argilla 2.x (``/api/v1``, via ``zs_ray.rubrix.argilla2``): a bulk label is a response of the key's user to
    the ``label`` question (``POST /api/v1/me/responses/bulk``); undo deletes that response. A response always
    belongs to the key's user, so the "agent" is that user: give bulk-label the key of a user kept for it
    (e.g. one named zs-ray-bulk), never a person's own key, or its bulk labels look like that person's."""

    replaces = True

    def __init__(self, config, client, info):
        from zs_ray.rubrix import argilla2_pull as argilla2  # the 2.x reads (and its QUESTION)
        from zs_ray.rubrix.client import with_retries

        self.config, self.client, self.a2 = config, client, argilla2
        self.session = client.argilla2
        self.name = f"argilla {info.version}"
        self.user = self.session.user
        did = self.session.dataset["id"]
        questions = with_retries(config, lambda: client.request("GET", f"/api/v1/datasets/{did}/questions").json())
        question = next((q for q in questions["items"] if q["name"] == argilla2.QUESTION), None)
        if question is None:
            raise ZsRayError(f"dataset {config.rubrix_dataset} has no {argilla2.QUESTION!r} question: not made by zs-ray")
        if question["settings"]["type"] != "label_selection":
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
        state = {"id": row["id"], "record_id": str(r["id"]), "responses": responses}
        label, score = None, float("nan")
        if row["prediction_labels"]:
            label, score = row["prediction_labels"][0], (row["prediction_scores"] or [float("nan")])[0]
        status = row["status"] if responses else "Default"
        return Rec(row["id"], label, float(score), bool(responses), row["annotation_agent"],
                   row["annotation_labels"], status, state)

    def read_all(self) -> Iterator[Rec]:
        for r in self.a2.iter_records(self.client, self.config, self.session.dataset["id"]):
            yield self._rec(r)

    def read(self, ids: list[str]) -> dict[str, Rec]:
        if any(i not in self.internal for i in ids) and not self._listed:  # (undo): learn the record ids once
            self._listed = True
            for _ in self.read_all():
                pass
        out = {}
        for i in ids:
            rid = self.internal.get(i)
            if rid is None:
                continue
            r = self.client.request("GET", f"/api/v1/records/{rid}").json()
            out[i] = self._rec(r)
        return out

    def annotate(self, recs: list[Rec], labels: dict[str, str], agent: str, status: str) -> None:
        from zs_ray.rubrix.client import RubrixError

        for start in range(0, len(recs), 100):  # the server's most items per request
            items = [{"record_id": self.internal[r.id], "status": V2_STATUS[status],
                      "values": {self.a2.QUESTION: {"value": labels[r.id]}}} for r in recs[start:start + 100]]
            answer = self.client.request("POST", "/api/v1/me/responses/bulk", json_body={"items": items}).json()
            errors = [x["error"]["detail"] for x in answer.get("items") or [] if x.get("error")]
            if errors:
                raise RubrixError(f"{len(errors)} responses refused: {errors[0]}", status=422)

    def restore(self, states: list[dict]) -> None:
        # Undo puts back only records whose responses were none but ours: delete this user's response.
        for s in states:
            r = self.client.request("GET", f"/api/v1/records/{s['record_id']}").json()
            for x in r.get("responses") or []:
                if str(x.get("user_id")) == str(self.user["id"]):
                    self.client.request("DELETE", f"/api/v1/responses/{x['id']}")


def adapter_for(config) -> Adapter:
    """The adapter of the server at ``config``: ``V1Adapter`` for Rubrix 0.x / Argilla 1.x, ``V2Adapter`` for
    Argilla 2.x."""
    from zs_ray.rubrix.connect import connect

    client, info, existed = connect(config)
    if not existed:
        client.close()
        raise ZsRayError(f"dataset {config.rubrix_dataset} does not exist on {config.public_url}")
    if info.generation == "argilla2":
        return V2Adapter(config, client, info)
    return V1Adapter(config, client, info)


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------
@dataclass
class BulkReport:
    mode: str
    dataset: str
    server: str = ""
    candidates: Counter = field(default_factory=Counter)  # label -> records at/above its threshold, untouched
    written: int = 0
    skipped_touched: int = 0  # were untouched at the full read, touched by the time of writing
    restored: int = 0
    left_changed: int = 0  # undo: changed by someone since the apply
    not_restored: list = field(default_factory=list)
    undo_file: str = ""
    thresholds: dict = field(default_factory=dict)
    warning: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.not_restored

    def summary(self) -> str:
        if self.mode == "undo":
            s = (f"bulk-label --undo on {self.dataset} ({self.server}): {self.restored} records restored, "
                 f"{self.left_changed} left (changed since the apply)")
            if self.not_restored:
                s += f", {len(self.not_restored)} NOT restored (e.g. {', '.join(self.not_restored[:5])})"
            return s + f"; undo file {self.undo_file}"
        per = ", ".join(f"{lab} {n} (>= {self.thresholds[lab]:.4f})" for lab, n in sorted(self.candidates.items()))
        total = sum(self.candidates.values())
        warn = f"\nzs-ray: warning: {self.warning}" if self.warning else ""
        if self.mode == "dry-run":
            return (f"bulk-label dry run on {self.dataset} ({self.server}): would annotate {total} records: "
                    f"{per or 'none'}; nothing written (--apply writes them)" + warn)
        return (f"bulk-label --apply on {self.dataset} ({self.server}): annotated {self.written} records "
                f"({per or 'none'}); {self.skipped_touched} skipped (touched meanwhile); undo file {self.undo_file}"
                + warn)


def default_undo_file(config) -> str:
    return f"zs-ray-bulk-{config.rubrix_dataset}.undo.jsonl"


def select(recs: Iterable[Rec], thresholds: dict[str, float]) -> list[Rec]:
    return [r for r in recs if r.untouched and r.label in thresholds and r.score >= thresholds[r.label]]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def bulk_label(settings, server, adapter: Optional[Adapter] = None) -> BulkReport:
    """Run ``zs-ray bulk-label`` (``BulkLabelConfig`` + ``ServerConfig``)."""
    from tqdm.auto import tqdm

    server.validate()
    adapter = adapter or adapter_for(server)
    undo_path = settings.undo_file or default_undo_file(server)
    mode = "undo" if settings.undo else "apply" if settings.apply else "dry-run"
    report = BulkReport(mode, server.rubrix_dataset, adapter.name, undo_file=undo_path)
    try:
        if settings.undo:
            return _undo(adapter, server, undo_path, report)
        thresholds = settings.threshold_values()
        if not thresholds:
            raise ZsRayError("no label has a threshold (every label of --thresholds was 'too few labels' or "
                             "'not reachable'): nothing to bulk-label")
        report.thresholds = thresholds
        recs = list(tqdm(adapter.read_all(), desc=f"read {server.rubrix_dataset}", unit="rec", disable=None))
        chosen = select(recs, thresholds)
        unseen = sorted(set(thresholds) - {r.label for r in recs})
        if unseen:  # a typo (economia / economía) would otherwise just label nothing
            log.warning("no record of %s is predicted %s: check the labels of the thresholds",
                        server.rubrix_dataset, ", ".join(map(repr, unseen)))
        report.candidates = Counter(r.label for r in chosen)
        report.warning = adapter.can_restore() and f"--undo will not be available: {adapter.can_restore()}"
        if adapter.author(settings.agent) != settings.agent:
            report.warning = (f"the annotations are written as the key's user {adapter.author(settings.agent)!r}, "
                              f"not {settings.agent!r}: use the key of a user kept for bulk labels")
        if mode == "dry-run":
            return report
        _apply(adapter, server, settings, chosen, thresholds, undo_path, report)
        return report
    finally:
        close = getattr(adapter, "close", None)
        if close:
            close()


def _apply(adapter, server, settings, chosen, thresholds, undo_path, report) -> None:
    from tqdm.auto import tqdm

    from zs_ray.rubrix.client import RubrixError, with_retries

    run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(undo_path, "a", encoding="utf-8") as undo, \
            tqdm(total=len(chosen), desc=f"bulk-label {server.rubrix_dataset}", unit="rec", disable=None) as bar:
        for chunk in _chunks(chosen, settings.chunk_size):
            ids = [r.id for r in chunk]

            def operation():  # read again, keep the untouched, write: safe to repeat
                fresh = adapter.read(ids)
                todo = select([fresh[i] for i in ids if i in fresh], thresholds)
                for r in todo:
                    undo.write(json.dumps({"run": run, "id": r.id, "before": r.state, "label": r.label,
                                           "agent": adapter.author(settings.agent), "status": settings.status},
                                          ensure_ascii=False) + "\n")
                undo.flush()
                os.fsync(undo.fileno())
                if todo:
                    adapter.annotate(todo, {r.id: r.label for r in todo}, settings.agent, settings.status)
                return len(todo)

            try:
                n = with_retries(server, operation)
            except RubrixError as exc:
                raise ZsRayError(f"bulk-label stopped after {report.written} records: {exc}; the undo file "
                                 f"{undo_path} covers what was written") from None
            report.written += n
            report.skipped_touched += len(chunk) - n
            bar.update(len(chunk))


def _undo(adapter, server, undo_path, report) -> BulkReport:
    from tqdm.auto import tqdm

    from zs_ray.rubrix.client import RubrixError, with_retries

    if not os.path.exists(undo_path):
        raise ZsRayError(f"no undo file {undo_path}: nothing was applied with it (give --undo-file)")
    why = adapter.can_restore()
    if why:  # refuse before writing anything rather than leave records half restored
        raise ZsRayError(f"--undo is not available on this server: {why}; the records written are listed in "
                         f"{undo_path} (in the UI: filter annotated by {BULK_AGENT_HINT})")
    entries: dict[str, dict] = {}
    with open(undo_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                e = json.loads(line)
                entries.setdefault(e["id"], e)  # the first entry of an id: its state before any bulk label
    ids = list(entries)
    with tqdm(total=len(ids), desc=f"undo {server.rubrix_dataset}", unit="rec", disable=None) as bar:
        for chunk in _chunks(ids, 200):
            def operation():
                fresh = adapter.read(chunk)
                ours, changed = [], 0
                for i in chunk:
                    e, r = entries[i], fresh.get(i)
                    if r is not None and r.state == e["before"]:
                        continue  # already as before (restored, or never written)
                    if (r is not None and r.annotation_agent == e["agent"] and r.annotation_labels == [e["label"]]
                            and r.status == e["status"]):
                        ours.append(e["before"])
                    else:
                        changed += 1
                if ours:
                    adapter.restore(ours)
                after = adapter.read([s["id"] for s in ours]) if ours else {}
                bad = [s["id"] for s in ours if after.get(s["id"]) is None or after[s["id"]].state != s]
                return len(ours) - len(bad), changed, bad

            try:
                restored, changed, bad = with_retries(server, operation)
            except RubrixError as exc:
                raise ZsRayError(f"undo stopped after {report.restored} records: {exc}; run it again") from None
            report.restored += restored
            report.left_changed += changed
            report.not_restored += bad
            bar.update(len(chunk))
    if report.ok:
        os.replace(undo_path, undo_path + ".undone")
        report.undo_file = undo_path + ".undone"
    return report
