"""The job at scale: synthetic MLSum-shaped corpora of 10k, 100k and 1.5M rows through the whole job.

For each size, a fresh driver process (``--one``) starts its own local Ray and runs ``zs_ray.annotate`` on
``train[0:N]`` of an MLSum-shaped Parquet corpus (config ``es``, files of 100,000 rows, row groups of 1,000,
2% empty summaries; text = summary, ~30 words) with the tiny test model (2 layers, hidden 32) in fp32, so
that the job's own machinery, not the model, is what is measured. A sampler thread in the driver records,
every second:

* the driver's resident memory (``VmRSS``; its peak is ``VmHWM`` at the end), from ``/proc/self/status``;
* the object store in use on the node (Ray's ``memory_summary(stats_only=True)``: "Plasma memory usage").

Then the output: rows, number and size of the Parquet files. The goal is the driver's peak RSS growing less
than 10% from 100k to 1.5M rows (it streams: no stage collects rows in the driver).

    python benchmarks/bench_scale.py                               # 10k, 100k, 1.5M: ~35 min on 2 cores
    python benchmarks/bench_scale.py --sizes 10000,100000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

RESULTS = ROOT / "benchmarks" / "results-scale.md"
BEGIN, END = "<!-- bench_scale:begin -->", "<!-- bench_scale:end -->"
ROWS_PER_FILE = 100_000
LABELS = ["política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"]
TEMPLATE = "Esta noticia habla de {}."


def write_corpus(root: Path, rows: int) -> None:
    """es/train-*.parquet: ``rows`` rows in files of ROWS_PER_FILE (one block of synthetic rows, reused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.builders import MLSUM_SCHEMA, mlsum_rows

    base = root / "es"
    base.mkdir(parents=True, exist_ok=True)
    block = pa.Table.from_pylist(mlsum_rows(ROWS_PER_FILE, seed=3, empty_every=50), schema=MLSUM_SCHEMA)
    files = -(-rows // ROWS_PER_FILE)
    for k in range(files):
        n = min(ROWS_PER_FILE, rows - k * ROWS_PER_FILE)
        pq.write_table(block.slice(0, n), base / f"train-{k:05d}-of-{files:05d}.parquet", row_group_size=1000)


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _plasma_bytes() -> int:
    import ray
    from ray._private.internal_api import memory_summary

    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    match = re.search(r"Plasma memory usage (\d+) MiB", summary)
    return int(match.group(1)) * 2**20 if match else 0


def run_one(rows: int, data: str, model: str, out: str) -> dict:
    """In a fresh process: the job on ``rows`` rows, with the driver and object store sampled."""
    import logging

    import pyarrow.parquet as pq
    import ray

    from zs_ray import AnnotateConfig, annotate

    logging.getLogger("ray").setLevel(logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    _plasma_bytes()  # fails here, not silently in the sampler, if the object store cannot be read
    rss_start = _status("VmRSS")
    samples = {"rss": [], "plasma": []}
    done = threading.Event()

    def sample():
        while not done.wait(1.0):
            samples["rss"].append(_status("VmRSS"))
            try:
                samples["plasma"].append(_plasma_bytes())
            except Exception:  # noqa: BLE001 - a missed sample is not a result
                pass

    threading.Thread(target=sample, daemon=True).start()
    summary = annotate(AnnotateConfig(output=out, dataset=data, config="es", split=f"train[0:{rows}]",
                                      text_field="summary", model=model, labels=LABELS, hypothesis_template=TEMPLATE,
                                      precision="fp32", overwrite=True))
    done.set()
    files = sorted(Path(out).glob("*.parquet"))
    sizes = [f.stat().st_size for f in files]
    rows_per_file = [pq.ParquetFile(f).metadata.num_rows for f in files]
    return {"rows": summary.rows, "skipped": summary.skipped, "seconds": summary.seconds,
            "rows_per_s": summary.rows / summary.seconds, "workers": summary.workers.split(" of ")[0],
            "rss_start": rss_start, "rss_peak": _status("VmHWM"), "rss_end": _status("VmRSS"),
            "rss_samples_max": max(samples["rss"], default=0), "plasma_peak": max(samples["plasma"], default=0),
            "plasma_samples": len(samples["plasma"]), "files": len(files), "bytes": sum(sizes),
            "file_mb": [min(sizes) / 2**20, statistics.median(sizes) / 2**20, max(sizes) / 2**20],
            "file_rows": [min(rows_per_file), int(statistics.median(rows_per_file)), max(rows_per_file)]}


def table(results: list[dict]) -> str:
    lines = ["| rows | wall s | rows/s | driver RSS after Ray start MB | driver peak RSS MB | object store peak MB "
             "| output files | file size MB min/median/max | rows per file min/median/max |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        mb = "/".join(f"{x:.1f}" for x in r["file_mb"])
        fr = "/".join(f"{x:,}" for x in r["file_rows"])
        lines.append(f"| {r['rows']:,} | {r['seconds']:.0f} | {r['rows_per_s']:.0f} | {r['rss_start'] / 2**20:.0f} "
                     f"| {r['rss_peak'] / 2**20:.0f} | {r['plasma_peak'] / 2**20:.0f} | {r['files']} | {mb} | {fr} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1500000")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.data, args.model, args.out)), flush=True)
        return 0

    from bench_engine import machine, write_section

    from tests.builders import build_nli_model

    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_nli_model(tmp / "tiny", entailment_index=2))
        start = time.perf_counter()
        write_corpus(tmp / "data", max(sizes))
        print(f"corpus of {max(sizes):,} rows written in {time.perf_counter() - start:.0f}s", flush=True)
        for rows in sizes:
            proc = subprocess.run([sys.executable, __file__, "--one", str(rows), "--data", str(tmp / "data"),
                                   "--model", model, "--out", str(tmp / f"out-{rows}")],
                                  capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                return 1
            results.append(json.loads(line[len("RESULT "):]))
            print(results[-1], flush=True)
    print(table(results))
    by = {r["rows"]: r for r in results}
    growth = ""
    if 100_000 in by and max(by) > 100_000:
        big = by[max(by)]
        g = big["rss_peak"] / by[100_000]["rss_peak"] - 1
        growth = (f"\nDriver peak RSS from 100,000 to {big['rows']:,} rows: {g:+.1%} "
                  f"(goal: less than +10%).\n")
    if not args.no_write:
        body = (f"## The job at 10k / 100k / 1.5M rows (generated by benchmarks/bench_scale.py)\n\n"
                f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; reproduce with "
                f"`python benchmarks/bench_scale.py --sizes {args.sizes}`.\n\n{machine(2)}\n"
                "- Local Ray with 2 CPUs, a fresh driver per size; MLSum-shaped Parquet (config es, files of "
                "100,000 rows, row groups of 1,000, 2% empty summaries); text = summary; tiny model (2 layers, "
                "hidden 32), fp32, 6 labels.\n\n" + table(results) + "\n" + growth)
        write_section(RESULTS, BEGIN, END, body, "zs-ray at scale: benchmark results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
