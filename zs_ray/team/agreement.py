"""How much a team of annotators agrees: Krippendorff's alpha, Fleiss' kappa, Cohen's kappa, and who is off.

Every statistic works on an (n_units, n_categories) count matrix (``Responses.counts()``): how many answers gave
each category to each unit. Units with fewer than 2 answers cannot be paired and are ignored. The statistics
take optional per-unit ``weights`` (a vector, or a (n_replicates, n_units) matrix), so a bootstrap replicate is
a vector of multiplicities and all replicates are a few matrix products: 1000 replicates over 100,000 units
in seconds. ``report`` gathers it all as JSON-ready numbers (None for "not defined", never nan).

Multi-label answers: per label, build (n_units, 2) yes/no counts with ``binary_counts`` and pass them to
``krippendorff_alpha`` / ``fleiss_kappa``: the per-label agreement of a multi-label dataset.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .responses import Responses

CHUNK_BYTES = 64 << 20   # one chunk of bootstrap multiplicities (float64): memory stays far below 1 GB
MIN_OVERLAP = 10         # answers on shared records an annotator needs to be judged by the flagging rule


def _pairable(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    n_u = counts.sum(1)
    keep = n_u >= 2
    return counts[keep], n_u[keep]


def _weighted(counts: np.ndarray, weights: Optional[np.ndarray], features: Callable, finish: Callable):
    """``finish(weights @ features(pairable units))``: a float without weights or for a weight vector, an
    array for a (n_replicates, n_units) weight matrix (weights for every unit of ``counts``, or its pairable)."""
    c, n_u = _pairable(counts)
    if weights is None:
        sums, single = features(c, n_u).sum(0, keepdims=True), True
    else:
        w = np.asarray(weights, dtype=np.float64)
        single = w.ndim == 1
        w = w.reshape(1, -1) if single else w
        keep = np.asarray(counts).sum(1) >= 2
        if w.shape[1] == len(keep) and not keep.all():
            w = w[:, keep]
        sums = w @ features(c, n_u)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = finish(sums)
    return float(values[0]) if single else values


def _alpha_features(c: np.ndarray, n_u: np.ndarray) -> np.ndarray:
    d_u = (n_u ** 2 - (c ** 2).sum(1)) / np.maximum(n_u - 1, 1)
    return np.column_stack([n_u, d_u, c])


def _alpha_finish(s: np.ndarray) -> np.ndarray:
    n, disagreement, n_c = s[:, 0], s[:, 1], s[:, 2:]
    expected = n ** 2 - (n_c ** 2).sum(1)
    return np.where(expected > 0, 1.0 - (n - 1) * disagreement / expected, np.nan)


def _kappa_features(c: np.ndarray, n_u: np.ndarray) -> np.ndarray:
    p_i = ((c ** 2).sum(1) - n_u) / np.maximum(n_u * (n_u - 1), 1)
    return np.column_stack([np.ones_like(n_u), p_i, n_u, c])


def _kappa_finish(s: np.ndarray) -> np.ndarray:
    p_bar = s[:, 1] / s[:, 0]
    p_e = ((s[:, 3:] / s[:, 2:3]) ** 2).sum(1)
    return np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)


def _observed_features(c: np.ndarray, n_u: np.ndarray) -> np.ndarray:
    return np.column_stack([(c * (c - 1)).sum(1), n_u * (n_u - 1)])


def _observed_finish(s: np.ndarray) -> np.ndarray:
    return s[:, 0] / s[:, 1]


def krippendorff_alpha(counts: np.ndarray, weights: Optional[np.ndarray] = None):
    """Nominal Krippendorff's alpha from the coincidence-matrix formula; nan when there is no variation.

    alpha = 1 - (n-1) * sum_u [(n_u^2 - sum_c n_uc^2)/(n_u - 1)] / (n^2 - sum_c n_c^2), over pairable units.
    ``weights``: per-unit multiplicities, a vector, or one row per replicate (then an array comes back).
    """
    return _weighted(counts, weights, _alpha_features, _alpha_finish)


def fleiss_kappa(counts: np.ndarray, weights: Optional[np.ndarray] = None):
    """Fleiss' kappa, with a varying number of raters per unit (units with < 2 raters ignored).

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)), P_bar = mean P_i, p_j = sum_i n_ij / sum n, P_e = sum p_j^2.
    """
    return _weighted(counts, weights, _kappa_features, _kappa_finish)


def observed_agreement(counts: np.ndarray, weights: Optional[np.ndarray] = None):
    """The share of agreeing pairs among all pairs of answers given to the same unit."""
    return _weighted(counts, weights, _observed_features, _observed_finish)


_PARTS = {krippendorff_alpha: (_alpha_features, _alpha_finish), fleiss_kappa: (_kappa_features, _kappa_finish),
          observed_agreement: (_observed_features, _observed_finish)}


def _bootstrap(counts: np.ndarray, statistics: Sequence[Callable], n_boot: int, seed: int,
               level: float) -> list[tuple[float, float]]:
    """Percentile intervals of several statistics from the same replicates over the pairable units.

    A replicate is a vector of multiplicities (n draws with replacement, counted by bincount); the statistics
    above share one (replicates x units) @ (units x features) product per chunk of replicates; any other
    callable is called as ``statistic(pairable_counts, weights=multiplicities)``.
    """
    c, n_u = _pairable(counts)
    n_units = len(c)
    if n_units == 0 or n_boot <= 0:
        return [(float("nan"), float("nan")) for _ in statistics]
    rng = np.random.default_rng(seed)
    parts = [_PARTS.get(stat) for stat in statistics]
    feats = [p[0](c, n_u) for p in parts if p]
    X = np.hstack(feats) if feats else None
    bounds = np.cumsum([0] + [f.shape[1] for f in feats])
    chunk = max(1, min(n_boot, CHUNK_BYTES // (8 * n_units)))
    values = [np.empty(n_boot) for _ in statistics]
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        draws = rng.integers(0, n_units, size=(b, n_units)) + (np.arange(b) * n_units)[:, None]
        mult = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        del draws
        sums = mult @ X if X is not None else None
        f = 0
        for out, stat, p in zip(values, statistics, parts):
            if p:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[lo:lo + b] = p[1](sums[:, bounds[f]:bounds[f + 1]])
                f += 1
            else:
                out[lo:lo + b] = stat(c, weights=mult)
    tail = (1.0 - level) / 2
    result = []
    for v in values:
        v = v[np.isfinite(v)]
        result.append((float(np.quantile(v, tail)), float(np.quantile(v, 1 - tail))) if len(v)
                      else (float("nan"), float("nan")))
    return result


def bootstrap_interval(counts: np.ndarray, statistic: Callable = krippendorff_alpha, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval over units of ``statistic(counts, weights=...)``: (low, high)."""
    return _bootstrap(counts, [statistic], n_boot, seed, level)[0]


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa of two annotators' labels on their shared records; nan for < 2 records or no variation."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2:
        return float("nan")
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b))


def binary_counts(per_record_labelsets: Iterable[Iterable[Iterable[str]]], label: str) -> np.ndarray:
    """(n_units, 2) yes/no counts of one label in multi-label answers.

    ``per_record_labelsets[i]`` holds each answer of record i as a set of labels; column 0 counts the answers
    that include ``label``, column 1 those that do not.
    """
    rows = [(sum(label in set(s) for s in answers), sum(label not in set(s) for s in answers))
            for answers in (list(a) for a in per_record_labelsets)]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def disagreement_order(responses: Responses) -> np.ndarray:
    """Record indices with any disagreement, most first: 1 - share of the top label, then more answers first."""
    counts = responses.counts()
    n = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(n >= 2, 1.0 - counts.max(1, initial=0) / np.maximum(n, 1), 0.0)
    idx = np.flatnonzero(d > 1e-12)
    return idx[np.lexsort((-n[idx], -d[idx]))]


def _num(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _annotators(r: Responses, counts: np.ndarray, model_pred: Optional[np.ndarray]) -> dict:
    n = counts.sum(1)
    J = len(r.annotators)
    pairs = np.bincount(r.annotator, weights=n[r.record] - 1, minlength=J)
    agreeing = np.bincount(r.annotator, weights=counts[r.record, r.label] - 1, minlength=J)
    records = np.bincount(r.annotator, minlength=J)
    overlap = np.bincount(r.annotator, weights=n[r.record] >= 2, minlength=J)
    order = np.lexsort((r.record, r.annotator))
    bounds = np.searchsorted(r.annotator[order], np.arange(J + 1))
    own = [(r.record[order[bounds[j]:bounds[j + 1]]], r.label[order[bounds[j]:bounds[j + 1]]]) for j in range(J)]
    kappas: dict[int, dict[str, Optional[float]]] = {j: {} for j in range(J)}
    for i in range(J):
        for j in range(i + 1, J):
            _, ia, ja = np.intersect1d(own[i][0], own[j][0], assume_unique=True, return_indices=True)
            if len(ia):
                k = _num(cohen_kappa(own[i][1][ia], own[j][1][ja]))
                kappas[i][r.annotators[j]] = kappas[j][r.annotators[i]] = k
    out = {}
    for j, name in enumerate(r.annotators):
        entry = {"records": int(records[j]), "overlap_answers": int(overlap[j]),
                 "agreement_with_others": _num(agreeing[j] / pairs[j]) if pairs[j] else None,
                 "cohen_kappa": kappas[j], "agreement_with_model": None, "flagged": False, "why": None}
        if model_pred is not None:
            recs, labs = own[j]
            pred = np.asarray(model_pred)[recs]
            has = pred >= 0
            entry["agreement_with_model"] = _num(np.mean(labs[has] == pred[has])) if has.any() else None
        out[name] = entry
    _flag(out)
    return out


def _flag(annotators: dict) -> None:
    """Flag an annotator far below the rest of the team: the others' median - agreement > max(0.1, 3 * the others'
    MAD), among >= 3 judged. Leave-one-out, so that one careless annotator in a team of three does not widen
    the spread they are judged by."""
    judged = {a: e["agreement_with_others"] for a, e in annotators.items()
              if e["overlap_answers"] >= MIN_OVERLAP and e["agreement_with_others"] is not None}
    if len(judged) < 3:
        return
    for name, value in judged.items():
        others = np.array([v for a, v in judged.items() if a != name])
        median = float(np.median(others))
        limit = max(0.1, 3 * float(np.median(np.abs(others - median))))
        if median - value > limit:
            annotators[name]["flagged"] = True
            annotators[name]["why"] = (f"agrees with the others on {value:.0%} of the answers they share; "
                                       f"the rest of the team's median is {median:.0%} (flagged below "
                                       f"{median - limit:.0%})")


def report(responses: Responses, model_pred: Optional[np.ndarray] = None, n_boot: int = 1000,
           seed: int = 0) -> dict:
    """The team's agreement as a JSON-ready dict (None where a figure is not defined).

    ``model_pred``: per record, the model's label index (-1 = none), for each annotator's agreement with it.
    The caller adds ``unresolved`` from ``consensus.resolve``.
    """
    r = responses
    counts = r.counts()
    n = counts.sum(1)
    labels = list(r.labels)
    value = {"krippendorff_alpha": krippendorff_alpha(counts), "fleiss_kappa": fleiss_kappa(counts)}
    ci = _bootstrap(counts, [krippendorff_alpha, fleiss_kappa], n_boot, seed, 0.95)
    out: dict = {"records": int((n >= 1).sum()), "overlap_records": int((n >= 2).sum()),
                 "responses": int(len(r.label)), "labels": labels}
    for (name, v), (low, high) in zip(value.items(), ci):
        out[name] = {"value": _num(v), "low": _num(low), "high": _num(high)}
    out["observed_agreement"] = _num(observed_agreement(counts))
    per_label = {}
    for k, lab in enumerate(labels):
        yes_no = np.stack([counts[:, k], n - counts[:, k]], axis=1)
        per_label[lab] = {"krippendorff_alpha": _num(krippendorff_alpha(yes_no)),
                          "fleiss_kappa": _num(fleiss_kappa(yes_no)),
                          "observed_agreement": _num(observed_agreement(yes_no)),
                          "answers": int(counts[:, k].sum())}
    out["per_label"] = per_label
    out["annotators"] = _annotators(r, counts, model_pred)
    out["flagged"] = [a for a, e in out["annotators"].items() if e["flagged"]]
    c = counts.astype(np.float64)
    matrix = np.rint(c.T @ c).astype(np.int64)
    np.fill_diagonal(matrix, 0)
    out["disagreement"] = {"labels": labels, "matrix": matrix.tolist()}
    a_idx, b_idx = np.triu_indices(len(labels), 1)
    top = [(int(matrix[a, b]), a, b) for a, b in zip(a_idx, b_idx) if matrix[a, b] > 0]
    top.sort(key=lambda t: (-t[0], t[1], t[2]))
    out["confused_pairs"] = [{"a": labels[a], "b": labels[b], "pairs": p} for p, a, b in top[:10]]
    return out
