"""Argilla 2.x pull: every record of a zs-ray dataset with its suggestions and responses, as the rows of
``pull.SCHEMA`` (the same columns as on Rubrix 0.x / Argilla 1.x; the mapping is in ``argilla2``'s docstring).
Only reads; every page is retried on its own through ``client.with_retries``."""

from __future__ import annotations

import json

from zs_ray.errors import ZsRayError
from zs_ray.servers.argilla2 import PAGE_MAX, QUESTION, TEXT_FIELD, Session
from zs_ray.servers.client import RubrixClient, RubrixError, with_retries
from zs_ray.servers.config import ServerConfig

# 1.x's status names for a record's response status on 2.x (pull writes the same schema as on 1.x).
STATUS_FROM_V2 = {"submitted": "Validated", "draft": "Edited", "discarded": "Discarded"}
RESPONSE_ORDER = ("submitted", "draft", "discarded")


def usernames(client: RubrixClient, config: ServerConfig, session: Session) -> dict[str, str]:
    """user id -> username, as far as this key may list users (owner: all; admin: the workspace's)."""
    names = {str(session.user["id"]): session.user["username"]}
    for path in (f"/api/v1/workspaces/{session.workspace['id']}/users", "/api/v1/users"):
        try:
            items = with_retries(config, lambda: client.request("GET", path).json()).get("items") or []
        except RubrixError as exc:
            if exc.status in (401, 403) and not exc.front:
                continue
            raise
        names.update({str(u["id"]): u["username"] for u in items})  # (their api_key is not kept)
    return names


def iter_records(client: RubrixClient, config: ServerConfig, dataset_id: str, page: int = PAGE_MAX):
    """Every record with its suggestions and responses, page by page (each page retried on its own)."""
    page = min(page, PAGE_MAX)
    offset = 0
    while True:
        params = {"include": ["suggestions", "responses"], "offset": offset, "limit": page}
        data = with_retries(config, lambda: client.request("GET", f"/api/v1/datasets/{dataset_id}/records",
                                                           params=params).json())
        items = data.get("items") or []
        yield from items
        offset += len(items)
        if not items or offset >= int(data.get("total", 0)):
            return


def _label_list(value) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def to_row(r: dict, question_id: str, multi_label: bool, names: dict[str, str]) -> dict:
    """One 2.x record -> one row of ``pull.SCHEMA``: every response in ``responses`` (by annotator); the
    annotation is the first submitted response (else a draft, else a discarded one) until ``pull.decide``
    replaces it by the consensus of the submitted ones."""
    fields = r.get("fields") or {}
    sugg = next((s for s in r.get("suggestions") or [] if str(s.get("question_id")) == question_id), None)
    pred_labels = pred_scores = pred_agent = None
    if sugg is not None:
        pred_labels = _label_list(sugg.get("value"))
        score = sugg.get("score")
        pred_scores = None if score is None else [float(s) for s in (score if isinstance(score, list) else [score])]
        pred_agent = sugg.get("agent")
    responses = r.get("responses") or []
    every = sorted(({"annotator": names.get(str(x.get("user_id")), str(x.get("user_id"))),
                     "labels": _label_list(((x.get("values") or {}).get(QUESTION) or {}).get("value")),
                     "status": x.get("status")} for x in responses),
                   key=lambda x: (x["annotator"], RESPONSE_ORDER.index(x["status"])
                                  if x["status"] in RESPONSE_ORDER else len(RESPONSE_ORDER)))
    chosen = None
    for status in RESPONSE_ORDER:
        chosen = next((x for x in responses if x.get("status") == status), None)
        if chosen is not None:
            break
    ann_labels = ann_agent = None
    status = "Default"
    if chosen is not None:
        status = STATUS_FROM_V2.get(chosen.get("status"), chosen.get("status"))
        ann_labels = _label_list(((chosen.get("values") or {}).get(QUESTION) or {}).get("value"))
        if ann_labels is None and chosen.get("status") == "discarded":
            ann_labels = []
        uid = str(chosen.get("user_id"))
        ann_agent = names.get(uid, uid)
    meta = r.get("metadata") or {}
    return {
        "id": str(r.get("external_id") or r.get("id")),
        "text": fields.get(TEXT_FIELD),
        "inputs": [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in fields.items()],
        "prediction_labels": pred_labels,
        "prediction_scores": pred_scores,
        "prediction_agent": pred_agent,
        "annotation_labels": ann_labels,
        "annotation_agent": ann_agent,
        "status": status,
        "multi_label": multi_label,
        "metadata": [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                     for k, v in meta.items() if v is not None],
        "responses": every,
    }


def pull_rows(client: RubrixClient, config: ServerConfig, session: Session, statuses: list[str] | None,
              page: int = PAGE_MAX, reviewers=()):
    """The rows of the dataset for ``pull`` (``statuses``: 1.x names, or 2.x's submitted/draft/discarded/pending);
    ``reviewers`` must be users of the server (one line if one is not)."""
    did = session.dataset["id"]
    questions = with_retries(config, lambda: client.request("GET", f"/api/v1/datasets/{did}/questions").json())["items"]
    question = next((q for q in questions if q["name"] == QUESTION), None)
    if question is None:
        raise ZsRayError(f"dataset {config.rubrix_dataset} has no {QUESTION!r} question: it was not made by zs-ray")
    multi = question["settings"]["type"] == "multi_label_selection"
    names = usernames(client, config, session)
    unknown = sorted(set(reviewers) - set(names.values()))
    if unknown:
        raise ZsRayError(f"--reviewers {', '.join(unknown)}: no such user on {config.public_url} "
                         f"(users: {', '.join(sorted(names.values()))})")
    wanted = None
    if statuses:
        alias = {**STATUS_FROM_V2, "pending": "Default"}
        wanted = {alias.get(s.lower(), s) for s in statuses}
    for r in iter_records(client, config, did, page):
        row = to_row(r, str(question["id"]), multi, names)
        if wanted is None or row["status"] in wanted:
            yield row
