"""One definition of a record's consensus label when several people (and a model) answered it.

``resolve(responses, method)`` with three methods:

* ``majority``: the most frequent label; a tie for first stays unresolved (-1).
* ``dawid-skene``: Dawid & Skene (1979) EM: each annotator has a confusion matrix, so a careful annotator's
  answer outweighs a careless one's, and ties of majority get decided.
* ``model-weighted``: the idea of CROWDLAB (Goh, Mueller et al. 2022, written from the paper): the zero-shot
  model's scores are one more, weighted, voice beside the annotators; weights come from agreement with the
  majority consensus, measured against the accuracy of always answering the most common class.

Whatever the method, a reviewer's answer decides the record (``reviewers``). A record nobody answered is -1,
``decided_by`` None, and does not count as unresolved. Everything is vectorised over the answer arrays
(bincount, sparse products), with no Python loop over records or answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import sparse

from .responses import Responses

METHODS = ("majority", "dawid-skene", "model-weighted")
SMOOTHING = 0.01   # added to every cell of a Dawid-Skene confusion count matrix: no zero probabilities
EPSILON = 1e-3     # the smallest weight of an annotator or the model in model-weighted


@dataclass
class Consensus:
    """Per record: the label (-1 = unresolved or no answer), who decided it, and how sure."""

    label: np.ndarray                # int64, index into labels; -1 = unresolved or no answer
    decided_by: np.ndarray           # object: annotator's name (one answer), "consensus", a reviewer's name, None
    confidence: np.ndarray           # float: posterior (or vote share for majority) of the label; nan where none
    posterior: Optional[np.ndarray]  # (n_records, n_labels) for dawid-skene and model-weighted, else None
    annotator_quality: dict[str, float] = field(default_factory=dict)  # D-S accuracy, or model-weighted weight
    answers: Optional[np.ndarray] = None  # int64 per record: how many answers it has

    @property
    def unresolved(self) -> int:
        """Records with at least one answer and no label."""
        answered = self.answers > 0 if self.answers is not None else np.ones(len(self.label), bool)
        return int(np.count_nonzero(answered & (self.label < 0)))


def _majority(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most frequent label (-1 on a tie for first or no answer) and its share of the answers."""
    n = counts.sum(1)
    top = counts.max(1) if counts.shape[1] else np.zeros(len(counts), np.int64)
    tied = (counts == top[:, None]).sum(1) > 1
    label = np.where((n > 0) & ~tied, counts.argmax(1) if counts.shape[1] else -1, -1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(label >= 0, top / np.maximum(n, 1), np.nan)
    return label, share


def _dawid_skene(r: Responses, counts: np.ndarray, max_iter: int = 100,
                 tol: float = 1e-6) -> tuple[np.ndarray, dict[str, float]]:
    """Posteriors (n_records, K) by EM, and each annotator's estimated accuracy."""
    n_rec, K, J = r.n_records, r.n_labels, len(r.annotators)
    n = counts.sum(1)
    answered = n > 0
    top = counts.max(1, keepdims=True)
    T = (counts == top) & answered[:, None]
    T = T / np.maximum(T.sum(1, keepdims=True), 1)             # majority, ties split evenly
    # S[i, j*K + l] = 1 when annotator j gave label l to record i: both EM steps are products with S
    S = sparse.csr_matrix((np.ones(len(r.record)), (r.record, r.annotator * K + r.label)), shape=(n_rec, J * K))
    St = S.T.tocsr()
    M = np.zeros((J, K, K))
    for _ in range(max_iter):
        prior = T.sum(0) + SMOOTHING                              # unanswered rows are 0
        prior /= prior.sum()
        M = np.asarray(St @ T).reshape(J, K, K).transpose(0, 2, 1)   # soft counts M[j, true k, given l]
        conf = (M + SMOOTHING) / (M + SMOOTHING).sum(2, keepdims=True)
        log_conf = np.log(conf).transpose(0, 2, 1).reshape(J * K, K)  # [(j, given l), true k]
        log_post = np.log(prior)[None, :] + np.asarray(S @ log_conf)
        log_post -= log_post.max(1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(1, keepdims=True)
        new[~answered] = 0.0
        change = float(np.abs(new - T).max()) if len(T) else 0.0
        T = new
        if change < tol:
            break
    quality = {}                                                # expected share of correct answers
    for j, name in enumerate(r.annotators):                     # (an annotator with no answer: none)
        if M[j].sum() > 0:
            quality[name] = float(np.trace(M[j]) / M[j].sum())
    return T, quality


def _model_weighted(r: Responses, counts: np.ndarray, model_probs: np.ndarray) -> tuple[np.ndarray, dict]:
    """CROWDLAB-style posteriors: the model and each annotator weighted by agreement beyond the baseline."""
    n_rec, K, J = r.n_records, r.n_labels, len(r.annotators)
    n = counts.sum(1)
    answered, overlap = n > 0, n > 1
    top = counts.max(1, keepdims=True)
    tied_scores = np.where(counts == top, model_probs, -np.inf)
    cons = np.where(answered, tied_scores.argmax(1), -1)         # majority, ties broken by the model
    judged = overlap if overlap.any() else answered
    baseline = np.bincount(cons[judged], minlength=K).max() / max(judged.sum(), 1) if judged.any() else 0.0
    room = max(1.0 - baseline, EPSILON)
    on_overlap = overlap[r.record]
    agree = (r.label == cons[r.record]) & on_overlap
    seen = np.bincount(r.annotator, weights=on_overlap, minlength=J)
    acc = np.bincount(r.annotator, weights=agree, minlength=J) / np.maximum(seen, 1)
    if (seen == 0).any():                                       # no overlap: the average annotator's agreement
        fill = acc[seen > 0].mean() if (seen > 0).any() else (
            float(np.mean(model_probs[answered].argmax(1) == cons[answered])) if answered.any() else 1.0 / K)
        acc = np.where(seen > 0, acc, fill)
    weight = np.maximum(1.0 - (1.0 - acc) / room, EPSILON)
    acc_model = float(np.mean(model_probs[judged].argmax(1) == cons[judged])) if judged.any() else 0.0
    mean_answers = float(n[answered].mean()) if answered.any() else 0.0
    w_model = max((1.0 - (1.0 - acc_model) / room) * np.sqrt(mean_answers), EPSILON)
    off = (1.0 - acc) / (K - 1) if K > 1 else np.zeros(J)       # a vote's mass on each other label
    w = weight[r.annotator]
    num = w_model * model_probs
    num += np.bincount(r.record, weights=w * off[r.annotator], minlength=n_rec)[:, None]
    num += np.bincount(r.record * K + r.label, weights=w * (acc - off)[r.annotator],
                       minlength=n_rec * K).reshape(n_rec, K)
    den = w_model + np.bincount(r.record, weights=w, minlength=n_rec)
    post = num / den[:, None]
    post[~answered] = 0.0
    quality = {name: float(weight[j]) for j, name in enumerate(r.annotators)}
    quality["model"] = float(w_model)
    return post, quality


def resolve(responses: Responses, method: str = "majority", reviewers: Sequence[str] = (),
            model_probs: Optional[np.ndarray] = None) -> Consensus:
    """The consensus label of every record of ``responses`` by ``method`` (one of METHODS).

    ``reviewers``: annotator names whose answer, where they gave one, decides the record (the last reviewer
    answer in the arrays' order when several reviewers answered); otherwise their answers count like any other.
    ``model_probs``: (n_records, n_labels) scores, rows summing to 1; required by ``model-weighted``.
    ``decided_by`` is the annotator's name when exactly one person answered and the label is theirs,
    "consensus" otherwise, a reviewer's name where a reviewer decided, None where there is no label.
    """
    if method not in METHODS:
        raise ValueError(f"unknown consensus method {method!r}; choose one of {', '.join(METHODS)}")
    r, counts = responses, responses.counts()
    n = counts.sum(1)
    posterior, quality = None, {}
    if method == "majority":
        label, confidence = _majority(counts)
    else:
        if method == "dawid-skene":
            posterior, quality = _dawid_skene(r, counts)
        else:
            if model_probs is None:
                raise ValueError("method 'model-weighted' needs model_probs: (n_records, n_labels) model scores")
            model_probs = np.asarray(model_probs, dtype=np.float64)
            if model_probs.shape != counts.shape:
                raise ValueError(f"model_probs has shape {model_probs.shape}, expected {counts.shape} "
                                 "(n_records, n_labels)")
            posterior, quality = _model_weighted(r, counts, model_probs)
        label = np.where(n > 0, posterior.argmax(1) if r.n_labels else -1, -1).astype(np.int64)
        confidence = np.where(label >= 0, posterior[np.arange(len(label)), np.maximum(label, 0)], np.nan)

    decided_by = np.full(r.n_records, None, dtype=object)
    decided_by[label >= 0] = "consensus"
    single = np.flatnonzero(n[r.record] == 1)                    # answers that are their record's only one
    own = single[label[r.record[single]] == r.label[single]]
    decided_by[r.record[own]] = np.array(r.annotators, dtype=object)[r.annotator[own]]

    names = set(reviewers)
    rev_ids = [j for j, a in enumerate(r.annotators) if a in names]
    if rev_ids:
        rows = np.flatnonzero(np.isin(r.annotator, rev_ids))[::-1]   # last reviewer answer first
        recs, first = np.unique(r.record[rows], return_index=True)
        rows = rows[first]
        label[recs] = r.label[rows]
        decided_by[recs] = np.array(r.annotators, dtype=object)[r.annotator[rows]]
        if posterior is not None:
            confidence[recs] = posterior[recs, label[recs]]
        else:
            confidence[recs] = counts[recs, label[recs]] / n[recs]
    return Consensus(label=label, decided_by=decided_by, confidence=confidence, posterior=posterior,
                     annotator_quality=quality, answers=n)
