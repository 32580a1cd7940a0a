"""The rows ``zs-ray train`` learns from and tests on, split before any training.

The input is read as ``evaluate`` reads it (``zs_ray.workflow.data``): a ``zs-ray pull`` file (a person's
label: an annotation with a status in ``--status``, by an agent not in ``--exclude-agent``) or an
annotation-job output with a gold column and a label map. Then:

* **test**: the human-labelled records of the round-1 sample (pulled records whose metadata holds
  ``sample: round-1``, ``--sample-name``). They are never trained on: the student and the zero-shot teacher
  are both scored on them. An input without any record of the sample (an output with a gold column, or a
  dataset logged without ``--sample``) holds out a seeded, stratified ``--test-fraction`` of its human labels
  instead, and says so.
* **validation**: a seeded, stratified ``--validation-fraction`` of the other human labels (Ray Train
  evaluates each epoch's checkpoint on it; the best one becomes the student).
* **train**: the remaining human labels (``source`` human, weight 1) plus, with ``--thresholds``, the
  zero-shot labels of records nobody labelled whose top score reaches its label's threshold (``source``
  zero-shot, weight ``--zero-shot-weight``). Records of the round-1 sample never join as zero-shot labels,
  nor do records a person annotated without it counting (Discarded, ...): only records with no annotation,
  or one by an excluded agent (the bulk labels, which are zero-shot labels above the thresholds too).

Every human label must be one of the student's labels (``--labels``, default the input's candidate labels):
a label the student does not have is refused in one line rather than dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.workflow.data import Labelled, load_for

HUMAN, ZERO_SHOT = "human", "zero-shot"


@dataclass
class Rows:
    """One split: aligned lists (``weight``: 1 for a person's label, ``--zero-shot-weight`` for a zero-shot one)."""

    ids: list = field(default_factory=list)
    text: list = field(default_factory=list)
    label: list = field(default_factory=list)
    source: list = field(default_factory=list)
    weight: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def for_workers(self, labels: list[str]) -> dict:
        index = {name: i for i, name in enumerate(labels)}
        return {"text": list(self.text), "label": [index[x] for x in self.label], "weight": list(self.weight)}


@dataclass
class TrainData:
    """The student's labels and the three splits; ``teacher_*``: the zero-shot predictions on the test rows."""

    source: str
    labels: list[str]
    train: Rows
    validation: Rows
    test: Rows
    teacher_pred: np.ndarray
    teacher_score: np.ndarray
    test_rule: str
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        return {name: dict(Counter(rows.source), rows=len(rows)) for name, rows in
                (("train", self.train), ("validation", self.validation), ("test", self.test))}

    def fingerprint(self) -> str:
        """What the training depends on (labels, rows, weights): a new pull with other labels is another run."""
        h = hashlib.sha256(json.dumps(self.labels, ensure_ascii=False).encode())
        for rows in (self.train, self.validation):
            for rid, lab, w in zip(rows.ids, rows.label, rows.weight):
                h.update(f"\x1f{rid}\x1e{lab}\x1e{w}".encode())
            h.update(b"\x1d")
        return h.hexdigest()


def _texts_and_samples(data: Labelled, sample_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each record's text and whether it is in the round-1 sample, aligned with ``data.ids``."""
    import pyarrow.parquet as pq

    from zs_ray.servers.config import SAMPLE_KEY

    if data.kind == "pull":
        table = pq.read_table(data.source, columns=["id", "text", "metadata"])
        assert table.column("id").to_pylist() == list(data.ids)
        texts = table.column("text").to_pylist()
        sample = [any(k == SAMPLE_KEY and v == sample_name for k, v in (m or [])) for m in
                  table.column("metadata").to_pylist()]
        return np.array(texts, dtype=object), np.array(sample, dtype=bool)
    from zs_ray.output import open_output

    out = open_output(data.source)
    table = out.dataset.to_table(columns=["id", out.text_field])
    by_id = dict(zip(table.column("id").to_pylist(), table.column(1).to_pylist()))
    return np.array([by_id.get(i) for i in data.ids], dtype=object), np.zeros(len(data.ids), dtype=bool)


def _split(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): a seeded split of ``idx``, stratified by label when every label can be."""
    from sklearn.model_selection import train_test_split

    n_out = int(round(len(idx) * fraction))
    if fraction <= 0 or n_out == 0 or n_out >= len(idx):
        return idx, idx[:0]
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 and len(counts) <= n_out <= len(idx) - len(counts) else None
    kept, held = train_test_split(idx, test_size=n_out, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(held)


def _rows(i: np.ndarray, ids, texts, labels, source: str, weight: float) -> Rows:
    return Rows(list(ids[i]), list(texts[i]), list(labels[i]), [source] * len(i), [float(weight)] * len(i))


def prepare(config, thresholds: Optional[dict] = None) -> TrainData:
    """Read ``config.input`` and split it (``TrainConfig``); ``thresholds``: label -> score for zero-shot labels."""
    data = load_for(config)
    if data.n_labelled == 0:
        extra = f" ({'; '.join(data.notes)})" if data.notes else ""
        raise ZsRayError(f"{config.input} has no human labels to train on: {len(data.ids)} records, none annotated "
                         f"with a status that counts{extra}; label some and pull again")
    labels = list(config.labels or data.labels)
    human = data.has_gold
    texts, in_sample = _texts_and_samples(data, config.sample_name)
    human &= np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
    unknown = Counter(g for g in data.gold[human] if g not in labels)
    if unknown:
        found = ", ".join(f"{k} ({v})" for k, v in sorted(unknown.items()))
        raise ZsRayError(f"human labels the student does not have: {found}"
                         f"; the student's labels (--labels): {', '.join(labels)}")
    notes = list(data.notes)
    all_human = np.nonzero(human)[0]
    if in_sample.any():
        test = np.nonzero(human & in_sample)[0]
        rest = np.nonzero(human & ~in_sample)[0]
        rule = f"the human labels of the {config.sample_name} sample ({int(in_sample.sum())} records marked)"
        if len(test) == 0:
            raise ZsRayError(f"none of the {int(in_sample.sum())} records of the {config.sample_name} sample in "
                             f"{config.input} has a human label: label the sample (the test set) and pull again")
    else:
        rest, test = _split(all_human, data.gold[all_human], config.test_fraction, config.seed)
        rule = f"a seeded {config.test_fraction:.0%} of the human labels (no record is marked {config.sample_name})"
        notes.append(f"no record is marked sample: {config.sample_name}; {rule} is the test set")
    if len(rest) == 0:
        raise ZsRayError(f"all {len(all_human)} human labels of {config.input} are in the test set ({rule}): label "
                         "records outside it to train on")
    train, validation = _split(rest, data.gold[rest], config.validation_fraction, config.seed)
    ids, gold = data.ids, data.gold
    result = TrainData(str(config.input), labels, _rows(train, ids, texts, gold, HUMAN, 1.0),
                       _rows(validation, ids, texts, gold, HUMAN, 1.0), _rows(test, ids, texts, gold, HUMAN, 1.0),
                       data.pred[test], data.score[test], rule, notes)
    if thresholds:
        weak = weak_rows(data, texts, in_sample, thresholds, labels, config.exclude_agent)
        result.train.ids += list(ids[weak])
        result.train.text += list(texts[weak])
        result.train.label += list(data.pred[weak])
        result.train.source += [ZERO_SHOT] * len(weak)
        result.train.weight += [float(config.zero_shot_weight)] * len(weak)
    missing = [lab for lab in labels if lab not in set(result.train.label)]
    if missing:
        result.notes.append(f"no training rows for {', '.join(missing)}: the student cannot learn "
                            f"{'it' if len(missing) == 1 else 'them'}")
    return result


def weak_rows(data: Labelled, texts, in_sample, thresholds: dict, labels: list[str], exclude_agents) -> np.ndarray:
    """Records nobody labelled, outside the sample, whose prediction (a student label) reaches its threshold:
    no annotation (status none or Default), or one by an excluded agent (the bulk labels)."""
    free = np.array([g is None for g in data.gold], dtype=bool) & ~in_sample
    if data.kind == "pull":
        import pyarrow.parquet as pq

        agents = pq.read_table(data.source, columns=["annotation_agent"]).column(0).to_pylist()
        untouched = ~data.annotated & np.array([s in (None, "Default") for s in data.status], dtype=bool)
        free &= untouched | np.array([a in set(exclude_agents) for a in agents], dtype=bool)
    free &= np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
    limit = np.array([thresholds.get(p, np.inf) if p in labels else np.inf for p in data.pred], dtype=float)
    return np.nonzero(free & (np.nan_to_num(data.score, nan=-1.0) >= limit))[0]
