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

**How many more labels** (``more_labels``), per label: "enough" when a threshold was found. Otherwise, for
each candidate threshold t with n labelled records predicted L at or above it, k of them correct and p = k/n
> P, the count at which the same bound would reach P if the observed precision held: n*(t) - n, n*(t) the
smallest n' >= n with ``lower_bound(p n', n') >= P`` (the Beta quantile is continuous in k, and increases
with n' at a fixed p). The answer is the fewest of these, with its t (among equals the lowest t): "N more
labelled records predicted L with score >= t". "cannot reach" when no threshold has p > P: the bound stays
below p, so no number of labels at the observed precision gets there. With no labelled record yet: m.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from zs_ray.workflow.data import Labelled, load_for, require_labels

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


def _scan(scores, correct, confidence: float):
    """For each candidate threshold t (the scores, descending): n labelled records at or above t, k correct, and
    the lower bound of k/n."""
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    n = np.arange(1, len(s) + 1)
    k = np.cumsum(c)
    last = np.r_[s[1:] != s[:-1], True]  # the last record of each run of equal scores: t = that score
    n, k, t = n[last], k[last], s[last]
    return n, k, t, lower_bound(k, n, confidence)


def more_needed(k, n, target: float, confidence: float):
    """How many more labelled records, at the observed precision p = k/n, until the lower bound reaches
    ``target``: n* - n for the smallest n* >= n with lower_bound(p n*, n*) >= target (doubling, then a binary
    search: the bound increases with n at a fixed p); None (-1 in an array) where p <= target (it never does).
    Vectorised over arrays ``k``, ``n``; n = 0 needs ``needed`` (all of them correct)."""
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k, n = np.atleast_1d(np.asarray(k, dtype=float)), np.atleast_1d(np.asarray(n, dtype=float))
    out = np.full(k.shape, -1, dtype=np.int64)
    out[n == 0] = needed(target, confidence)
    live = np.nonzero((n > 0) & (k > target * n))[0]
    if live.size:
        p = k[live] / n[live]

        def ok(size):
            return lower_bound(p * size, size, confidence) >= target

        lo, hi = n[live] - 1, n[live].copy()  # not ok(lo) (or lo = n - 1), ok(hi) once doubled enough
        while not (passed := ok(hi)).all():
            lo, hi = np.where(passed, lo, hi), np.where(passed, hi, 2 * hi)
        while (hi - lo > 1).any():
            mid = np.floor((lo + hi) / 2)
            good = ok(mid) & (hi - lo > 1)
            lo, hi = np.where(good | (hi - lo <= 1), lo, mid), np.where(good, mid, hi)
        out[live] = (hi - n[live]).astype(np.int64)
    if scalar:
        return None if out[0] < 0 else int(out[0])
    return out


def more_labels(scores, correct, target: float, confidence: float, found: bool) -> dict:
    """``more_labels`` of one label (see the module docstring): status enough / more / cannot reach."""
    if found:
        return {"status": "enough", "count": 0}
    if len(scores) == 0:
        return {"status": "more", "count": needed(target, confidence), "at_threshold": None, "labelled_above": 0,
                "observed_precision": None}
    n, k, t, _ = _scan(scores, correct, confidence)
    more = more_needed(k, n, target, confidence)
    reach = np.nonzero(more >= 0)[0]
    if reach.size == 0:
        best = int(np.argmax(k / n))
        return {"status": "cannot reach", "count": None, "at_threshold": float(t[best]),
                "labelled_above": int(n[best]), "observed_precision": float(k[best] / n[best])}
    fewest = more[reach].min()
    i = int(reach[more[reach] == fewest][-1])  # the fewest more labels; among equals the lowest threshold
    return {"status": "more", "count": int(more[i]), "at_threshold": float(t[i]), "labelled_above": int(n[i]),
            "observed_precision": float(k[i] / n[i])}


def choose(scores, correct, target: float, confidence: float) -> dict:
    """The lowest threshold (one of ``scores``) whose lower bound reaches ``target`` for these labelled records."""
    n_all, m = len(scores), needed(target, confidence)
    if n_all < m:
        return {"threshold": None, "status": f"too few labels ({n_all}, need {m})", "labelled": n_all, "needed": m}
    n, k, t, lb = _scan(scores, correct, confidence)
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
        res["more_labels"] = more_labels(data.score[sel], data.gold[sel] == lab, target, confidence,
                                         res.get("threshold") is not None)
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
    data = load_for(config)
    require_labels(data)
    result = {"input": str(config.input), "target_precision": config.target_precision,
              "confidence": config.confidence, "bound": BOUND, "records": int(len(data.ids)),
              "labelled": data.n_labelled, "left_out": data.notes,
              "labels": compute(data, config.target_precision, config.confidence)}
    write_json(config.output, result)
    return result


def write_json(path: Optional[str], result: dict) -> None:
    """``result`` as the JSON file ``path`` (its folder made); nothing for no path or ``-`` (printed instead)."""
    if path and path != "-":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, ensure_ascii=False)


def table(result: dict, output: Optional[str] = None) -> str:
    head = (f"target precision {result['target_precision']} at the {result['bound']} ({result['confidence']:.0%}); "
            f"{result['labelled']} labelled of {result['records']} records")
    rows = [("label", "threshold", "precision", "lower bound", "labelled above", "coverage", "would label",
             "more labels", "")]
    for lab, r in result["labels"].items():
        more = _more_cell(r.get("more_labels") or {}, result["target_precision"])
        if r.get("threshold") is None:
            rows.append((lab, "-", "", "", "", "", "", more, r["status"]))
        else:
            rows.append((lab, f"{r['threshold']:.4f}", f"{r['precision']:.3f}", f"{r['lower_bound']:.3f}",
                         str(r["labelled_above"]), f"{r['coverage']:.1%}", str(r["would_label"]), more, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if output:
        lines.append(f"wrote {output}")
    return "\n".join(lines)


def _more_cell(more: dict, target: float) -> str:
    status = more.get("status")
    if status == "enough":
        return "enough"
    if status == "cannot reach":
        return f"cannot reach ({more['observed_precision']:.3f} <= {target})"
    if status == "more":
        at = more.get("at_threshold")
        return f"{more['count']}" + ("" if at is None else f" (score >= {at:.4f})")
    return ""
