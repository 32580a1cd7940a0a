"""The audit sample of ``bulk-label --apply``: per label, which of the records it would bulk-label are kept
out of the bulk labels and marked for a person instead (``zs-ray audit`` then reads their answers).

**How many** (per label L, with a thresholds file: its target precision P and confidence c, and L's estimated
precision p at its threshold, the ``precision`` that ``zs-ray thresholds`` wrote): the smallest n such that, if
L's bulk labels are as precise as estimated, the audit passes with probability at least ``--audit-power``
(default 0.8). The audit passes when the one-sided Clopper-Pearson lower bound of its k correct answers out of
n (``thresholds.lower_bound``, the bound the threshold was chosen by) reaches P. That bound reaches P exactly
when Pr[Bin(n, P) >= k] <= 1 - c, so the fewest correct answers that pass are k_min(n) = isf(1 - c; n, P) + 1,
and the audit's power at n is Pr[Bin(n, p) >= k_min(n)]. With p = 1 this is the fewest labels ``thresholds``
needs (29 at P = 0.9, 95%); the closer p is to P, the larger n. n is capped at the label's records (when no n
up to them reaches the power, every one is audited and none bulk-labelled). ``--audit-size N`` gives n =
min(N, records) instead; ``--audit-size 0``, or a thresholds file without a target (or only ``--threshold``
values), means no audit. A label whose threshold ``--threshold`` overrides has no estimate: it is audited
only with ``--audit-size``.

**Which**: the n records of the label's pool with the smallest keys ``sample.sample_key(--audit-seed, id)``
(the round-1 sample's seeded hash: a simple random sample, the same on every run and machine). The pool is
the records the run would bulk-label with L plus those marked for L already, so a run resumed after a stop
(marks are written before any bulk label) or repeated marks nothing new.
"""

from __future__ import annotations

import numpy as np

from zs_ray.workflow.bulk_adapters import AUDIT_VALUE, Rec
from zs_ray.workflow.sample import sample_key


def power(n, precision: float, target: float, confidence: float):
    """Pr[the audit of n records passes] if the label's precision is ``precision`` (vectorised over n)."""
    from scipy.stats import binom

    n = np.asarray(n, dtype=float)
    k_min = binom.isf(1 - confidence, n, target) + 1  # the fewest correct answers whose bound reaches target
    return np.where(k_min <= n, binom.sf(k_min - 1, n, precision), 0.0)


def audit_size(precision: float, target: float, confidence: float, power_wanted: float, records: int) -> int:
    """The smallest n (at most ``records``) whose audit passes with ``power_wanted`` at ``precision``; else
    ``records``."""
    if records <= 0:
        return 0
    n = np.arange(1, records + 1)
    ok = np.nonzero(power(n, precision, target, confidence) >= power_wanted)[0]
    return int(n[ok[0]]) if ok.size else records


def plan_audit(recs: list[Rec], chosen: list[Rec], settings) -> tuple[dict, list[Rec], list[str]]:
    """The audit sample of this run: (id -> what its undo-file entry adds, ``chosen`` with the audit records
    first, notes for the summary)."""
    basis = settings.audit_basis()
    if basis is None:
        return {}, chosen, []
    audit, notes = {}, []
    for label in sorted({r.label for r in chosen}):
        mine = [r for r in chosen if r.label == label]
        pool = mine + [r for r in recs if r.audit and r.label == label]
        p = basis["precision"].get(label)
        if settings.audit_size is not None:
            n = min(settings.audit_size, len(pool))
        elif p is None:
            notes.append(f"{label}: not audited (no estimated precision at its threshold: give --audit-size)")
            continue
        else:
            n = audit_size(float(p), basis["target"], basis["confidence"], settings.audit_power, len(pool))
            if n == len(pool) and power(n, p, basis["target"], basis["confidence"]) < settings.audit_power:
                notes.append(f"{label}: all {n} records kept for the audit (fewer than its power needs)")
        keyed = sorted(pool, key=lambda r: (sample_key(settings.audit_seed, r.id), r.id))[:n]
        for r in keyed:
            if not r.audit:
                audit[r.id] = {"label": label, "audit": AUDIT_VALUE, "target": basis["target"], "confidence": basis["confidence"],
                               "size": n, "seed": settings.audit_seed}
    chosen = [r for r in chosen if r.id in audit] + [r for r in chosen if r.id not in audit]
    return audit, chosen, notes
