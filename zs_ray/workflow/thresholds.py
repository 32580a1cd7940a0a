"""``zs-ray thresholds``: per label, the lowest score threshold that bulk-labelling can trust.

For a predicted label L and a threshold t, the human-labelled records predicted L with score >= t are n
trials with k correct. The precision the bulk labels would have is estimated by the one-sided
**Clopper-Pearson** lower bound at ``confidence`` (default 95%): the exact binomial bound, conservative at
every n (a Wilson bound can fall below its nominal coverage at small n, and small n is the common case
at high thresholds). The threshold chosen is the lowest t (of the labelled records' own scores) whose
lower bound reaches the target precision P: the most coverage the evidence supports, not the point
estimate. Since even n correct out of n only gives a bound of (1 - confidence)^(1/n), a label needs at
least m = ceil(ln(1 - confidence) / ln P) labelled records predicted L (P = 0.9 at 95%: 29); with fewer it
gets "too few labels (n, need m)" instead of a number.

Choosing the lowest of many thresholds that passes is itself a search, so the bound at the chosen t is a
little optimistic; the held-out test (tests/test_workflow_thresholds.py) checks that the chosen thresholds
reach P on records not used to choose them. For each label also: the coverage (share of all records
predicted L, labelled or not, at or above t) and how many unlabelled records (no annotation, status
Default or none) bulk-label would annotate.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from zs_ray.workflow.data import Labelled, load, require_labels

BOUND = "one-sided Clopper-Pearson lower bound"


def lower_bound(k, n, confidence: float):
    """One-sided Clopper-Pearson lower bound of k/n (vectorised; 0 where k == 0): Beta(1-c; k, n-k+1)."""
    from scipy.stats import beta

    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        lb = beta.ppf(1 - confidence, np.maximum(k, 1e-12), n - k + 1)
    return np.where(k > 0, lb, 0.0)


def needed(target: float, confidence: float) -> int:
    """The fewest labelled records, all correct, whose lower bound reaches ``target``."""
    return max(1, math.ceil(math.log(1 - confidence) / math.log(target) - 1e-12))


def choose(scores, correct, target: float, confidence: float) -> dict:
    """The lowest threshold (one of ``scores``) whose lower bound reaches ``target`` for these labelled records."""
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    n_all, m = len(scores), needed(target, confidence)
    if n_all < m:
        return {"threshold": None, "status": f"too few labels ({n_all}, need {m})", "labelled": n_all, "needed": m}
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    n = np.arange(1, len(s) + 1)
    k = np.cumsum(c)
    last = np.r_[s[1:] != s[:-1], True]  # the last record of each run of equal scores: t = that score
    n, k, t = n[last], k[last], s[last]
    lb = lower_bound(k, n, confidence)
    ok = np.nonzero(lb >= target)[0]
    if ok.size == 0:
        best = int(np.argmax(lb))
        return {"threshold": None, "labelled": n_all, "needed": m,
                "status": f"not reachable (best lower bound {lb[best]:.3f} at threshold {t[best]:.3f}, "
                          f"{int(k[best])}/{int(n[best])} correct)"}
    i = int(ok[-1])  # the lowest threshold that passes (t descends along the scan)
    return {"threshold": float(t[i]), "status": "ok", "precision": float(k[i] / n[i]), "lower_bound": float(lb[i]),
            "labelled_above": int(n[i]), "correct_above": int(k[i]), "labelled": n_all, "needed": m}


def compute(data: Labelled, target: float, confidence: float) -> dict:
    from tqdm.auto import tqdm

    has = data.has_gold
    unlabelled = np.ones(len(data.ids), dtype=bool) if data.annotated is None else ~data.annotated
    if data.status is not None:
        unlabelled &= np.array([s in (None, "Default") for s in data.status], dtype=bool)
    out = {}
    for lab in tqdm(data.labels, desc="thresholds", unit="label", disable=None):
        mine = data.pred == lab
        sel = has & mine
        res = choose(data.score[sel], data.gold[sel] == lab, target, confidence)
        res["predicted"] = int(mine.sum())
        t = res.get("threshold")
        if t is not None:
            above = mine & (data.score >= t)
            res["coverage"] = float(above.sum() / mine.sum()) if mine.sum() else 0.0
            res["records_above"] = int(above.sum())
            res["would_label"] = int((above & unlabelled).sum())
        out[lab] = res
    return out


def thresholds(config) -> dict:
    """Run ``zs-ray thresholds`` (``ThresholdsConfig``); returns (and with --output writes) the JSON."""
    data = load(config.input, statuses=config.status, exclude_agents=config.exclude_agent)
    require_labels(data)
    result = {"input": str(config.input), "target_precision": config.target_precision,
              "confidence": config.confidence, "bound": BOUND, "records": int(len(data.ids)),
              "labelled": data.n_labelled, "left_out": data.notes,
              "labels": compute(data, config.target_precision, config.confidence)}
    if config.output and config.output != "-":
        parent = os.path.dirname(os.path.abspath(config.output))
        os.makedirs(parent, exist_ok=True)
        with open(config.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, ensure_ascii=False)
    return result


def table(result: dict, output: Optional[str] = None) -> str:
    head = (f"target precision {result['target_precision']} at the {result['bound']} ({result['confidence']:.0%}); "
            f"{result['labelled']} labelled of {result['records']} records")
    rows = [("label", "threshold", "precision", "lower bound", "labelled above", "coverage", "would label", "")]
    for lab, r in result["labels"].items():
        if r.get("threshold") is None:
            rows.append((lab, "-", "", "", "", "", "", r["status"]))
        else:
            rows.append((lab, f"{r['threshold']:.4f}", f"{r['precision']:.3f}", f"{r['lower_bound']:.3f}",
                         str(r["labelled_above"]), f"{r['coverage']:.1%}", str(r["would_label"]), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if output:
        lines.append(f"wrote {output}")
    return "\n".join(lines)
