"""Round 1: a seeded random sample of the logged records, marked in their metadata.

A record is in the sample by a rule decided before the first record is sent (``SampleRule``), from the
records' stable ids (``<config>-<split>-<index>``, the same on every run and machine), never from the order
in which they happen to be read or sent. Each id gets a key, ``u = hash(seed, id)``: the first 8 bytes of
SHA-256 of ``"<seed>:<id>"`` read as a number in [0, 1). Then

* ``--sample P%`` (a fraction): the records with ``u < P/100``. Membership depends only on (seed, id).
* ``--sample N`` (a count): the N rows of the run with the smallest ``u`` (bottom-N), i.e. ``u <= cutoff``
  where ``cutoff`` is the N-th smallest key among all the rows of the run. The rows are known before the
  first record is sent: from the read plan during ``annotate`` (ids are the plan's segments), from the
  output's ``id`` column in ``log``; both are the same ids, so both give the same sample.
* ``--sample-by-label`` (stratified): N is shared out over the predicted labels as evenly as possible (a
  label with fewer records than its share gives the rest to the others, ``share``), and each label's share
  is its bottom-N by ``u``. It needs every prediction first, so ``annotate`` then logs after the predictions are
  written instead of while they are (a plain sample is logged live).

What "the same sample" means, exactly (tests/test_workflow_sample.py checks each):

1. The same command again (same corpus, split, seed, N or P%): the same records, whichever way it runs
   (``annotate`` live, ``log`` afterwards, any number of workers or files).
2. A larger N (or P%) with the same seed: a superset of the smaller sample (bottom-N sets are nested;
   stratified shares only grow with N).
3. A larger run of the same corpus (e.g. ``test[0:1000]`` after ``test[0:500]``): with ``P%``, exactly the
   same records among the rows both runs hold; with ``N``, every row of the smaller run that the larger run
   samples was in the smaller run's sample too (nothing new appears among the old rows; some drop out as
   the same N spreads over more rows; ``N' = N * rows' / rows`` keeps about the same rate).

Rows without a prediction (empty text) are counted among the rows but never logged, so a count sample can
be short by those rows (the summary says how many were marked). Sampled records carry the metadata
``sample: <name>`` (default ``round-1``): filter on it in the annotation UI.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from zs_ray.errors import ZsRayError
from zs_ray.servers.config import SAMPLE_KEY, dataset_names  # noqa: F401  (SAMPLE_KEY: the mark, re-exported)

log = logging.getLogger(__name__)


def sample_key(seed: int, rid: str) -> float:
    """The record's key in [0, 1): the first 8 bytes of SHA-256("<seed>:<id>") / 2**64."""
    digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def sample_keys(seed: int, ids: Iterable[str]) -> np.ndarray:
    return np.fromiter((sample_key(seed, str(i)) for i in ids), dtype=np.float64)


def parse_sample(value) -> tuple[Optional[int], Optional[float]]:
    """``--sample`` as (count, fraction): "500" -> (500, None); "5%" -> (None, 0.05); None -> (None, None)."""
    if value is None or value == "":
        return None, None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return None, pct / 100.0
        n = int(text)
        if n < 1:
            raise ValueError
        return n, None
    except ValueError:
        raise ZsRayError(f"--sample must be a count N >= 1 or a percentage such as 5%, got {value!r}") from None


@dataclass
class SampleRule:
    """Which records are in the sample: ``u(seed, id) <= cutoff`` (count), ``< fraction``, or, stratified,
    ``u <= cutoffs[predicted label]``. Small (a few numbers), pickled with the server settings."""

    name: str
    seed: int
    fraction: Optional[float] = None
    cutoff: Optional[float] = None
    cutoffs: Optional[dict] = None  # stratified: predicted label -> cutoff (absent label: none sampled)
    requested: int = 0
    chosen: int = 0  # rows of the run the rule takes (empty-text rows included; they are never logged)
    by_label: dict = field(default_factory=dict)  # stratified: label -> rows taken

    def contains(self, rid: str, prediction: Optional[str] = None) -> bool:
        u = sample_key(self.seed, rid)
        if self.fraction is not None:
            return u < self.fraction
        if self.cutoffs is not None:
            c = self.cutoffs.get(prediction)
            return c is not None and u <= c
        return self.cutoff is not None and u <= self.cutoff

    def describe(self) -> str:
        if self.fraction is not None:
            return f"sample {self.name}: {self.fraction:.4%} of the records (seed {self.seed})"
        per = f", by predicted label: {self.by_label}" if self.cutoffs is not None else ""
        return f"sample {self.name}: {self.chosen} of the run's rows (asked {self.requested}, seed {self.seed}{per})"


def _bottom_cutoff(keys: np.ndarray, n: int) -> Optional[float]:
    if n <= 0 or keys.size == 0:
        return None
    n = min(n, keys.size)
    return float(np.partition(keys, n - 1)[n - 1])


def share(n: int, sizes: dict) -> dict:
    """N shared over the labels as evenly as possible: every label gets min(size, L) for the largest level L
    that fits, and what is left goes one each to the labels (in sorted order) that have more. Monotone in N,
    so a larger N never takes records out of a label."""
    n = min(n, sum(sizes.values()))
    lo, hi = 0, max(sizes.values(), default=0)
    while lo < hi:  # the largest L with sum(min(size, L)) <= n
        mid = (lo + hi + 1) // 2
        if sum(min(v, mid) for v in sizes.values()) <= n:
            lo = mid
        else:
            hi = mid - 1
    quota = {k: min(v, lo) for k, v in sizes.items()}
    left = n - sum(quota.values())
    for k in sorted(k for k in sizes if sizes[k] > lo):
        if left <= 0:
            break
        quota[k] += 1
        left -= 1
    return quota


def make_rule(sample, seed: int, name: str, ids: Optional[Iterable[str]] = None,
              predictions: Optional[Iterable[Optional[str]]] = None, by_label: bool = False) -> SampleRule:
    """The rule for ``--sample`` over the run's rows (``ids``; with ``by_label`` also their top labels)."""
    count, fraction = parse_sample(sample)
    if fraction is not None:
        if by_label:
            raise ZsRayError("--sample-by-label needs a count (--sample N), not a percentage")
        return SampleRule(name, seed, fraction=fraction)
    ids = list(ids or [])
    keys = sample_keys(seed, ids)
    if not by_label:
        cutoff = _bottom_cutoff(keys, count)
        return SampleRule(name, seed, cutoff=cutoff, requested=count, chosen=min(count, len(ids)))
    preds = np.array([p if p is not None else "" for p in predictions], dtype=object)
    has = preds != ""  # rows without a prediction are never logged: not in any label's share
    labels = sorted(set(preds[has]))
    sizes = {lab: int((preds == lab).sum()) for lab in labels}
    quota = share(count, sizes)
    cutoffs = {lab: _bottom_cutoff(keys[preds == lab], quota[lab]) for lab in labels if quota[lab] > 0}
    return SampleRule(name, seed, cutoffs=cutoffs, requested=count, chosen=sum(quota.values()),
                      by_label={k: v for k, v in quota.items() if v})


def plan_ids(plans) -> list[str]:
    """Every row id a read plan (or several) will give, without reading a row (``read.source.read_segment``
    names rows ``<prefix>-<index, 7 digits>``)."""
    plans = plans if isinstance(plans, (list, tuple)) else [plans]
    return [f"{s.id_prefix}-{i:07d}" for p in plans for s in p.segments
            for i in range(s.first_index, s.first_index + s.take)]


# Rules decided before a live log, by dataset: a multi-config run logs each config to its own dataset with a
# copy of the settings (``dataclasses.replace``), which does not carry ``sample_rule``; this does.
_RESOLVED: dict[tuple, SampleRule] = {}


def _key(config, dataset: Optional[str] = None) -> tuple:
    return (config.rubrix_api_url, config.rubrix_workspace, dataset or config.rubrix_dataset, config.sample,
            config.sample_seed, config.sample_by_label, config.sample_name)


def rule_for_output(config, out) -> Optional[SampleRule]:
    """The rule of ``config`` (its ``sample`` settings) over a complete output's rows; None without
    ``--sample``. A rule already decided (by ``resolve_for_plan``, before a live log) is kept."""
    if getattr(config, "sample", None) in (None, ""):
        return None
    if getattr(config, "sample_rule", None) is not None:
        return config.sample_rule
    if _key(config) in _RESOLVED:
        config.sample_rule = _RESOLVED[_key(config)]
        return config.sample_rule
    count, _ = parse_sample(config.sample)
    ids = preds = None
    if count is not None and "rows" not in out.manifest:  # the files of a run still writing: not all rows
        raise ZsRayError("--sample N must be decided from the whole run before the first record is sent; "
                         "this output is not complete (resolve_for_plan decides it from the read plan)")
    if count is not None:
        cols = ["id", "prediction"] if config.sample_by_label else ["id"]
        table = out.dataset.to_table(columns=cols)
        ids = table.column("id").to_pylist()
        preds = table.column("prediction").to_pylist() if config.sample_by_label else None
    config.sample_rule = make_rule(config.sample, config.sample_seed, config.sample_name, ids, preds,
                                   config.sample_by_label)
    log.info(config.sample_rule.describe())
    return config.sample_rule


def resolve_for_plan(config, plans) -> None:
    """Before ``annotate`` logs live: decide a plain sample from the read plans' ids, one rule per config's
    dataset (the stratified one waits for the predictions: ``live_logging_allowed`` is False for it)."""
    if getattr(config, "sample", None) in (None, "") or config.sample_by_label:
        return
    plans = plans if isinstance(plans, (list, tuple)) else [plans]
    by_config: dict = {}
    for p in plans:
        by_config.setdefault(getattr(p, "config", None), []).append(p)
    names = dataset_names(config.rubrix_dataset, list(by_config))
    count, _ = parse_sample(config.sample)
    for c, group in by_config.items():
        rule = make_rule(config.sample, config.sample_seed, config.sample_name,
                         plan_ids(group) if count is not None else None)
        _RESOLVED[_key(config, names[c])] = rule
        log.info("%s: %s", names[c], rule.describe())
    config.sample_rule = _RESOLVED[_key(config)] if _key(config) in _RESOLVED else None


def live_logging_allowed(config) -> bool:
    """A stratified sample, and the uncertainty queue (``--uncertain``), need every prediction before the
    first record is sent."""
    if getattr(config, "uncertain", None):
        return False
    return not (getattr(config, "sample", None) not in (None, "") and config.sample_by_label)


def check_sample_settings(config) -> None:
    """For ``SampleConfig.__post_init__`` (``workflow.config``): one-line errors for bad sample settings."""
    if config.sample in (None, ""):
        config.sample = None
        return
    config.sample = str(config.sample).strip()
    parse_sample(config.sample)
    if not config.sample_name or len(config.sample_name) > 128:
        raise ZsRayError("--sample-name must be 1-128 characters")
    if config.sample_by_label:
        count, _ = parse_sample(config.sample)
        if count is None:
            raise ZsRayError("--sample-by-label needs a count (--sample N), not a percentage")
