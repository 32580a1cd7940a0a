"""``zs-ray evaluate``: how good are the zero-shot predictions, on the records people labelled.

Metrics (scikit-learn computes them; nothing here re-implements a metric it has):

* accuracy, macro-F1 (over the labels that occur as gold or as prediction), per-label precision, recall,
  F1 and support, the confusion matrix (rows gold, columns predicted);
* 95% confidence intervals: Wilson score intervals for the proportions (accuracy, each label's precision
  and recall: binomial proportions, where Wilson keeps its coverage at small n and near 0 or 1, unlike
  the normal approximation), a seeded percentile bootstrap for macro-F1 (not a proportion;
  ``bootstrap_macro_f1``, which ``zs-ray tune`` shares for its paired comparisons);
* coverage and precision against the score threshold t (0.00 to 1.00 by 0.01): the share of records with
  score >= t, and the accuracy among them; the same per predicted label (coverage within that label);
* calibration: expected calibration error over ``bins`` equal-width bins of the top score (sum over bins
  of |accuracy - mean score| * share of records), and the reliability diagram's points
  (``sklearn.calibration.calibration_curve``).

Writes ``metrics.json`` and ``report.html`` (``zs_ray.workflow.report``) into ``--output``.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.workflow.data import Labelled, load_for, require_labels

THRESHOLDS = [round(x, 2) for x in np.linspace(0, 1, 101)]


def wilson(k: int, n: int, confidence: float = 0.95) -> Optional[list[float]]:
    """The Wilson score interval of k successes in n trials (scipy's ``binomtest``); None for n == 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def threshold_curves(pred, score, correct, labels) -> dict:
    """Coverage and precision at each threshold, overall and per predicted label."""
    def curve(mask):
        n = int(mask.sum())
        cov, prec, count = [], [], []
        for t in THRESHOLDS:
            above = mask & (score >= t)
            m = int(above.sum())
            count.append(m)
            cov.append(m / n if n else None)
            prec.append(float(correct[above].mean()) if m else None)
        return {"coverage": cov, "precision": prec, "records": count}

    everything = np.ones(len(score), dtype=bool)
    return {"thresholds": THRESHOLDS, "all": curve(everything),
            "by_label": {lab: curve(pred == lab) for lab in labels}}


def calibration(score, correct, bins: int) -> dict:
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(score, edges[1:-1], right=False), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    acc = np.array([correct[idx == b].mean() if counts[b] else np.nan for b in range(bins)])
    conf = np.array([score[idx == b].mean() if counts[b] else np.nan for b in range(bins)])
    nz = counts > 0
    ece = float(np.sum(np.abs(acc[nz] - conf[nz]) * counts[nz]) / counts.sum())
    prob_true, prob_pred = calibration_curve(correct.astype(int), score, n_bins=bins, strategy="uniform")
    return {"bins": bins, "ece": ece, "edges": edges.tolist(), "counts": counts.tolist(),
            "accuracy": [None if np.isnan(a) else float(a) for a in acc],
            "confidence": [None if np.isnan(c) else float(c) for c in conf],
            "curve": {"mean_score": prob_pred.tolist(), "accuracy": prob_true.tolist()}}


def bootstrap_macro_f1(gold, preds, labels, resamples: int, seed: int = 0) -> np.ndarray:
    """Macro-F1 over ``labels`` of each prediction array in ``preds`` on ``resamples`` seeded bootstrap
    resamples of the records: [len(preds), resamples]. Every prediction array is scored on the same
    resamples (paired), so the difference of two has its own interval (``zs-ray tune``)."""
    from sklearn.metrics import f1_score

    gold = np.asarray(gold, dtype=object)
    preds = [np.asarray(p, dtype=object) for p in preds]
    n = len(gold)
    rng = np.random.default_rng(seed)
    out = np.empty((len(preds), resamples))
    for b in range(resamples):
        i = rng.integers(0, n, n)
        for c, pred in enumerate(preds):
            out[c, b] = f1_score(gold[i], pred[i], labels=labels, average="macro", zero_division=0)
    return out


def percentile_ci(values, confidence: float = 0.95) -> Optional[list[float]]:
    """The percentile interval of bootstrap ``values`` (None without any)."""
    if len(values) == 0:
        return None
    tail = 100 * (1 - confidence) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def compute_metrics(gold, pred, score, candidate_labels, bins: int = 10, bootstrap: int = 1000,
                    seed: int = 0) -> dict:
    """Every metric of the report from aligned arrays of human labels, predictions and scores."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    gold, pred = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    score = np.asarray(score, dtype=float)
    n = len(gold)
    if n == 0:
        raise ZsRayError("no human-labelled records to evaluate")
    present = sorted(set(gold) | set(pred))
    labels = [lab for lab in candidate_labels if lab in present] + [lab for lab in present if lab not in candidate_labels]
    correct = gold == pred
    k = int(correct.sum())
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    macro = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    boots = bootstrap_macro_f1(gold, [pred], labels, bootstrap, seed)[0]
    per_label = {}
    for j, lab in enumerate(labels):
        tp = int(((pred == lab) & (gold == lab)).sum())
        n_pred, n_gold = int((pred == lab).sum()), int((gold == lab).sum())
        per_label[lab] = {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]),
                          "predicted": n_pred, "true_positives": tp,
                          "precision_ci95": wilson(tp, n_pred), "recall_ci95": wilson(tp, n_gold)}
    return {
        "records": n,
        "labels": labels,
        "accuracy": float(accuracy_score(gold, pred)),
        "accuracy_ci95": wilson(k, n),
        "macro_f1": macro,
        "macro_f1_ci95": percentile_ci(boots),
        "per_label": per_label,
        "confusion_matrix": {"labels": labels, "rows": "gold", "columns": "predicted",
                             "matrix": confusion_matrix(gold, pred, labels=labels).tolist()},
        "threshold_curves": threshold_curves(pred, score, correct, labels),
        "calibration": calibration(score, correct, bins),
        "intervals": {"proportions": "Wilson score interval, 95%",
                      "macro_f1": f"percentile bootstrap, {bootstrap} resamples, seed {seed}, 95%"},
    }


def evaluate(config) -> dict:
    """Run ``zs-ray evaluate`` (``EvaluateConfig``): returns the metrics written to metrics.json."""
    from tqdm.auto import tqdm

    from zs_ray.workflow.report import write_report

    steps = tqdm(total=3, desc="evaluate", unit="step", disable=None)
    data: Labelled = load_for(config)
    require_labels(data)
    steps.update()
    mask = data.has_gold
    metrics = compute_metrics(data.gold[mask], data.pred[mask], data.score[mask], data.labels, config.bins,
                              config.bootstrap, config.seed)
    metrics["input"] = {"source": str(config.input), "kind": data.kind, "records": int(len(data.ids)),
                        "labelled": int(mask.sum()), "left_out": data.notes, "unmapped": data.unmapped,
                        "gold": f"column {config.gold_column} through {config.label_map}" if config.gold_column
                        else f"annotations with status {', '.join(config.status)}, agents other than "
                             f"{', '.join(config.exclude_agent) or 'none'}"}
    steps.update()
    os.makedirs(config.output, exist_ok=True)
    with open(os.path.join(config.output, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2, ensure_ascii=False)
    write_report(metrics, os.path.join(config.output, "report.html"), title=config.title or str(config.input))
    steps.update()
    steps.close()
    return metrics


def summary(metrics: dict, output: str) -> str:
    lo, hi = metrics["accuracy_ci95"]
    flo, fhi = metrics["macro_f1_ci95"] or (float("nan"), float("nan"))
    lines = [f"evaluated {metrics['records']} labelled records of {metrics['input']['records']}: accuracy "
             f"{metrics['accuracy']:.3f} [{lo:.3f}, {hi:.3f}], macro-F1 {metrics['macro_f1']:.3f} [{flo:.3f}, {fhi:.3f}], "
             f"ECE {metrics['calibration']['ece']:.3f}"]
    lines += [f"  note: {n}" for n in metrics["input"]["left_out"]]
    lines.append(f"  wrote {os.path.join(output, 'metrics.json')} and {os.path.join(output, 'report.html')}")
    return "\n".join(lines)
