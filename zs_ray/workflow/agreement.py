"""``zs-ray agreement``: a team's agreement, its consensus and its review queue, from a ``zs-ray pull`` file.

The answers are the ``responses`` column's (every response of every person), those with a status in ``--status``
by anyone but ``--exclude-agent`` (``workflow.consensus.answers_of``, as every command that takes labels counts
them). ``zs_ray.team.report`` measures them: Krippendorff's alpha (nominal) and Fleiss' kappa with bootstrap
intervals over records, observed agreement, per label (as yes/no), per annotator (records, agreement with the
others, Cohen's kappa with each other annotator, agreement with the model's suggestion; one far below the
others is named), and the label pairs people confuse. Multi-label datasets: a record's answer is its set of
labels (the overall figures), and each label is measured as yes/no (per label).

``--consensus`` (with ``--reviewers``) says how many records stay unresolved; ``--review N`` marks on the server
the N records whose annotators disagree most and that no reviewer has decided (``servers.review``), for a
reviewer to find in the UI. Writes ``agreement.json`` and ``report.html`` (``agreement_report``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.team import Responses, disagreement_order, report, resolve
from zs_ray.workflow.consensus import SEP, answers_of, check_reviewers, model_probs
from zs_ray.workflow.data import read_pulled

COLUMNS = ("id", "prediction_labels", "prediction_scores", "multi_label", "metadata", "responses", "annotation_labels",
           "annotation_agent", "status")


def read(path: str) -> dict:
    """The columns of a pulled file that agreement needs (one line for a file that is not one)."""
    table = read_pulled(path, COLUMNS, "not a `zs-ray pull` file of this version (pull it again: the responses "
                                       "column holds every person's answers)")
    return {c: table.column(c).to_pylist() for c in COLUMNS}


def per_label_yes_no(team: Responses, labels: list[str], n_boot: int, seed: int) -> dict:
    """Multi-label: each label as yes/no over the same answers (a set answer says yes to its labels)."""
    out = {}
    sets = [set(x.split(SEP)) for x in team.labels]
    for lab in labels:
        yes = np.array([lab in s for s in sets])[team.label].astype(np.int64)
        binary = Responses(team.record, team.annotator, yes, team.ids, team.annotators, ["no", "yes"])
        r = report(binary, n_boot=n_boot, seed=seed)
        out[lab] = {"krippendorff_alpha": r["krippendorff_alpha"]["value"],
                    "krippendorff_alpha_interval": [r["krippendorff_alpha"]["low"], r["krippendorff_alpha"]["high"]],
                    "fleiss_kappa": r["fleiss_kappa"]["value"], "observed_agreement": r["observed_agreement"],
                    "answers": int(yes.sum())}
    return out


def agreement(settings, server=None) -> dict:
    """Run ``zs-ray agreement`` (``AgreementConfig`` + ``ServerConfig``): the JSON, written with report.html."""
    if settings.review and not (server is not None and server.rubrix_dataset):
        raise ZsRayError("--review marks records on the server: give --rubrix-dataset (and the server's settings)")
    cols = read(settings.input)
    multi = any(cols["multi_label"])
    per_record, _ = answers_of(cols, settings.status, set(settings.exclude_agent), multi)
    if not any(per_record):
        raise ZsRayError(f"--input {settings.input} holds no responses that count (statuses "
                         f"{', '.join(settings.status)}, not by {', '.join(settings.exclude_agent)}): nothing to measure")
    check_reviewers(settings.reviewers, per_record, settings.input)
    if settings.consensus == "model-weighted" and multi:
        raise ZsRayError("--consensus model-weighted takes single-label datasets (the scores of one softmax)")
    predicted = sorted({x for ls in cols["prediction_labels"] if ls for x in ls})
    labels = sorted({v for got in per_record for _, v in got} | (set() if multi else set(predicted)))
    team = Responses.from_lists(cols["id"], per_record, labels=labels)
    model_pred = np.array([labels.index(ls[int(np.argmax(ss))]) if ls and ss and ls[int(np.argmax(ss))] in labels
                           and not multi else -1
                           for ls, ss in zip(cols["prediction_labels"], cols["prediction_scores"])], dtype=np.int64)
    out = report(team, model_pred=model_pred, n_boot=settings.bootstrap, seed=settings.seed)
    if multi:
        out["per_label"] = per_label_yes_no(team, predicted or sorted({x for s in labels for x in s.split(SEP)}),
                                            settings.bootstrap, settings.seed)
    probs = model_probs(cols, labels) if settings.consensus == "model-weighted" else None
    decided = resolve(team, settings.consensus, reviewers=settings.reviewers, model_probs=probs)
    by_reviewer = np.isin(decided.decided_by.astype(str), list(settings.reviewers)) if settings.reviewers else \
        np.zeros(team.n_records, dtype=bool)
    out.update({"input": settings.input, "multi_label": multi, "unresolved": int(decided.unresolved),
                "consensus": {"method": settings.consensus, "reviewers": list(settings.reviewers),
                              "decided_by_reviewer": int(by_reviewer.sum()),
                              "annotator_quality": {k: round(float(v), 4)
                                                    for k, v in decided.annotator_quality.items()}}})
    order = [int(i) for i in disagreement_order(team) if not by_reviewer[i]]
    out["most_disagreed"] = [{"id": team.ids[i], "answers": dict(per_record[i])} for i in order[:20]]
    if settings.review:
        from zs_ray.servers.review import mark_review

        chosen = [team.ids[i] for i in order[:settings.review]]
        out["review"] = {"asked": settings.review, **mark_review(server, chosen)}
    os.makedirs(settings.output, exist_ok=True)
    with open(os.path.join(settings.output, "agreement.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2, ensure_ascii=False)
    from zs_ray.workflow.agreement_report import write_report

    write_report(out, os.path.join(settings.output, "report.html"), settings.title or settings.input)
    return out


def summary(out: dict, output: str) -> str:
    a, k = out["krippendorff_alpha"], out["fleiss_kappa"]

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [f"agreement of {len(out['annotators'])} annotators on {out['overlap_records']} records answered by "
             f"several people ({out['responses']} answers on {out['records']} records)",
             f"  Krippendorff's alpha {f(a['value'])} [{f(a['low'])}, {f(a['high'])}], Fleiss' kappa {f(k['value'])} "
             f"[{f(k['low'])}, {f(k['high'])}], observed agreement {f(out['observed_agreement'])}",
             f"  consensus ({out['consensus']['method']}): {out['unresolved']} records unresolved"]
    for name, e in out["annotators"].items():
        lines.append(f"  {name}: {e['records']} records, agrees with the others on {f(e['agreement_with_others'])}"
                     + (f"  <- {e['why']}" if e["flagged"] else ""))
    if out.get("review"):
        r = out["review"]
        lines.append(f"  marked {r['marked']} records for review on the server (metadata review: disagreement)"
                     + (f"; {r['missing']} not found there" if r["missing"] else ""))
    lines.append(f"wrote {os.path.join(output, 'agreement.json')} and {os.path.join(output, 'report.html')}")
    return "\n".join(lines)
