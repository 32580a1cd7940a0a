"""``zs-ray bulk-label``: annotate, on the server, the records whose top prediction scores at or above its
label's threshold; dry run by default, ``--apply`` to write, ``--undo`` to take back exactly what was written.

What is never touched: a record with any annotation (a person's, or an earlier bulk label) or with a
status other than Default (Validated, Edited, Discarded: a person acted on it). The check is made twice:
once on the full read (what the dry run reports), and again per chunk right before writing, on a fresh
read of that chunk's ids, inside the one retry layer (``with_retries``) like ``ingest.send_chunk``: "read
these ids, keep those still untouched, write them" is one operation, so a retry after a lost answer finds
its own bulk labels and does not write again.

Undo: before each chunk is written, the records' state before the write (as a request would send it) and
the label written are appended to an undo file (JSON lines, fsync'd: a crash leaves at most entries for
records that were not written, which undo skips). ``--undo`` reads each id again and restores the saved
state only where the record still holds exactly the bulk label that was written (agent, label and status);
a record a person changed since is left alone and counted. Once every entry is settled, the undo file is
renamed ``*.undone``.

The server-specific part is an adapter (``bulk_adapters.Adapter``: read all, read some, annotate, restore):
``V1Adapter`` for Rubrix 0.x / Argilla 1.x (whole records through ``:bulk``; on Argilla 1.7+, which keeps
the fields a re-sent record leaves out, an annotation cannot be taken back that way, so ``--undo`` refuses
there before writing), ``V2Adapter`` for Argilla 2.x (responses of the key's user; undo deletes them).

Audit (``audit_plan``, ``audit``): with a thresholds file that states its target precision, ``--apply`` keeps a
seeded sample of each label's records out of the bulk labels and marks them for a person (metadata
``zs_ray_audit``; written first, journalled in the undo file as ``audit`` entries); a marked record is never
bulk-labelled. ``undo(..., labels=...)`` takes back only the bulk labels of some labels (``zs-ray audit
--undo-failing``); the full ``--undo`` also takes back the marks of records nobody answered.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from zs_ray.errors import ZsRayError
from zs_ray.workflow.audit_plan import plan_audit
from zs_ray.workflow.bulk_adapters import AUDIT_VALUE, BULK_AGENT_HINT, Adapter, Rec, adapter_for

log = logging.getLogger(__name__)




# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------
@dataclass
class BulkReport:
    mode: str
    dataset: str
    server: str = ""
    candidates: Counter = field(default_factory=Counter)  # label -> records at/above its threshold, untouched
    written: int = 0
    skipped_touched: int = 0  # were untouched at the full read, touched by the time of writing
    restored: int = 0
    left_changed: int = 0  # undo: changed by someone since the apply
    not_restored: list = field(default_factory=list)
    undo_file: str = ""
    thresholds: dict = field(default_factory=dict)
    warning: Optional[str] = None
    audit: Counter = field(default_factory=Counter)  # label -> records to mark (marked) for audit
    audit_notes: list = field(default_factory=list)
    marked: int = 0

    @property
    def ok(self) -> bool:
        return not self.not_restored

    def summary(self) -> str:
        if self.mode == "undo":
            s = (f"bulk-label --undo on {self.dataset} ({self.server}): {self.restored} records restored, "
                 f"{self.left_changed} left (changed since the apply)")
            if self.not_restored:
                s += f", {len(self.not_restored)} NOT restored (e.g. {', '.join(self.not_restored[:5])})"
            return s + f"; undo file {self.undo_file}"
        per = ", ".join(f"{lab} {n} (>= {self.thresholds[lab]:.4f})" for lab, n in sorted(self.candidates.items()))
        total = sum(self.candidates.values())
        warn = f"\nzs-ray: warning: {self.warning}" if self.warning else ""
        audit = ", ".join(f"{lab} {n}" for lab, n in sorted(self.audit.items()) if n) or "none"
        notes = "".join(f"\nzs-ray: {note}" for note in self.audit_notes)
        if self.mode == "dry-run":
            return (f"bulk-label dry run on {self.dataset} ({self.server}): would annotate {total} records: "
                    f"{per or 'none'}; would mark {sum(self.audit.values())} for audit ({audit}); nothing written "
                    "(--apply writes them)" + warn + notes)
        return (f"bulk-label --apply on {self.dataset} ({self.server}): annotated {self.written} records "
                f"({per or 'none'}); marked {self.marked} for audit ({audit}); {self.skipped_touched} skipped "
                f"(touched meanwhile); undo file {self.undo_file}" + warn + notes)


def default_undo_file(config) -> str:
    return f"zs-ray-bulk-{config.rubrix_dataset}.undo.jsonl"


def select(recs: Iterable[Rec], thresholds: dict[str, float]) -> list[Rec]:
    return [r for r in recs if r.untouched and not r.audit and r.label in thresholds
            and r.score >= thresholds[r.label]]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def bulk_label(settings, server, adapter: Optional[Adapter] = None) -> BulkReport:
    """Run ``zs-ray bulk-label`` (``BulkLabelConfig`` + ``ServerConfig``)."""
    from tqdm.auto import tqdm

    server.validate()
    adapter = adapter or adapter_for(server)
    undo_path = settings.undo_file or default_undo_file(server)
    mode = "undo" if settings.undo else "apply" if settings.apply else "dry-run"
    report = BulkReport(mode, server.rubrix_dataset, adapter.name, undo_file=undo_path)
    try:
        if settings.undo:
            return undo(adapter, server, undo_path, report)
        thresholds = settings.threshold_values()
        if not thresholds:
            raise ZsRayError("no label has a threshold (every label of --thresholds was 'too few labels' or "
                             "'not reachable'): nothing to bulk-label")
        report.thresholds = thresholds
        recs = list(tqdm(adapter.read_all(), desc=f"read {server.rubrix_dataset}", unit="rec", disable=None))
        chosen = select(recs, thresholds)
        unseen = sorted(set(thresholds) - {r.label for r in recs})
        if unseen:  # a typo (economia / economía) would otherwise just label nothing
            log.warning("no record of %s is predicted %s: check the labels of the thresholds",
                        server.rubrix_dataset, ", ".join(map(repr, unseen)))
        audit, chosen, report.audit_notes = plan_audit(recs, chosen, settings)
        report.candidates = Counter(r.label for r in chosen if r.id not in audit)
        report.audit = Counter(e["label"] for e in audit.values())
        report.warning = adapter.can_restore() and f"--undo will not be available: {adapter.can_restore()}"
        if adapter.author(settings.agent) != settings.agent:
            report.warning = (f"the annotations are written as the key's user {adapter.author(settings.agent)!r}, "
                              f"not {settings.agent!r}: use the key of a user kept for bulk labels")
        if mode == "dry-run":
            return report
        _apply(adapter, server, settings, chosen, thresholds, undo_path, report, audit)
        return report
    finally:
        close = getattr(adapter, "close", None)
        if close:
            close()


def _apply(adapter, server, settings, chosen, thresholds, undo_path, report, audit: dict) -> None:
    """Write, chunk by chunk: the audit marks (``audit``: id -> its journal entry; first in ``chosen``), then
    the bulk labels."""
    from tqdm.auto import tqdm

    from zs_ray.servers.client import RubrixError, with_retries

    run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(undo_path, "a", encoding="utf-8") as journal, \
            tqdm(total=len(chosen), desc=f"bulk-label {server.rubrix_dataset}", unit="rec", disable=None) as bar:
        for chunk in _chunks(chosen, settings.chunk_size):
            ids = [r.id for r in chunk]

            def operation():  # read again, keep the untouched, write: safe to repeat
                fresh = adapter.read(ids)
                todo = select([fresh[i] for i in ids if i in fresh], thresholds)
                marks = [r for r in todo if r.id in audit]
                labels = [r for r in todo if r.id not in audit]
                for r in todo:
                    entry = {"run": run, "id": r.id, "before": r.state, "label": r.label}
                    entry.update(audit[r.id] if r.id in audit else
                                 {"agent": adapter.author(settings.agent), "status": settings.status})
                    journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                if marks:
                    adapter.mark(marks, AUDIT_VALUE)
                if labels:
                    adapter.annotate(labels, {r.id: r.label for r in labels}, settings.agent, settings.status)
                return len(labels), len(marks)

            try:
                n, m = with_retries(server, operation)
            except RubrixError as exc:
                raise ZsRayError(f"bulk-label stopped after {report.written} records: {exc}; the undo file "
                                 f"{undo_path} covers what was written") from None
            report.written += n
            report.marked += m
            report.skipped_touched += len(chunk) - n - m
            bar.update(len(chunk))


def undo(adapter, server, undo_path, report, labels: Optional[set] = None) -> BulkReport:
    """Take back what the undo file lists (``labels``: only the bulk labels of those labels; the file is then
    kept, as other entries stay applied), where the record still holds exactly what was written."""
    from tqdm.auto import tqdm

    from zs_ray.servers.client import RubrixError, with_retries

    if not os.path.exists(undo_path):
        raise ZsRayError(f"no undo file {undo_path}: nothing was applied with it (give --undo-file)")
    why = adapter.can_restore()
    if why:  # refuse before writing anything rather than leave records half restored
        raise ZsRayError(f"--undo is not available on this server: {why}; the records written are listed in "
                         f"{undo_path} (in the UI: filter annotated by {BULK_AGENT_HINT})")
    entries: dict[str, dict] = {}
    with open(undo_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                e = json.loads(line)
                if labels is None or (not e.get("audit") and e["label"] in labels):
                    entries.setdefault(e["id"], e)  # the first entry of an id: its state before any bulk label
    ids = list(entries)
    with tqdm(total=len(ids), desc=f"undo {server.rubrix_dataset}", unit="rec", disable=None) as bar:
        for chunk in _chunks(ids, 200):
            def operation():
                fresh = adapter.read(chunk)
                ours, changed = [], 0
                for i in chunk:
                    e, r = entries[i], fresh.get(i)
                    if r is not None and r.state == e["before"]:
                        continue  # already as before (restored, or never written)
                    if e.get("audit"):  # a mark: still nobody's answer, still marked
                        mine = r is not None and r.untouched and r.audit == e["audit"]
                    else:
                        mine = (r is not None and r.annotation_agent == e["agent"]
                                and r.annotation_labels == [e["label"]] and r.status == e["status"])
                    if mine:
                        ours.append(e["before"])
                    else:
                        changed += 1
                if ours:
                    adapter.restore(ours)
                after = adapter.read([s["id"] for s in ours]) if ours else {}
                bad = [s["id"] for s in ours if after.get(s["id"]) is None or after[s["id"]].state != s]
                return len(ours) - len(bad), changed, bad

            try:
                restored, changed, bad = with_retries(server, operation)
            except RubrixError as exc:
                raise ZsRayError(f"undo stopped after {report.restored} records: {exc}; run it again") from None
            report.restored += restored
            report.left_changed += changed
            report.not_restored += bad
            bar.update(len(chunk))
    if report.ok and labels is None:
        os.replace(undo_path, undo_path + ".undone")
        report.undo_file = undo_path + ".undone"
    return report
