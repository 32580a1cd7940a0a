"""Log an annotation-job output to Rubrix / Argilla 1.x: parallel, exactly once by id, annotation-safe.

The driver streams the output (``zs_ray.output.open_output``: any URI the job writes), builds and checks
records, cuts chunks bounded by record count and bytes and hands each to a Ray sender task, keeping at
most ``senders`` in flight; each acknowledged chunk's ids are appended to the ledger (fsync). Exactly
once by id, because every delivery attempt of a chunk is "ask the server which of its ids it holds,
then send only the others" (``send_chunk``):

* a 5xx, a transport error or a lost answer (the request may have been stored) is retried by the one
  retry layer (``client.with_retries``) as that whole operation, so a stored record is never resent;
* a sender whose process or node dies is re-run by Ray (``max_retries`` of the sender task), and that
  re-run asks first too;
* ids in the ledger are skipped without asking; a ledger whose dataset is gone from the server is moved
  aside;
* only the server's own "not found" means "none of these ids": a 404 or 405 from a proxy or an unknown
  route fails the chunk (``v1.existing_ids``), it never leads to a send.

So no stored record, and no human annotation or status on it, is ever replaced by a re-run (Rubrix 0.x
and Argilla < 1.7 replace a re-sent record; 1.7+ keep its annotation but reset its status to Default).
A dataset that is not on the server is created before the first chunk, on every generation: concurrent
first bulks into a missing Rubrix 0.x dataset each re-create its index, losing acknowledged records.

Argilla 2.x (``argilla2``) goes through the same driver, ledger and Ray senders, with its own items and
sender: there the server upserts by external_id and keeps responses, so a chunk is sent without asking first.
What comes before the first record (the records' spec, what the server's generation changes in it, the 2.x
dataset set up) is ``prepare``'s, shared with ``log --update-suggestions``.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow.dataset as pds

from zs_ray.errors import ZsRayError
from zs_ray.output import Output, open_output
from zs_ray.servers import argilla2
from zs_ray.servers import rate
from zs_ray.servers import records as rec
from zs_ray.servers import v1
from zs_ray.servers.client import RubrixError, client_for, with_retries
from zs_ray.servers.config import SendConfig
from zs_ray.servers.connect import connect
from zs_ray.servers.ledger import Ledger, default_path
from zs_ray.servers.prepare import record_spec, set_up

log = logging.getLogger(__name__)
SENDER_CPUS = 0.25  # Ray CPU request of one sender task: it waits on the network


@dataclass
class LogReport:
    """What one ``log_output`` run did. ``ok`` is False when anything is left undelivered."""

    dataset: str
    server: str = ""
    rows: int = 0
    sent: int = 0
    already_acked: int = 0
    already_on_server: int = 0
    held_back: int = 0  # not in --log-only's subsets: not sent now, for a later `zs-ray log`
    skipped_empty: int = 0
    duplicates: int = 0
    failed: int = 0
    not_attempted: int = 0
    chunks: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ledger: str = ""
    wall_s: float = 0.0
    send_s: float = 0.0  # from the first chunk handed to a sender to the last one answered
    driver_cpu_s: float = 0.0
    sender_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.not_attempted == 0

    def summary(self) -> str:
        s = (f"rubrix dataset {self.dataset} ({self.server}): {self.sent} sent, "
             f"{self.already_acked} already acknowledged, {self.already_on_server} already on the "
             f"server, {self.skipped_empty} skipped (no prediction), {self.failed} failed, "
             f"{self.not_attempted} not attempted, in {self.chunks} chunks, {self.wall_s:.1f}s")
        if self.duplicates:
            s += f"; {self.duplicates} duplicate ids ignored"
        if self.held_back:
            s += f"; {self.held_back} held back by --log-only (`zs-ray log` without it sends them)"
        if not self.ok:
            s += "; run `zs-ray log` again to deliver the rest"
        return s


@dataclass
class Chunk:
    key: str
    ids: list[str]
    encoded: list[bytes]


# ---------------------------------------------------------------------------------------------
# Sender: runs in a Ray task, one chunk per call.
# ---------------------------------------------------------------------------------------------
def send_chunk(config: SendConfig, ids: list[str], encoded: list[bytes]) -> dict:
    """Deliver one chunk so that the server ends up holding every id exactly once.

    Returns ``{"sent", "present", "failed", "error", "status", "cpu_s"}`` (lists of ids).
    """
    cpu0 = time.process_time()
    client = client_for(config)
    out = {"sent": [], "present": [], "failed": [], "error": None, "status": None}
    todo = dict(zip(ids, encoded))

    def deliver() -> None:  # one attempt; safe to repeat: it asks before it sends
        held = v1.existing_ids(client, list(todo))
        out["present"].extend(i for i in todo if i in held)
        for i in held:
            todo.pop(i, None)
        if not todo:
            return
        answer = v1.bulk(client, rec.bulk_body(list(todo.values()), config.rubrix_tags))
        if answer.get("failed"):  # the server stored only some: the next attempt finds out which
            raise RubrixError(f"server reported {answer['failed']} failed records", status=500)
        out["sent"].extend(todo)
        todo.clear()

    try:
        with_retries(config, deliver)
    except RubrixError as exc:
        out["failed"], out["error"], out["status"] = list(todo), str(exc), exc.status
    out["cpu_s"] = time.process_time() - cpu0
    return out


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _chunks(dataset: pds.Dataset, spec: rec.RecordSpec, config: SendConfig, ledger: Ledger,
            report: LogReport, dropped: Counter, encode=rec.encode,
            chunk_size: int | None = None, only=None) -> Iterator[Chunk]:
    run = uuid.uuid4().hex[:8]
    seen: set[str] = set()
    ids: list[str] = []
    encoded: list[bytes] = []
    size = 0
    limit = config.chunk_bytes - 256  # room for the body's head
    n = 0

    def cut() -> Chunk:
        nonlocal ids, encoded, size, n
        chunk = Chunk(f"{run}-{n}", ids, encoded)
        ids, encoded, size, n = [], [], 0, n + 1
        return chunk

    columns = list({"id", "labels", "scores", spec.text_field, *spec.metadata_fields})
    for batch in dataset.to_batches(columns=columns, batch_size=4096):
        for record in rec.build_records(batch, spec, dropped):
            report.rows += 1
            if record is None:
                report.skipped_empty += 1
                continue
            rid = record["id"]
            if rid in seen:
                report.duplicates += 1
                continue
            seen.add(rid)
            if rid in ledger.acked:
                report.already_acked += 1
                continue
            top = record["prediction"]["labels"][0]
            if only is not None and not only.contains(rid, top["class"], top["score"]):
                report.held_back += 1  # --log-only: sent by a later `zs-ray log`
                continue
            e = encode(record)
            if ids and (len(ids) >= (chunk_size or config.chunk_size) or size + len(e) + 1 > limit):
                yield cut()
            if len(e) > limit:
                report.warnings.append(f"record {rid} alone is {len(e)} bytes > chunk bytes "
                                       f"{config.chunk_bytes}; sent on its own")
            ids.append(rid)
            encoded.append(e)
            size += len(e) + 1
    if ids:
        yield cut()


def log_output(output: "str | os.PathLike | Output", config: SendConfig) -> LogReport:
    """Log every predicted row of the job output ``output`` (a path or URI, or an ``Output`` already open:
    the job's files so far, while it runs) to ``config.rubrix_dataset``; safe to run again.

    Raises ZsRayError for bad settings or input (before anything is sent). Delivery failures do
    not raise: they are counted in the returned report (``report.ok`` is then False). With ``--log-only``
    (``config.log_only_for``) only the chosen records are sent; the others are counted as held back, left
    out of the ledger, for a later run without it.
    """
    t0, cpu0 = time.monotonic(), _self_cpu()
    config.validate()
    out = output if isinstance(output, Output) else open_output(str(output))
    spec, warnings, agent = record_spec(config, out, sample=config.sample_rule_for(out),  # --sample: decided
                                        uncertain=config.uncertain_rule_for(out))  # before any send; --uncertain too
    only = config.log_only_for(out, spec.sample, spec.uncertain)  # --log-only: the records sent now
    for w in warnings:
        log.warning(w)
    if only is not None:
        log.info(only.describe())
    client, info, existed = connect(config)
    v2 = info.generation == "argilla2"
    try:
        spec, more, target = set_up(client, config, out, spec, agent, v2)
        warnings = [*warnings, *more]
    except BaseException:
        client.close()
        raise
    report = LogReport(config.rubrix_dataset, server=f"{info.generation} {info.version}", warnings=list(warnings))
    identity = {"api_url": config.public_url, "workspace": config.rubrix_workspace,
                "dataset": config.rubrix_dataset}
    ledger = Ledger.open(config.rubrix_ledger or default_path(out, identity), identity, reset=not existed)
    report.ledger = str(ledger.path)
    try:
        if not existed and not v2:  # before any chunk (see ``v1.create_dataset``; 2.x: prepare_v2)
            try:
                with_retries(config, lambda: v1.create_dataset(client))
            except RubrixError as exc:
                raise ZsRayError(f"cannot create dataset {config.rubrix_dataset}: {exc}") from None
        expected = int(out.manifest.get("rows", 0)) - int(out.manifest.get("skipped", 0))
        if only is not None:  # --log-only: the held-back records are not in the bar's total
            expected = _to_send(out.dataset, only, ledger.acked)
        dropped: Counter = Counter()
        if v2:
            _send_all(_chunks(out.dataset, spec, config, ledger, report, dropped, target.encode,
                              min(config.chunk_size, argilla2.BULK_MAX), only),
                      config, ledger, report, expected, sender_fn=argilla2.send_chunk, args=(target.dataset_id,))
        else:
            _send_all(_chunks(out.dataset, spec, config, ledger, report, dropped, only=only), config, ledger, report,
                      expected)
        report.warnings += [f"metadata field {f!r}: {n} NaN or infinite values left out of their records' "
                            "metadata (missing there)" for f, n in sorted(dropped.items())]
    finally:
        ledger.close()
        client.close()
        report.wall_s = time.monotonic() - t0
        report.driver_cpu_s = _self_cpu() - cpu0
    for w in report.warnings[len(warnings):]:
        log.warning(w)
    if report.ok and report.sent >= rate.STORE_MIN_RECORDS:  # the dry run's logging time (``rate``)
        rate.store(config, report.server, report.sent, report.send_s, config.rubrix_dataset)
    return report


def _to_send(dataset: pds.Dataset, only, acked) -> int:
    """How many records a log with ``--log-only``'s ``only`` ends with: the predicted rows it chooses, and those
    ``acked`` before (the progress bar's total and its start), from the top label and score columns alone."""
    n = 0
    for batch in dataset.to_batches(columns=["id", "prediction", "score"], batch_size=65536):
        cols = batch.to_pydict()
        n += sum(1 for rid, label, score in zip(cols["id"], cols["prediction"], cols["score"])
                 if label is not None and (rid in acked or only.contains(rid, label, score)))
    return n


def _send_all(chunks: Iterator[Chunk], config: SendConfig, ledger: Ledger, report: LogReport,
              expected: int, sender_fn=send_chunk, args: tuple = ()) -> None:
    """Feed chunks to Ray sender tasks, never more than ``senders`` in flight, with a progress bar.

    Plain tasks (not actors): they run on workers Ray has already started, so a run pays no process
    start-up. A task whose worker or node dies is re-run by Ray up to ``rubrix_retries`` times (safe:
    every attempt asks the server first; on Argilla 2.x every attempt is an upsert by external_id). SPREAD
    puts them across nodes. ``sender_fn(config, *args, ids, encoded)`` sends one chunk (``send_chunk``,
    or ``argilla2.send_chunk``).
    """
    import ray
    from tqdm.auto import tqdm

    from zs_ray.cluster import connect_ray

    connect_ray(os.environ.get("RAY_ADDRESS"))
    sender = ray.remote(sender_fn).options(num_cpus=SENDER_CPUS, scheduling_strategy="SPREAD",
                                           max_retries=config.rubrix_retries, retry_exceptions=False)
    config_ref = ray.put(config)
    pending: dict = {}
    stop = False
    # disable=None: drawn only on a terminal.
    bar = tqdm(total=expected, initial=len(ledger.acked), unit="rec", desc=f"log {config.rubrix_dataset}",
               disable=None)

    def collect_one() -> None:
        nonlocal stop
        [ref], _ = ray.wait(list(pending), num_returns=1)
        chunk = pending.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the sender's worker or node died, past Ray's retries
            out = {"sent": [], "present": [], "failed": chunk.ids, "cpu_s": 0.0,
                   "error": f"sender lost: {type(exc).__name__}", "status": None}
        ledger.ack(chunk.key, out["sent"] + out["present"])
        bar.update(len(out["sent"]) + len(out["present"]))
        report.sent += len(out["sent"])
        report.already_on_server += len(out["present"])
        report.failed += len(out["failed"])
        report.sender_cpu_s += out["cpu_s"]
        if out["error"]:
            report.errors.append(f"chunk {chunk.key} ({len(out['failed'])} records): {out['error']}")
            stop = True  # a refused or unreachable server: do not pile up more failures

    t0 = None
    try:
        for chunk in chunks:
            while len(pending) >= config.senders and not stop:
                collect_one()
            if stop:
                report.not_attempted += len(chunk.ids)
                continue
            report.chunks += 1
            t0 = t0 or time.monotonic()
            pending[sender.remote(config_ref, *args, chunk.ids, chunk.encoded)] = chunk
        while pending:
            collect_one()
    finally:
        bar.close()
        report.send_s += time.monotonic() - t0 if t0 else 0.0


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
