"""Records/s into the protocol-faithful test server at 1, 4 and 8 senders; client CPU per record.

The server runs in its own process (so its CPU is not counted as the client's), in Rubrix 0.18
mode, once as fast as it can answer and once with 50 ms added to every bulk answer (standing in
for Elasticsearch indexing and network latency). Client CPU = the driver's own CPU time
(``getrusage(RUSAGE_SELF)`` around ``log_output``: reading Parquet, building, checking and
encoding records, the ledger) + the CPU the sender functions report (``time.process_time`` inside
each Ray task: HTTP and body assembly). Ray's own scheduling/serialisation CPU in the workers and
the raylet is not included.

    python benchmarks/bench_rubrix.py [rows]    # writes benchmarks/results-rubrix.md
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow  # noqa: E402
import ray  # noqa: E402
import requests  # noqa: E402

from tests.rubrix_server import make_output  # noqa: E402
from zs_ray import RubrixConfig  # noqa: E402
from zs_ray.servers import log_output  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import cpu_model  # noqa: E402  (one description of the machine for every benchmark)


def start_server(delay: float):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "rubrix_server.py"),
                             "rubrix-0.18", str(delay)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


REPEATS = 3
LOAD_BEFORE = (0.0, 0.0, 0.0)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    # 8 logical CPUs: 8 senders x 0.25 CPU stay within Ray's worker soft limit (one per CPU).
    # With Ray's default (the 2 real cores here) Ray kills and restarts the extra idle workers
    # and 8 senders fall to ~6k records/s: a property of tiny nodes, not of the sending.
    global LOAD_BEFORE
    LOAD_BEFORE = os.getloadavg()
    ray.init(address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ids = make_output(Path(tmp) / "out", rows, empty_every=0, files=4)
        for delay in (0.0, 0.05):
            proc, url = start_server(delay)
            try:
                for senders in (1, 4, 8):
                    runs = []
                    for rep_no in range(REPEATS + 1):  # run 0 warms the sender workers up
                        name = f"bench-{senders}-{int(delay * 1000)}-{rep_no}"
                        cfg = RubrixConfig(rubrix_dataset=name, rubrix_api_url=url, senders=senders, chunk_size=500,
                                           rubrix_ledger=str(Path(tmp) / f"{name}.ledger"))
                        t0 = time.perf_counter()
                        rep = log_output(Path(tmp) / "out", cfg)
                        wall = time.perf_counter() - t0
                        assert rep.ok and rep.sent == len(ids), rep.summary()
                        if rep_no:
                            runs.append((rep.sent / wall, wall, rep.driver_cpu_s / rep.sent * 1e6,
                                         rep.sender_cpu_s / rep.sent * 1e6))
                    runs.sort()
                    rps = [r[0] for r in runs]
                    med = runs[len(runs) // 2]
                    results.append((delay, senders, med[0], min(rps), max(rps), med[1], med[2],
                                    med[3], med[2] + med[3]))
                    print(results[-1], flush=True)
            finally:
                proc.terminate()
                proc.wait()
    ray.shutdown()
    write(rows, results)


def write(rows: int, results: list) -> None:
    lines = [
        "# Rubrix ingestion benchmark",
        "",
        f"`python benchmarks/bench_rubrix.py {rows}`: {rows} MLSum-like records (summary ~55 chars, "
        "6 labels with scores, 4 metadata fields; ~560 bytes of JSON each), chunks of 500, "
        "into `tests/rubrix_server.py` (Rubrix 0.18 mode, own process, single Python process "
        f"validating every payload) on the same machine. Each row: the median of {REPEATS} runs "
        "(records/s range in brackets) after a warm-up run that starts the sender workers. Ray runs locally with `num_cpus=8` logical CPUs so "
        "that 8 sender tasks (0.25 CPU each) fit Ray's worker soft limit; with the default 2 on "
        "this 2-core box, Ray kills and restarts idle workers and 8 senders fell to ~6,000 "
        "records/s. The client, the server and Ray share the same 2 cores, so these figures are "
        "a lower bound and the 0 ms rows are bound by the server's and the driver's CPU.",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; {platform.platform()}",
        f"- load average (1/5/15 min) when the benchmark started: "
        f"{' / '.join(f'{x:.2f}' for x in LOAD_BEFORE)} (other work shared the machine)",
        f"- Python {platform.python_version()}, ray {ray.__version__}, pyarrow {pyarrow.__version__}, "
        f"requests {requests.__version__}",
        "",
        "| added server latency / request | senders | records/s (min-max) | wall s "
        "| driver CPU us/record | sender CPU us/record | client CPU us/record |",
        "|---|---|---|---|---|---|---|",
    ]
    for delay, senders, rps, lo, hi, wall, drv, snd, tot in results:
        lines.append(f"| {int(delay * 1000)} ms | {senders} | {rps:,.0f} ({lo:,.0f}-{hi:,.0f}) "
                     f"| {wall:.2f} | {drv:.1f} | {snd:.1f} | {tot:.1f} |")
    lines += [
        "",
        "How CPU is measured: driver = `getrusage(RUSAGE_SELF)` user+sys around `log_output` "
        "(Parquet read, record building and checks, JSON encoding, ledger fsyncs); sender = the "
        "sum of `time.process_time()` deltas the sender tasks report (body assembly, HTTP). Ray's "
        "own task overhead in workers/raylet is not included.",
        "",
        "Reading: with per-request latency (the realistic case), throughput grows with senders "
        "until the client's driver or the server saturates; the driver costs ~25-30 us of CPU per "
        "record (one core: ~35,000 records/s), the senders ~4 us. Here driver, test server and "
        "8 Ray workers share 2 cores, so 8 senders cannot beat 4; on a real cluster the senders "
        "run on other nodes (SPREAD) and the server is the limit: `--senders` is how hard zs-ray "
        "may push it.",
        "",
    ]
    out = ROOT / "benchmarks" / "results-rubrix.md"
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
