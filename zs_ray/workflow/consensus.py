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
from zs_ray.servers.argilla2_pull import STATUS_FROM_V2 as STATUS_OF_ANSWER  # (notes speak --status's names)
from zs_ray.servers.pull import RESPONSE_STATUS as STATUS_OF_RESPONSE
from zs_ray.team import Responses, resolve

SEP = " + "  # a multi-label answer's set as one category


@dataclass
class TeamLabels:
    """Per record its consensus label (None: none, or unresolved), and what was counted on the way."""

    gold: list
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


def answers_of(cols: dict, statuses=("Validated",), exclude_agents=(), multi: bool = False
               ) -> tuple[list[list[tuple[str, str]]], Counter]:
    """Per record, the (annotator, answer) pairs that count, an answer being one label (``multi``: a label set,
    joined by ``SEP``); and why other responses were not counted."""
    wanted = {STATUS_OF_RESPONSE.get(s, s.lower()) for s in statuses}
    per_record, why = [], Counter()
    for responses in responses_of(cols):
        answers = {}
        for x in responses or []:
            if x["status"] not in wanted:
                why[f"status {STATUS_OF_ANSWER.get(x['status'], x['status'])}"] += 1
            elif x["annotator"] in exclude_agents:
                why[f"by {x['annotator']}"] += 1
            elif multi and x["labels"]:
                answers[x["annotator"]] = SEP.join(sorted(x["labels"]))
            elif not x["labels"] or len(x["labels"]) != 1:
                why["no single label"] += 1
            else:
                answers[x["annotator"]] = x["labels"][0]
        per_record.append(sorted(answers.items()))
    return per_record, why


def check_reviewers(reviewers, per_record, source: str = "this file") -> None:
    """One line if a reviewer gave no answer that counts (a misspelt name would silently decide nothing)."""
    names = {a for answers in per_record for a, _ in answers}
    unknown = sorted(set(reviewers) - names)
    if unknown:
        raise ZsRayError(f"--reviewers {', '.join(unknown)}: no answer by them counts in {source} (annotators: "
                         f"{', '.join(sorted(names)) or 'none'})")


def top_spread(label, score: float, labels: list[str]):
    """A distribution from a top label and its score alone: the rest shared evenly (None if it cannot be made)."""
    if label not in labels or score != score:
        return None
    row = np.full(len(labels), (1.0 - score) / max(len(labels) - 1, 1))
    row[labels.index(label)] = score
    return row


def model_probs(cols: dict, labels: list[str]) -> np.ndarray:
    """The zero-shot distribution of each record over ``labels`` (rows sum to 1; uniform without a prediction)."""
    from zs_ray.servers.records import score_keys

    keys = score_keys(labels)
    probs = np.full((len(cols["id"]), len(labels)), 1.0 / len(labels))
    for i, (pl, ps, meta) in enumerate(zip(cols["prediction_labels"], cols["prediction_scores"], cols["metadata"])):
        meta = dict(meta or [])
        if all(keys[lab] in meta for lab in labels):
            row = np.array([float(json.loads(meta[keys[lab]])) for lab in labels])
        else:
            top = int(np.argmax(ps)) if pl and ps else None
            row = None if top is None else top_spread(pl[top], ps[top], labels)
        total = 0.0 if row is None else row.sum()
        if total > 0:
            probs[i] = row / total
    return probs


def team_labels(cols: dict, labels: list[str], method: str = "majority", reviewers=(), statuses=("Validated",),
                exclude_agents=()) -> TeamLabels:
    """The consensus label of every record of a pulled file's columns (``cols``: name -> list)."""
    per_record, why = answers_of(cols, statuses, exclude_agents)
    check_reviewers(reviewers, per_record)
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
    return TeamLabels(gold, notes)
