"""How fast an annotation server takes records: the rate of the last ``zs-ray log`` to it, or a short probe.

The dry run (``zs_ray.dryrun``) turns it into a logging time beside the compute ETA. Where the rate comes from,
in order:

* **stored**: every ``log_output`` that sent at least ``STORE_MIN_RECORDS`` records stores its sending rate
  (records sent / seconds from the first chunk handed to a sender to the last one answered), its senders and
  the server's version in ``log-rates.json`` in the cache directory (``zs_ray/cache.py``), keyed by the server's URL without credentials
  (``transport.public_url``) and the workspace, then by dataset. No key, header or password is ever written.
  The dataset's own figure is used first, else the newest one of that server and workspace.
* **probe**: none stored: ``config.senders`` threads send bulk requests of synthetic records (text of the
  plan's mean length, one prediction; no metadata) for ``PROBE_S`` seconds (at most ``PROBE_MAX_RECORDS``)
  into a scratch dataset ``zs-ray-rate-probe-<random>`` of the same workspace, which is deleted afterwards
  (``finally``); the dataset to be logged is never touched. Its rate is stored too (under no dataset). It
  needs a key that may create and delete datasets (an owner or admin on Argilla 2.x); if the probe fails, the
  dry run says why and gives no logging time.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from zs_ray.errors import ZsRayError
from zs_ray.servers import argilla2
from zs_ray.servers import records as rec
from zs_ray.servers import v1
from zs_ray.servers.client import RubrixClient, RubrixError, with_retries
from zs_ray.servers.config import SendConfig

STORE_MIN_RECORDS = 200  # a smaller log says little about the rate
PROBE_S = 3.0
PROBE_CHUNK = 100
PROBE_MAX_RECORDS = 2000
PROBE_PREFIX = "zs-ray-rate-probe-"


def _store_file() -> Path:
    from zs_ray.cache import cache_dir

    return cache_dir() / "log-rates.json"


def _server_key(config: SendConfig) -> str:
    return f"{config.public_url.rstrip('/')}|{config.rubrix_workspace or ''}"


@dataclass
class LogRate:
    records_per_s: float
    senders: int
    server: str  # "argilla2 2.8.0"
    measured_at: str
    source: str  # "probe" (measured now), "stored" (an earlier log or probe)
    dataset: str = ""  # the dataset it was measured on ("" for a probe)
    records: int = 0  # records it was measured on

    def describe(self) -> str:
        what = f"{self.server}, {self.senders} sender{'s' if self.senders != 1 else ''}"
        if self.source == "probe":
            return f"{what}; measured now by a probe of {self.records} records, its scratch dataset deleted"
        origin = f"the last log to {self.dataset}" if self.dataset else "a probe"
        return f"{what}; stored from {origin} ({self.records} records) at {self.measured_at}"


def _read() -> dict:
    try:
        data = json.loads(_store_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(data: dict) -> None:
    path = _store_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measured again next time


def store(config: SendConfig, server: str, records: int, seconds: float, dataset: str = "") -> None:
    """Keep the rate of a log (or a probe: ``dataset`` "") to this server and workspace."""
    if records < 1 or seconds <= 0:
        return
    data = _read()
    entry = {"records_per_s": records / seconds, "records": records, "seconds": round(seconds, 3),
             "senders": config.senders, "server": server,
             "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data.setdefault(_server_key(config), {})[dataset] = entry
    _write(data)


def stored(config: SendConfig, dataset: str) -> Optional[LogRate]:
    """The stored rate of ``dataset`` on this server and workspace, else the newest stored for them."""
    entries = _read().get(_server_key(config)) or {}
    name = dataset if dataset in entries else max(entries, key=lambda k: entries[k].get("measured_at", ""),
                                                  default=None)
    if name is None:
        return None
    e = entries[name]
    try:
        return LogRate(float(e["records_per_s"]), int(e["senders"]), str(e["server"]), str(e["measured_at"]),
                       "stored", name, int(e.get("records", 0)))
    except (KeyError, TypeError, ValueError):
        return None


def _synthetic(n0: int, n: int, labels: list[str], multi_label: bool, chars: float, agent: str) -> list[dict]:
    words = ("noticia", "gobierno", "partido", "ciudad", "equipo", "mercado", "cultura", "ciencia")
    text = " ".join(words[i % len(words)] for i in range(max(1, int(chars) // 8)))[:max(1, int(chars))]
    rest = 0.4 / max(1, len(labels) - 1)
    out = []
    for i in range(n0, n0 + n):
        order = labels[i % len(labels):] + labels[:i % len(labels)]
        scores = [0.9, *[0.3] * (len(labels) - 1)] if multi_label else [0.6, *[rest] * (len(labels) - 1)]
        out.append({"id": f"probe-{i}", "inputs": {"text": f"{i} {text}"}, "metadata": {}, "multi_label": multi_label,
                    "prediction": {"agent": agent, "labels": [{"class": c, "score": s} for c, s in zip(order, scores)]}})
    return out


def probe(config: SendConfig, labels: list[str], multi_label: bool, chars: float) -> LogRate:
    """The rate measured now into a scratch dataset (deleted afterwards); raises ZsRayError if it cannot."""
    from zs_ray.servers.connect import connect

    scratch = replace(config, rubrix_dataset=PROBE_PREFIX + uuid.uuid4().hex[:10])
    client, info, _ = connect(scratch)
    v2 = info.generation == "argilla2"
    server = f"{info.generation} {info.version}"
    chunk = max(1, min(config.chunk_size, PROBE_CHUNK))
    agent = "zs-ray rate probe"
    sent, errors, lock = [0], [], threading.Lock()
    next_id = [0]
    target = None
    try:
        try:
            if v2:
                target = argilla2.prepare(client, scratch, client.argilla2, list(labels), multi_label, agent, {})
                encode = target.encode
                path = f"/api/v1/datasets/{target.dataset_id}/records/bulk"

                def body(records):
                    return "PUT", argilla2.bulk_body([encode(r) for r in records])
            else:
                with_retries(config, lambda: v1.create_dataset(client))
                path = f"/api/datasets/{scratch.rubrix_dataset}/{v1.TASK}:bulk"

                def body(records):
                    return "POST", rec.bulk_body([rec.encode(r) for r in records], config.rubrix_tags)

            def work() -> None:
                worker = RubrixClient(scratch)
                try:
                    while time.monotonic() < deadline and not errors:
                        with lock:
                            if next_id[0] + chunk > PROBE_MAX_RECORDS:
                                return
                            n0, next_id[0] = next_id[0], next_id[0] + chunk
                        method, data = body(_synthetic(n0, chunk, list(labels), multi_label, chars, agent))
                        with_retries(config, lambda: worker.request(method, path, data=data))
                        with lock:
                            sent[0] += chunk
                except RubrixError as exc:
                    errors.append(str(exc))
                finally:
                    worker.close()

            t0 = time.monotonic()
            deadline = t0 + PROBE_S
            threads = [threading.Thread(target=work, daemon=True) for _ in range(config.senders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.monotonic() - t0
        finally:
            _delete(client, scratch, v2, target)
    except RubrixError as exc:
        raise ZsRayError(f"the rate probe on {config.public_url} failed: {exc}") from None
    finally:
        client.close()
    if errors or not sent[0]:
        raise ZsRayError(f"the rate probe on {config.public_url} failed: {errors[0] if errors else 'nothing sent'}")
    store(config, server, sent[0], seconds)
    return LogRate(sent[0] / seconds, config.senders, server,
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), "probe", "", sent[0])


def _delete(client: RubrixClient, scratch: SendConfig, v2: bool, target) -> None:
    """The scratch dataset removed (it may not exist: a probe refused before creating it)."""
    try:
        if v2:
            found = target.dataset_id if target is not None else (argilla2.open_session(client, scratch).dataset
                                                                   or {}).get("id")
            if found:
                with_retries(scratch, lambda: client.request("DELETE", f"/api/v1/datasets/{found}"))
        else:
            with_retries(scratch, lambda: client.request("DELETE", f"/api/datasets/{scratch.rubrix_dataset}",
                                                         ok=(200, 204, 404)))
    except RubrixError as exc:
        raise ZsRayError(f"the rate probe's scratch dataset {scratch.rubrix_dataset} could not be deleted "
                         f"({exc}): delete it in the web app") from None


def logging_rate(config: SendConfig, labels: list[str], multi_label: bool, chars: float) -> LogRate:
    """The stored rate for ``config.rubrix_dataset`` on this server, else one measured now (``probe``)."""
    return stored(config, config.rubrix_dataset) or probe(config, labels, multi_label, chars)
