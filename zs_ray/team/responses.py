"""The input of the team tools: every submitted single-label answer, as three parallel integer arrays.

One entry per (record, annotator) answer: ``record[i]`` answered by ``annotator[i]`` with ``label[i]``, each an
index into ``ids``, ``annotators`` and ``labels``. Arrays (not a list of dicts) so that agreement and consensus
stay vectorised at 100,000 records and more. ``ids`` lists every record, also those nobody answered, so results
line up with the caller's records.

One answer per (record, annotator): if an annotator answered a record twice (a resubmission), the LAST answer
in the arrays' order is kept and the earlier ones are dropped, here, once, when the object is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np


@dataclass
class Responses:
    """Submitted single-label answers: one entry per (record, annotator) answer."""

    record: np.ndarray     # int64, index into ids
    annotator: np.ndarray  # int64, index into annotators
    label: np.ndarray      # int64, index into labels
    ids: list[str]         # every record (also those with no answer)
    annotators: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        self.record = np.asarray(self.record, dtype=np.int64).ravel()
        self.annotator = np.asarray(self.annotator, dtype=np.int64).ravel()
        self.label = np.asarray(self.label, dtype=np.int64).ravel()
        self.ids, self.annotators, self.labels = list(self.ids), list(self.annotators), list(self.labels)
        if not (len(self.record) == len(self.annotator) == len(self.label)):
            raise ValueError("record, annotator and label must have the same length")
        for name, arr, size in (("record", self.record, len(self.ids)),
                                ("annotator", self.annotator, len(self.annotators)),
                                ("label", self.label, len(self.labels))):
            if len(arr) and (arr.min() < 0 or arr.max() >= size):
                raise ValueError(f"{name} index out of range 0..{size - 1}")
        self._keep_last()

    def _keep_last(self) -> None:
        """Drop all but the last answer of each (record, annotator) pair, keeping the arrays' order."""
        if not len(self.record):
            return
        key = self.record * max(len(self.annotators), 1) + self.annotator
        _, first_from_end = np.unique(key[::-1], return_index=True)
        if len(first_from_end) == len(key):
            return
        keep = np.sort(len(key) - 1 - first_from_end)
        self.record, self.annotator, self.label = self.record[keep], self.annotator[keep], self.label[keep]

    @property
    def n_records(self) -> int:
        return len(self.ids)

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def counts(self) -> np.ndarray:
        """(n_records, n_labels) int64: how many answers gave each label to each record."""
        flat = np.bincount(self.record * self.n_labels + self.label, minlength=self.n_records * self.n_labels)
        return flat.reshape(self.n_records, self.n_labels).astype(np.int64)

    def answers_per_record(self) -> np.ndarray:
        """(n_records,) int64: the number of answers of each record."""
        return np.bincount(self.record, minlength=self.n_records).astype(np.int64)

    @classmethod
    def from_lists(cls, ids: Sequence[str], per_record: Sequence[Iterable[tuple[str, str]]],
                   labels: Optional[Sequence[str]] = None) -> "Responses":
        """Build from ``per_record[i] = [(annotator, label), ...]`` for record ``ids[i]``.

        ``labels`` defaults to the sorted union of the labels given; annotators are numbered in order of first
        appearance. A label missing from an explicit ``labels`` raises ValueError.
        """
        if len(per_record) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(per_record)} per-record answer lists")
        pairs = [(i, str(a), str(lab)) for i, answers in enumerate(per_record) for a, lab in answers]
        if labels is None:
            labels = sorted({lab for _, _, lab in pairs})
        label_index = {lab: k for k, lab in enumerate(labels)}
        missing = sorted({lab for _, _, lab in pairs} - set(label_index))
        if missing:
            raise ValueError(f"answers with labels not in labels: {missing[:5]}")
        annotator_index: dict[str, int] = {}
        for _, a, _ in pairs:
            annotator_index.setdefault(a, len(annotator_index))
        return cls(record=np.array([i for i, _, _ in pairs], dtype=np.int64),
                   annotator=np.array([annotator_index[a] for _, a, _ in pairs], dtype=np.int64),
                   label=np.array([label_index[lab] for _, _, lab in pairs], dtype=np.int64),
                   ids=list(ids), annotators=list(annotator_index), labels=list(labels))
