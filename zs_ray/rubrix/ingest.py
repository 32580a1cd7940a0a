"""Log an annotation-job output directory to Rubrix: parallel, exactly once by id, annotation-safe.

The driver streams the Parquet output, builds and checks records, cuts chunks bounded by record
count and bytes and hands each to a Ray sender task, keeping at most ``senders`` in flight; each
acknowledged chunk's ids are appended to the ledger (fsync). Exactly once by id:

* a sender that meets a 5xx or a transport error (the request may have been stored: a lost
  answer) asks the server which ids it holds and resends only the rest;
* ids in the ledger are skipped; if the dataset already existed when the run started, every
  other id is checked against the server before it is sent (a crash, a lost answer, a lost
  ledger: whatever the ledger lacks is checked, never blindly resent);
* if the dataset did not exist, nothing can be overwritten: no checks, and a stale ledger for it
  is moved aside.

So no stored record, and no human annotation on it, is ever replaced by a re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow.dataset as pds

from zs_ray.errors import ZsRayError
from zs_ray.rubrix import records as rec
from zs_ray.rubrix.client import TASK, RubrixClient, RubrixError, ServerInfo, backoff_delay
from zs_ray.rubrix.config import RubrixConfig
from zs_ray.rubrix.ledger import Ledger, default_path
from zs_ray.write import MANIFEST

log = logging.getLogger(__name__)


@dataclass
class LogReport:
    """What one ``log_output`` run did. ``ok`` is False when anything is left undelivered."""

    dataset: str
    server: str = ""
    rows: int = 0
    sent: int = 0
    already_acked: int = 0
    already_on_server: int = 0
    skipped_empty: int = 0
    duplicates: int = 0
    failed: int = 0
    not_attempted: int = 0
    chunks: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ledger: str = ""
    wall_s: float = 0.0
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
        if not self.ok:
            s += "; run `zs-ray log` again to deliver the rest"
        return s


@dataclass
class Chunk:
    key: str
    ids: list[str]
    encoded: list[bytes]
    check_first: bool
    attempts: int = 0


# ---------------------------------------------------------------------------------------------
# Preflight: everything the user can get wrong fails here, before any record is sent.
# ---------------------------------------------------------------------------------------------
def connect(config: RubrixConfig) -> tuple[RubrixClient, ServerInfo, bool]:
    """Check settings, server, key and workspace. Returns (client, info, dataset_existed).

    Does not create anything. Call it before a long annotation job to fail early.
    """
    config.validate()
    client = RubrixClient(config)
    try:
        info = client.info()
        try:
            me = client.me()
        except RubrixError as exc:
            if exc.status in (401, 403):
                raise ZsRayError(f"the Rubrix server refused the API key: {exc}") from None
            raise
        if info.generation == "argilla" and info.version_tuple >= (1, 13) and not config.workspace:
            raise ZsRayError(
                f"Argilla {info.version} needs a workspace: set --rubrix-workspace or "
                f"RUBRIX_WORKSPACE (yours: {', '.join(me.get('workspaces') or []) or 'none'})"
            )
        allowed = set(me.get("workspaces") or []) | {me.get("username")}
        if config.workspace and me.get("workspaces") and config.workspace not in allowed:
            raise ZsRayError(f"workspace {config.workspace!r} is not one of yours: "
                             f"{', '.join(sorted(w for w in allowed if w))}")
        existing = client.get_dataset()
    except RubrixError as exc:
        client.close()
        raise ZsRayError(f"Rubrix at {config.api_url}: {exc}") from None
    if existing and existing.get("task") not in (None, TASK):
        client.close()
        raise ZsRayError(f"dataset {config.dataset} exists with task {existing.get('task')}, "
                         f"not {TASK}")
    return client, info, existing is not None


def preflight(config: RubrixConfig) -> ServerInfo:
    """``connect`` and close: for ``annotate`` to refuse bad Rubrix settings before hours of work."""
    client, info, _ = connect(config)
    client.close()
    return info


def read_output(input_dir: str | os.PathLike) -> tuple[pds.Dataset, dict]:
    """The Parquet dataset and manifest of a complete annotation-job output."""
    d = Path(input_dir)
    if not d.is_dir():
        raise ZsRayError(f"input directory {d} does not exist")
    manifest_path = d / MANIFEST
    if not manifest_path.is_file():
        raise ZsRayError(f"{d} has no {MANIFEST}: the annotation job did not finish writing it")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise ZsRayError(f"{manifest_path} is not valid JSON: {exc}") from None
    files = sorted(str(p) for p in d.glob("*.parquet") if not p.name.startswith(("_", ".")))
    if not files:
        raise ZsRayError(f"{d} holds no Parquet files")
    return pds.dataset(files, format="parquet"), manifest


# ---------------------------------------------------------------------------------------------
# Sender: runs in a Ray task, one chunk per call.
# ---------------------------------------------------------------------------------------------
_CLIENTS: dict[tuple, RubrixClient] = {}


def _client_for(config: RubrixConfig) -> RubrixClient:
    key_digest = hashlib.sha256(config.api_key.encode()).hexdigest()
    k = (config.api_url, config.workspace, config.dataset, config.verify_tls, config.timeout_s,
         key_digest)
    if k not in _CLIENTS:  # one keep-alive session per worker process, reused across tasks
        _CLIENTS[k] = RubrixClient(config)
    return _CLIENTS[k]


def send_chunk(config: RubrixConfig, ids: list[str], encoded: list[bytes], check_first: bool) -> dict:
    """Deliver one chunk so that the server ends up holding every id exactly once.

    Returns ``{"sent", "present", "failed", "error", "status", "cpu_s"}`` (lists of ids).
    """
    cpu0 = time.process_time()
    client = _client_for(config)
    out = {"sent": [], "present": [], "failed": [], "error": None, "status": None}
    todo = dict(zip(ids, encoded))
    attempt = 0
    must_check = check_first
    while todo:
        try:
            if must_check:
                held = client.existing_ids(list(todo))
                out["present"].extend(i for i in todo if i in held)
                todo = {i: e for i, e in todo.items() if i not in held}
                must_check = False
                if not todo:
                    break
            answer = client.bulk_once(rec.bulk_body(list(todo.values()), config.tags))
            if answer.get("failed"):
                must_check = True  # the server stored only some: find out which
                raise RubrixError(f"server reported {answer['failed']} failed records", status=500)
            out["sent"].extend(todo)
            todo = {}
        except RubrixError as exc:
            if not exc.retryable or attempt >= config.retries:
                out["failed"], out["error"], out["status"] = list(todo), str(exc), exc.status
                break
            # The request may have been stored before the failure: check before resending.
            must_check = True
            time.sleep(backoff_delay(attempt, config.backoff_s, config.backoff_max_s))
            attempt += 1
    out["cpu_s"] = time.process_time() - cpu0
    return out


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _chunks(dataset: pds.Dataset, spec: rec.RecordSpec, config: RubrixConfig, ledger: Ledger,
            check_first: bool, report: LogReport) -> Iterator[Chunk]:
    run = uuid.uuid4().hex[:8]
    seen: set[str] = set()
    ids: list[str] = []
    encoded: list[bytes] = []
    size = 0
    limit = config.chunk_bytes - 256  # room for the body's head
    n = 0

    def cut() -> Chunk:
        nonlocal ids, encoded, size, n
        chunk = Chunk(f"{run}-{n}", ids, encoded, check_first)
        ids, encoded, size, n = [], [], 0, n + 1
        return chunk

    columns = list({"id", "labels", "scores", spec.text_field, *spec.metadata_fields})
    for batch in dataset.to_batches(columns=columns, batch_size=4096):
        for record in rec.build_records(batch, spec):
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
            e = rec.encode(record)
            if ids and (len(ids) >= config.chunk_size or size + len(e) + 1 > limit):
                yield cut()
            if len(e) > limit:
                report.warnings.append(f"record {rid} alone is {len(e)} bytes > chunk bytes "
                                       f"{config.chunk_bytes}; sent on its own")
            ids.append(rid)
            encoded.append(e)
            size += len(e) + 1
    if ids:
        yield cut()


def log_output(input_dir: str | os.PathLike, config: RubrixConfig) -> LogReport:
    """Log every predicted row of ``input_dir`` to ``config.dataset``; safe to run again.

    Raises ZsRayError for bad settings or input (before anything is sent). Delivery failures do
    not raise: they are counted in the returned report (``report.ok`` is then False).
    """
    t0, cpu0 = time.monotonic(), _self_cpu()
    dataset, manifest = read_output(input_dir)
    config.validate()
    spec, warnings = rec.make_spec(dataset, manifest, config.metadata_fields, config.agent)
    for w in warnings:
        log.warning(w)
    client, info, existed = connect(config)
    report = LogReport(config.dataset, server=f"{info.generation} {info.version}",
                       warnings=list(warnings))
    identity = {"api_url": config.api_url, "workspace": config.workspace, "dataset": config.dataset}
    ledger_path = config.ledger_path or default_path(input_dir, identity)
    ledger = Ledger.open(ledger_path, identity, reset=not existed)
    report.ledger = str(ledger.path)
    try:
        if info.generation == "argilla" and not existed:
            try:
                client.create_dataset()
            except RubrixError as exc:
                raise ZsRayError(f"cannot create dataset {config.dataset}: {exc}") from None
        _send_all(_chunks(dataset, spec, config, ledger, existed, report), config, ledger, report)
    finally:
        ledger.close()
        client.close()
        report.wall_s = time.monotonic() - t0
        report.driver_cpu_s = _self_cpu() - cpu0
    for w in report.warnings[len(warnings):]:
        log.warning(w)
    return report


def _send_all(chunks: Iterator[Chunk], config: RubrixConfig, ledger: Ledger,
              report: LogReport) -> None:
    """Feed chunks to Ray sender tasks, never more than ``senders`` in flight.

    Plain tasks (not actors): they run on workers Ray has already started, so a run pays no
    process start-up. Each needs ``sender_cpus`` (I/O bound); SPREAD puts them across nodes.
    """
    import ray

    from zs_ray.cluster import connect_ray

    connect_ray(os.environ.get("RAY_ADDRESS"))
    sender = ray.remote(max_retries=0)(send_chunk).options(
        num_cpus=config.sender_cpus, scheduling_strategy="SPREAD")
    config_ref = ray.put(config)
    pending: dict = {}
    stop = False

    def submit(chunk: Chunk) -> None:
        chunk.attempts += 1
        pending[sender.remote(config_ref, chunk.ids, chunk.encoded, chunk.check_first)] = chunk

    def collect_one() -> None:
        nonlocal stop
        [ref], _ = ray.wait(list(pending), num_returns=1)
        chunk = pending.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the sender's worker or node died
            if chunk.attempts <= config.retries and not stop:
                chunk.check_first = True  # it may have been stored before dying
                submit(chunk)
                return
            out = {"sent": [], "present": [], "failed": chunk.ids, "cpu_s": 0.0,
                   "error": f"sender lost: {type(exc).__name__}", "status": None}
        ledger.ack(chunk.key, out["sent"] + out["present"])
        report.sent += len(out["sent"])
        report.already_on_server += len(out["present"])
        report.failed += len(out["failed"])
        report.sender_cpu_s += out["cpu_s"]
        if out["error"]:
            report.errors.append(f"chunk {chunk.key} ({len(out['failed'])} records): {out['error']}")
            stop = True  # a refused or unreachable server: do not pile up more failures

    for chunk in chunks:
        while len(pending) >= config.senders and not stop:
            collect_one()
        if stop:
            report.not_attempted += len(chunk.ids)
            continue
        report.chunks += 1
        submit(chunk)
    while pending:
        collect_one()


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
