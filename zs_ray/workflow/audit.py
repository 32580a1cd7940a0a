"""``zs-ray audit``: after ``bulk-label --apply``, the people's answers on its audit sample, per label.

The undo file of the apply says which records were bulk-labelled with each label and which were kept out and
marked for audit (``audit_plan``). For each label, the audit records are read again from the server: a record
is *answered* when it holds an annotation with one label, a status in ``--status`` (default Validated; on
Argilla 2.x a submitted response) and an annotator other than the bulk agent; the answer is *correct* when
it is the label the record would have been bulk-labelled with (its top prediction). Of n audit records, k
answered, c correct: the realised precision is c / k and its lower bound the one-sided Clopper-Pearson bound
of ``thresholds`` at the confidence of the thresholds file, judged against its target precision P:

With several people on a record, its answer is their consensus (``--consensus``, ``--reviewers``; a tie is
unresolved and counts as unanswered).

* **pass**: the bound reaches P even if every audit record still unanswered turns out wrong (LB(c, n) >= P);
* **fail**: the bound misses P even if every one still unanswered turns out right (LB(c + n - k, n) < P);
* otherwise **not enough answers** (nothing is decided by the order in which people happen to answer).

``--undo-failing`` takes back the bulk labels of the failing labels with bulk-label's own undo, restricted to
those labels: a record is restored only where it still holds exactly the bulk label written, so a record a
person answered or changed, another label's bulk label and every audit record are left as they are. It is
safe to run again (what was restored is found as before, and left). ``--output`` writes it all as JSON.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Optional

from zs_ray.errors import ZsRayError
from zs_ray.workflow.bulk import BulkReport, default_undo_file, undo
from zs_ray.workflow.bulk_adapters import adapter_for
from zs_ray.workflow.config import BULK_AGENT
from zs_ray.workflow.thresholds import BOUND, lower_bound, write_json


def read_journal(path: str) -> tuple[dict, dict, set]:
    """The undo file of ``bulk-label --apply`` -> (label -> bulk-labelled ids, label -> audit entries by id,
    the bulk agents)."""
    if not os.path.exists(path):
        done = " (it was undone: nothing is bulk-labelled)" if os.path.exists(path + ".undone") else ""
        raise ZsRayError(f"no undo file {path}{done}: run `zs-ray bulk-label --apply` first (or give --undo-file)")
    bulk, audit, agents = defaultdict(set), defaultdict(dict), {BULK_AGENT}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    e = json.loads(line)
                    if e.get("audit"):
                        audit[e["label"]].setdefault(e["id"], e)
                    else:
                        bulk[e["label"]].add(e["id"])
                        agents.add(e["agent"])
    except (ValueError, KeyError) as exc:
        raise ZsRayError(f"{path} is not an undo file of `zs-ray bulk-label --apply`: {exc}") from None
    if not audit:
        raise ZsRayError(f"no record was marked for audit in {path}: `bulk-label --apply` audits with a thresholds "
                         "file from `zs-ray thresholds` (or --audit-size N)")
    return dict(bulk), dict(audit), agents


def answers(recs: dict, settings, agents: set) -> dict:
    """id -> the people's answer to an audit record: the consensus (``--consensus``, ``--reviewers``) of its
    answers with a status in ``--status`` by anyone but the bulk agents; None where they tie (unresolved)."""
    import numpy as np

    from zs_ray.servers.argilla2 import QUESTION
    from zs_ray.team import Responses, resolve
    from zs_ray.workflow.consensus import STATUS_OF_RESPONSE, top_spread

    wanted = {STATUS_OF_RESPONSE.get(s, s.lower()) for s in settings.status}
    ids, per_record, probs = [], [], []
    for i, r in recs.items():
        if r is None or not r.annotated:
            continue
        if "responses" in (r.state or {}):  # Argilla 2.x: every person's response
            got = [(x["user"], ((x.get("values") or {}).get(QUESTION) or {}).get("value"))
                   for x in r.state["responses"] if x["status"] in wanted and x["user"] not in agents]
        else:  # 0.x / 1.x: the record's one annotation
            ok = r.status in settings.status and r.annotation_agent not in agents and r.annotation_labels
            got = [(r.annotation_agent, r.annotation_labels[0])] if ok and len(r.annotation_labels) == 1 else []
        got = [(a, v) for a, v in got if isinstance(v, str)]
        if got:
            ids.append(i)
            per_record.append(got)
            probs.append((r.label, r.score))
    if not ids:
        return {}
    team = Responses.from_lists(ids, per_record,
                                labels=sorted({v for a in per_record for _, v in a} | {p for p, _ in probs if p}))
    model = None
    if settings.consensus == "model-weighted":  # the top prediction's score, the rest shared evenly
        uniform = np.full(len(team.labels), 1.0 / len(team.labels))
        model = np.array([x if (x := top_spread(top, score, team.labels)) is not None else uniform
                          for top, score in probs])
    result = resolve(team, settings.consensus, reviewers=settings.reviewers, model_probs=model)
    return {i: team.labels[x] if x >= 0 else None for i, x in zip(ids, result.label)}


def judge(label: str, recs: dict, entries: dict, decided: dict) -> dict:
    """One label's audit: its records as read now (``recs``), their undo-file entries and the people's answers."""
    first = next(iter(entries.values()))
    target, confidence = float(first["target"]), float(first["confidence"])
    n = len(entries)
    given = [decided[i] for i in entries if decided.get(i) is not None]
    k, c = len(given), sum(a == label for a in given)
    worst, best = (float(x) for x in lower_bound([c, c + n - k], [n, n], confidence))
    status = "pass" if worst >= target else "fail" if best < target else f"not enough answers ({k} of {n})"
    return {"audited": n, "answered": k, "correct": c, "missing": sum(i not in recs for i in entries), "precision": c / k if k else None,
            "lower_bound": float(lower_bound(c, k, confidence)) if k else 0.0, "target": target,
            "confidence": confidence, "status": status}


def run_audit(settings, server, adapter=None) -> dict:
    """Run ``zs-ray audit`` (``AuditConfig`` + ``ServerConfig``); returns (and with --output writes) the JSON."""
    from zs_ray.servers.client import RubrixError, with_retries

    server.validate()
    path = settings.undo_file or default_undo_file(server)
    bulk, audit, agents = read_journal(path)  # before connecting: bad input is one line
    adapter = adapter or adapter_for(server)
    try:
        ids = [i for entries in audit.values() for i in entries]
        recs = {}
        try:
            for start in range(0, len(ids), 200):
                chunk = ids[start:start + 200]
                recs.update(with_retries(server, lambda: adapter.read(chunk)))
        except RubrixError as exc:
            raise ZsRayError(f"reading the audit records of {server.rubrix_dataset}: {exc}") from None
        decided = answers(recs, settings, agents)
        labels = {lab: {**judge(lab, recs, audit[lab], decided),
                        "bulk_labels": len(bulk.get(lab, ()))} for lab in sorted(audit)}
        unresolved = sum(1 for entries in audit.values() for i in entries if i in decided and decided[i] is None)
        result = {"dataset": server.rubrix_dataset, "server": adapter.name, "undo_file": path, "bound": BOUND,
                  "consensus": settings.consensus, "unresolved": unresolved, "labels": labels}
        failing = sorted(lab for lab, r in labels.items() if r["status"] == "fail")
        if settings.undo_failing:
            report = BulkReport("undo", server.rubrix_dataset, adapter.name, undo_file=path)
            if failing:
                undo(adapter, server, path, report, labels=set(failing))
            result["undo_failing"] = {"labels": failing, "restored": report.restored,
                                      "left_changed": report.left_changed, "not_restored": report.not_restored}
    finally:
        close = getattr(adapter, "close", None)
        if close:
            close()
    write_json(settings.output, result)
    return result


def table(result: dict, output: Optional[str] = None) -> str:
    head = f"audit of the bulk labels of {result['dataset']} ({result['server']}), {result['bound']}"
    if result.get("unresolved"):
        head += f"; {result['unresolved']} audit records unresolved ({result['consensus']}: their answers tie), left out"
    rows = [("label", "bulk labels", "audited", "answered", "correct", "precision", "lower bound", "target", "")]
    for lab, r in result["labels"].items():
        prec = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        rows.append((lab, str(r["bulk_labels"]), str(r["audited"]), str(r["answered"]), str(r["correct"]), prec,
                     f"{r['lower_bound']:.3f}", f"{r['target']} ({r['confidence']:.0%})", r["status"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    undone = result.get("undo_failing")
    if undone is not None:
        lines.append(f"--undo-failing: {', '.join(undone['labels']) or 'no label fails'}: {undone['restored']} bulk "
                     f"labels taken back, {undone['left_changed']} left (changed since the apply)"
                     + (f", {len(undone['not_restored'])} NOT restored" if undone["not_restored"] else ""))
    if output:
        lines.append(f"wrote {output}")
    return "\n".join(lines)
