"""The human label of each record of a pulled file, when several people answered: their consensus.

A ``zs-ray pull`` file holds every response in its ``responses`` column (``zs_ray.servers.pull.SCHEMA``). The
answers that count are those whose status is one of ``statuses`` (the 1.x names the commands take: Validated is
a submitted response, Edited a draft), by an annotator not in ``exclude_agents`` (the bulk labels), with one
label; ``zs_ray.team.resolve`` makes them one label per record with the method chosen (``--consensus``), a
reviewer's answer deciding. Records whose answers tie are *unresolved*: counted, and left out.

``model-weighted`` needs the zero-shot distribution: every label's score from the record's metadata
(``score_<label>``, which ``log`` writes by default), else its top score with the rest shared evenly.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.team import Responses, resolve

STATUS_OF_RESPONSE = {"Validated": "submitted", "Edited": "draft", "Discarded": "discarded"}
STATUS_OF_ANSWER = {v: k for k, v in STATUS_OF_RESPONSE.items()}  # (notes speak --status's names)


@dataclass
class TeamLabels:
    """Per record its consensus label (None: none), and what was counted on the way."""

    gold: list
    team: Responses
    decided_by: np.ndarray
    unresolved: int
    notes: list[str] = field(default_factory=list)


def responses_of(cols: dict) -> list[list[dict]]:
    """Each record's responses; a row whose ``responses`` is null (written without them) has its one annotation."""
    out = []
    for i, responses in enumerate(cols["responses"]):
        if responses is None:
            labels, status = cols["annotation_labels"][i], cols["status"][i]
            responses = [] if labels is None else [{"annotator": cols["annotation_agent"][i], "labels": labels,
                                                    "status": STATUS_OF_RESPONSE.get(status, str(status).lower())}]
        out.append(responses)
    return out


def answers_of(cols: dict, statuses=("Validated",), exclude_agents=()) -> tuple[list[list[tuple[str, str]]], Counter]:
    """Per record, the (annotator, label) answers that count; and why other responses were not counted."""
    wanted = {STATUS_OF_RESPONSE.get(s, s.lower()) for s in statuses}
    per_record, why = [], Counter()
    for responses in responses_of(cols):
        answers = {}
        for x in responses or []:
            if x["status"] not in wanted:
                why[f"status {STATUS_OF_ANSWER.get(x['status'], x['status'])}"] += 1
            elif x["annotator"] in exclude_agents:
                why[f"by {x['annotator']}"] += 1
            elif not x["labels"] or len(x["labels"]) != 1:
                why["no single label"] += 1
            else:
                answers[x["annotator"]] = x["labels"][0]
        per_record.append(sorted(answers.items()))
    return per_record, why


def model_probs(cols: dict, labels: list[str]) -> np.ndarray:
    """The zero-shot distribution of each record over ``labels`` (rows sum to 1; uniform without a prediction)."""
    from zs_ray.servers.records import score_keys

    keys = score_keys(labels)
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    probs = np.full((len(cols["id"]), k), 1.0 / k)
    for i, (pl, ps, meta) in enumerate(zip(cols["prediction_labels"], cols["prediction_scores"], cols["metadata"])):
        meta = dict(meta or [])
        if all(keys[lab] in meta for lab in labels):
            row = np.array([float(json.loads(meta[keys[lab]])) for lab in labels])
        elif pl and ps:
            top = int(np.argmax(ps))
            if pl[top] not in index:
                continue
            row = np.full(k, (1.0 - ps[top]) / max(k - 1, 1))
            row[index[pl[top]]] = ps[top]
        else:
            continue
        total = row.sum()
        if total > 0:
            probs[i] = row / total
    return probs


def team_labels(cols: dict, labels: list[str], method: str = "majority", reviewers=(), statuses=("Validated",),
                exclude_agents=()) -> TeamLabels:
    """The consensus label of every record of a pulled file's columns (``cols``: name -> list)."""
    per_record, why = answers_of(cols, statuses, exclude_agents)
    names = {a for answers in per_record for a, _ in answers}
    if reviewers:
        unknown = sorted(set(reviewers) - names)
        if unknown:
            raise ZsRayError(f"--reviewers {', '.join(unknown)}: no answer by them counts in this file (annotators: "
                             f"{', '.join(sorted(names)) or 'none'})")
    team = Responses.from_lists(list(cols["id"]), per_record,
                                labels=sorted(set(labels) | {lab for a in per_record for _, lab in a}))
    probs = model_probs(cols, team.labels) if method == "model-weighted" else None
    result = resolve(team, method, reviewers=list(reviewers), model_probs=probs)
    gold = [team.labels[i] if i >= 0 else None for i in result.label]
    notes = [f"{n} answers left out ({w})" for w, n in sorted(why.items())]
    if result.unresolved:
        notes.append(f"{result.unresolved} records unresolved ({method}: their annotators tie) left out")
    several = int(sum(len(a) > 1 for a in per_record))
    if several:
        by_reviewer = int(sum(d in set(reviewers) for d in result.decided_by)) if reviewers else 0
        notes.append(f"{several} records answered by several people: their {method} consensus"
                     + (f" ({by_reviewer} decided by a reviewer)" if by_reviewer else ""))
    return TeamLabels(gold, team, result.decided_by, int(result.unresolved), notes)
