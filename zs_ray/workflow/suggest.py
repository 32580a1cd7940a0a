"""``zs-ray log --update-suggestions``: re-annotate with what was learnt, never over a person.

The input is a new output (a student model's, ``annotate --model STUDENT``: the same ids as the logged
dataset). For each of its ids, the record on the server is read: one that any person answered (Rubrix 0.x /
Argilla 1.x: an annotation or a status other than Default; Argilla 2.x: any response, submitted, draft or
discarded) is left as it is and counted; one that nobody answered gets the new prediction (1.x: ``prediction``
and its agent; 2.x: the ``label`` question's suggestion, agent = the new model, with its score) and the new
per-label scores, margin and entropy in its metadata (``records.with_scores``; the rest of its metadata kept).
A record the server does not hold is counted, never created. Reading the answered state and writing go through
bulk-label's adapters (``bulk_adapters``: ``Rec.untouched`` is the one test of "nobody answered").

Exactly once: each chunk is one operation inside the one retry layer (``with_retries``), as bulk-label's: read
the chunk's records again, keep those nobody answered and that do not already carry the new prediction, write
them (a record that carries the prediction but not its scores' metadata, logged by an older zs-ray, gets them).
A retry after a lost answer, or a re-run after a crash, finds its own writes and sends nothing again.
Updated ids go to a ledger of their own (identity: the dataset plus ``update_suggestions``: the new agent), so
a re-run skips them without reading, and a plain ``zs-ray log`` ledger is never taken for it.

The race with a person answering while this runs: Argilla 2.x's bulk upsert carries no responses and the
server keeps a record's responses (a person's answer given between the read and the write stays; only the
suggestion beside it changes). Rubrix 0.x and Argilla < 1.7 replace the whole record on ``:bulk``, and 1.7+
reset its status: an annotation made between the re-read of a chunk and the server storing the write (one
request's time, a chunk of at most 100 records) would be lost there; nothing older is ever written over.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

from zs_ray.errors import ZsRayError
from zs_ray.output import Output, open_output
from zs_ray.servers import records as rec
from zs_ray.servers.client import RubrixError, with_retries
from zs_ray.servers.config import SendConfig, dataset_names
from zs_ray.servers.ledger import Ledger, default_path
from zs_ray.servers.prepare import record_spec, set_up
from zs_ray.workflow.bulk_adapters import V2Adapter, adapter_for

log = logging.getLogger(__name__)
CHUNK_MAX = 100  # records read and written per operation: the window of the 1.x race (module doc)


@dataclass
class UpdateReport:
    """What one ``update_suggestions`` run did; ``ok`` is False when a chunk could not be written."""

    dataset: str
    server: str = ""
    rows: int = 0
    updated: int = 0
    already: int = 0  # carry the new prediction already (the ledger, or found on the server)
    answered: int = 0  # a person's answer: left as they are
    missing: int = 0  # not on the server: not created
    skipped_empty: int = 0
    not_attempted: int = 0
    errors: list[str] = field(default_factory=list)
    ledger: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        s = (f"update suggestions of {self.dataset} ({self.server}): {self.updated} updated, {self.already} already "
             f"updated, {self.answered} answered by a person (left as they are), {self.missing} not on the server "
             f"(not created), {self.skipped_empty} without a prediction, in {self.wall_s:.1f}s")
        if not self.ok:
            s += f"; {self.not_attempted} not attempted: {'; '.join(self.errors)}; run it again to finish"
        return s


def update_run(output, config: SendConfig) -> list[UpdateReport]:
    """``update_suggestions`` for an output, one dataset per config as ``stages.log.log_run`` logs them."""
    if getattr(config, "sample", None):
        raise ZsRayError("--sample marks records when they are first logged; it does not go with --update-suggestions")
    out = output if isinstance(output, Output) else open_output(str(output))
    configs = out.configs
    if len(configs) <= 1:
        return [update_suggestions(out, config)]
    names = dataset_names(config.rubrix_dataset, configs)
    return [update_suggestions(out.for_config(c), replace(config, rubrix_dataset=names[c])) for c in configs]


def update_suggestions(output, config: SendConfig) -> UpdateReport:
    """Replace the prediction of every record of ``config.rubrix_dataset`` that nobody answered by that of
    ``output`` (see the module doc). Bad input raises ``ZsRayError`` before anything is written."""
    from tqdm.auto import tqdm

    t0 = time.monotonic()
    config.validate()
    out = output if isinstance(output, Output) else open_output(str(output))
    spec, warnings, agent = record_spec(config, out)
    adapter = adapter_for(config, single_label_only=False)  # refuses a dataset that is not there
    report = UpdateReport(config.rubrix_dataset, adapter.name)
    ledger = None
    try:
        v2 = isinstance(adapter, V2Adapter)
        for w in warnings:
            log.warning(w)
        spec, _, target = set_up(adapter.client, config, out, spec, agent, v2)
        new_agent = target.agent if v2 else spec.agent
        identity = {"api_url": config.public_url, "workspace": config.rubrix_workspace,
                    "dataset": config.rubrix_dataset, "update_suggestions": new_agent}
        ledger = Ledger.open(config.rubrix_ledger or default_path(out, identity), identity)
        report.ledger = str(ledger.path)
        expected = int(out.manifest.get("rows", 0)) - int(out.manifest.get("skipped", 0))
        with tqdm(total=expected, desc=f"update {config.rubrix_dataset}", unit="rec", disable=None) as bar:
            for chunk in _chunks(out, spec, ledger, report, min(config.chunk_size, CHUNK_MAX)):
                if report.errors:
                    report.not_attempted += len(chunk)
                    continue
                try:
                    done = with_retries(config, lambda: _write_chunk(adapter, chunk, spec, target, new_agent))
                except RubrixError as exc:
                    report.errors.append(f"a chunk of {len(chunk)} records: {exc}")
                    report.not_attempted += len(chunk)
                    continue
                ledger.ack(uuid.uuid4().hex[:12], done["updated"] + done["already"])
                for k in ("updated", "already", "answered", "missing"):
                    setattr(report, k, getattr(report, k) + len(done[k]))
                bar.update(len(chunk))
    finally:
        if ledger is not None:
            ledger.close()
        adapter.close()
        report.wall_s = time.monotonic() - t0
    return report


def _chunks(out: Output, spec: rec.RecordSpec, ledger: Ledger, report: UpdateReport, size: int):
    """The input's records not yet in the ledger, ``size`` at a time (id -> record)."""
    chunk: dict[str, dict] = {}
    seen: set[str] = set()
    columns = list({"id", "labels", "scores", spec.text_field, *spec.metadata_fields})
    dropped: Counter = Counter()
    for batch in out.dataset.to_batches(columns=columns, batch_size=4096):
        for record in rec.build_records(batch, spec, dropped):
            report.rows += 1
            if record is None:
                report.skipped_empty += 1
                continue
            if record["id"] in seen:
                continue
            seen.add(record["id"])
            if record["id"] in ledger.acked:
                report.already += 1
                continue
            chunk[record["id"]] = record
            if len(chunk) >= size:
                yield chunk
                chunk = {}
    if chunk:
        yield chunk


def _write_chunk(adapter, chunk: dict[str, dict], spec: rec.RecordSpec, target, new_agent: str) -> dict:
    """One operation, safe to repeat: read the chunk's records now, write the new prediction to those nobody
    answered that do not carry it yet. Returns the ids by outcome."""
    fresh = adapter.read(list(chunk))
    done: dict[str, list] = {"updated": [], "already": [], "answered": [], "missing": []}
    todo = []
    for rid, record in chunk.items():
        r = fresh.get(rid)
        if r is None:
            done["missing"].append(rid)
        elif not r.untouched:
            done["answered"].append(rid)
        elif _carries(r, record, new_agent, spec):
            done["already"].append(rid)
        else:
            if target is None and r.state.get("multi_label") not in (None, spec.multi_label):
                raise ZsRayError(f"record {rid!r} on the server is {'' if r.state['multi_label'] else 'not '}"
                                 "multi-label, the input is the other: use an output of the same mode")
            todo.append(r)
    if todo:
        adapter.suggest(todo, chunk, target)
    done["updated"] = [r.id for r in todo]
    return done


def _carries(r, record: dict, agent: str, spec: rec.RecordSpec) -> bool:
    """Whether the record as read already holds this prediction (its top label and score, by this agent) and
    its scores' metadata (a record logged before the scores were metadata does not: it gets them)."""
    best = max(record["prediction"]["labels"], key=lambda x: x["score"])
    if not (r.agent == agent and r.label == best["class"] and abs(r.score - best["score"]) < 1e-6):
        return False
    keys = [k for _, k in spec.score_keys] + ([rec.MARGIN_KEY, rec.ENTROPY_KEY] if spec.uncertainty else [])
    held = r.metadata or {}
    return all(k not in record["metadata"] or (isinstance(held.get(k), (int, float))
                                               and abs(held[k] - record["metadata"][k]) < 1e-6) for k in keys)


__all__ = ["UpdateReport", "update_run", "update_suggestions"]
