"""Round 2: the uncertainty queue, the records where a person's label teaches the most, marked in metadata.

``--uncertain N`` takes the N records whose prediction is least certain by ``--uncertain-by``: ``margin`` (the
lowest; ``output.uncertainty``, the one definition: top score minus the second, or in multi-label mode the
least certain label's distance from 0.5) or ``entropy`` (the highest). It is stratified like
``--sample-by-label``: N is shared over the predicted labels as evenly as possible (``sample.share``; a label
with fewer records gives the rest to the others) and each label's share is its most uncertain records. Equal
margins (or entropies) are ordered by the round-1 key ``u = sample_key(seed, id)`` (``--sample-seed``),
smallest first. So the queue depends only on the output's rows, N, the measure and the seed: the same on
every re-run, whatever the files, their order or the batches they are read in.

Computed in one pass over the output's Parquet batches (``id``, ``scores``, ``prediction``), never a column of
the whole output in the driver: per label a bounded candidate list of at most N ``(key, u, id)`` (``key`` =
margin, or minus the entropy: the lowest first), merged batch by batch (a numpy lexsort of at most N + one
batch), plus the count of each label. ``u`` (a SHA-256) is computed only for rows whose key can still enter
their label's list. The queue is a global top-k, so it is known only once every row is scored: ``annotate``
with ``--uncertain`` logs after the predictions are written (``sample.live_logging_allowed``).

Records in the queue carry the metadata ``uncertain: <name>`` (``--uncertain-name``, default ``round-2``),
beside ``sample: round-1`` where a record is in both. Like every mark it is set when a record is first sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.output import uncertainty
from zs_ray.servers.config import UNCERTAIN_KEY  # noqa: F401  (the mark, re-exported)
from zs_ray.workflow.sample import sample_keys, share

log = logging.getLogger(__name__)
MEASURES = ("margin", "entropy")
BATCH_ROWS = 65_536


@dataclass
class UncertainRule:
    """Which records are in the queue: an explicit set of ids (N of them, per dataset), decided before the
    first record is sent; ``contains`` has the shape of ``sample.SampleRule.contains``."""

    name: str
    by: str
    seed: int
    ids: frozenset = frozenset()
    requested: int = 0
    by_label: dict = field(default_factory=dict)  # label -> records taken

    def contains(self, rid: str, prediction: Optional[str] = None) -> bool:
        return rid in self.ids

    def describe(self) -> str:
        return (f"uncertainty queue {self.name}: {len(self.ids)} records (asked {self.requested}) of lowest "
                f"{self.by if self.by == 'margin' else 'certainty (highest entropy)'}, seed {self.seed}, "
                f"by predicted label: {self.by_label}")


def keys(scores: list, multi_label: bool, by: str) -> np.ndarray:
    """Each row's queue key, lower = more uncertain (margin, or minus the entropy); NaN without a prediction."""
    margins, entropies = uncertainty(scores, multi_label)
    values = margins if by == "margin" else entropies
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr if by == "margin" else -arr


class _Best:
    """One label's candidates: the (at most ``n``) rows with the lowest (key, u) seen so far, sorted."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.key = np.empty(0)
        self.u = np.empty(0)
        self.ids = np.empty(0, dtype=object)

    def offer(self, key: np.ndarray, ids: np.ndarray) -> None:
        if self.key.size >= self.n:  # full: only a key <= the worst kept can still enter (ties: by u)
            keep = key <= self.key[-1]
            key, ids = key[keep], ids[keep]
        if key.size == 0:
            return
        key = np.concatenate([self.key, key])
        u = np.concatenate([self.u, sample_keys(self.seed, ids)])
        ids = np.concatenate([self.ids, ids])
        order = np.lexsort((u, key))[: self.n]
        self.key, self.u, self.ids = key[order], u[order], ids[order]


def queue(batches, n: int, by: str, seed: int, multi_label: bool) -> tuple[dict, dict]:
    """The queue over record batches holding ``id``, ``scores`` and ``prediction``: (label -> its ids in queue
    order, label -> its share)."""
    best: dict = {}
    sizes: Counter = Counter()
    for batch in batches:
        preds = np.array(batch.column("prediction").to_pylist(), dtype=object)
        has = np.array([p is not None for p in preds], dtype=bool)
        if not has.any():
            continue
        k = keys(batch.column("scores").to_pylist(), multi_label, by)
        ids = np.array([str(i) for i in batch.column("id").to_pylist()], dtype=object)
        for lab in set(preds[has]):
            mine = preds == lab
            sizes[lab] += int(mine.sum())
            best.setdefault(lab, _Best(n, seed)).offer(k[mine], ids[mine])
    quota = share(n, dict(sizes))
    return {lab: list(best[lab].ids[:q]) for lab, q in quota.items() if q}, {k: v for k, v in quota.items() if v}


def make_uncertain_rule(out, n: int, by: str, seed: int, name: str) -> UncertainRule:
    """The queue of a complete output (``output.Output``; one config's rows for a multi-config run)."""
    if by not in MEASURES:
        raise ZsRayError(f"--uncertain-by must be one of {', '.join(MEASURES)}, got {by!r}")
    if "rows" not in out.manifest:
        raise ZsRayError("--uncertain needs every prediction before the first record is sent; this output is "
                         "not complete")
    batches = out.dataset.to_batches(columns=["id", "scores", "prediction"], batch_size=BATCH_ROWS)
    chosen, quota = queue(batches, n, by, seed, bool(out.manifest.get("multi_label")))
    rule = UncertainRule(name, by, seed, frozenset(i for ids in chosen.values() for i in ids), n, quota)
    log.info(rule.describe())
    return rule
