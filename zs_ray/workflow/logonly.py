"""``--log-only``: send the records people will touch now, within the server's budget; keep every row in Parquet.

``--log-only sample,uncertain,above-threshold`` (any of them) sends a record when it is in one of the subsets:

* ``sample``: the round-1 sample (``--sample``, ``workflow.sample``);
* ``uncertain``: the uncertainty queue (``--uncertain``, ``workflow.uncertain``);
* ``above-threshold``: its top score is at or above its predicted label's threshold in ``--thresholds FILE``
  (the JSON ``zs-ray thresholds`` writes; a label without a threshold has no record above it).

The others are held back: counted in the summary, not sent, not in the ledger. A later ``zs-ray log --input
OUT`` without ``--log-only`` sends exactly those (every id the ledger and the server hold is skipped, as for
any re-run), exactly once. A mark (``sample: round-1``, ``uncertain: round-2``) is set only when a record is
first sent, so ``--log-only`` must include the subset of every mark it is given (``--sample`` with ``sample``,
``--uncertain`` with ``uncertain``): then every marked record goes now, and a held-back record needs no mark.

During ``annotate`` the selection is made while the job writes (``sample`` from the read plan, and
``above-threshold`` row by row); with ``--uncertain`` the job logs once every prediction is written (the
queue is a global top-k).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)
SUBSETS = ("sample", "uncertain", "above-threshold")


def parse_log_only(value) -> Optional[tuple[str, ...]]:
    """``--log-only`` as a tuple of subsets (comma-separated or one per argument); None: send everything."""
    if not value:
        return None
    items = [value] if isinstance(value, str) else list(value)
    subsets = tuple(dict.fromkeys(p.strip() for item in items for p in str(item).split(",") if p.strip()))
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown or not subsets:
        raise ZsRayError(f"--log-only takes {', '.join(SUBSETS)} (comma-separated), "
                         f"got {', '.join(unknown) or value!r}")
    return subsets


def check_log_only_settings(config) -> None:
    """For ``LogOnlyConfig.__post_init__``: one-line errors, before any work, for subsets without what they
    need and marks whose records would be held back."""
    subsets = config.log_only or ()
    needs = {"sample": (config.sample, "--sample"), "uncertain": (config.uncertain, "--uncertain N"),
             "above-threshold": (config.thresholds, "--thresholds FILE (from `zs-ray thresholds --output`)")}
    for name in subsets:
        given, flag = needs[name]
        if not given:
            raise ZsRayError(f"--log-only {name} needs {flag}")
    if subsets:
        for name, flag in (("sample", "--sample"), ("uncertain", "--uncertain")):
            if needs[name][0] and name not in subsets:
                raise ZsRayError(f"{flag} with --log-only needs {name} among the subsets: a record is marked only "
                                 f"when it is first sent, so its marked records must go now (--log-only "
                                 f"{','.join((*subsets, name))})")
    if config.thresholds and "above-threshold" not in subsets:
        raise ZsRayError("--thresholds is for --log-only above-threshold")


@dataclass(frozen=True)
class Selection:
    """The records ``--log-only`` sends: ``contains(id, top label, top score)``."""

    subsets: tuple
    sample: object = None  # sample.SampleRule
    uncertain: object = None  # uncertain.UncertainRule
    thresholds: Optional[dict] = None  # label -> threshold

    def contains(self, rid: str, label: str, score: float) -> bool:
        if self.sample is not None and self.sample.contains(rid, label):
            return True
        if self.uncertain is not None and self.uncertain.contains(rid, label):
            return True
        if self.thresholds is not None:
            t = self.thresholds.get(label)
            return t is not None and score >= t
        return False

    def describe(self) -> str:
        return f"--log-only {','.join(self.subsets)}: the other records are held back for a later `zs-ray log`"


def selection(config, sample=None, uncertain=None, labels=()) -> Optional[Selection]:
    """The ``Selection`` of ``config.log_only`` from the rules already decided (None: send everything);
    ``labels``: the output's candidate labels, to warn of a thresholds file made for other labels."""
    subsets = config.log_only
    if not subsets:
        return None
    if "above-threshold" in subsets and labels and not set(config.threshold_map) & set(labels):
        log.warning("--thresholds %s has no threshold for any label of this output (%s): no record is above one",
                    config.thresholds, ", ".join(labels))
    return Selection(tuple(subsets), sample if "sample" in subsets else None,
                     uncertain if "uncertain" in subsets else None,
                     dict(config.threshold_map) if "above-threshold" in subsets else None)
