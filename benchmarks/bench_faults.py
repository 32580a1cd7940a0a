"""What a fault costs: rows computed again after the driver is killed half-way, and how soon the first
record reaches the annotation server when logging while predicting.

1. Resume: the CLI annotates ``--rows`` summaries (tiny NLI model, local Ray on this machine) and is
   SIGKILLed once half the rows are committed; the same command then finishes the run. The model stage
   is the real one with one addition in a subclass: it appends the ids of every batch it classifies to a
   file, so "computed twice" is counted exactly (ids classified by both runs), not estimated.
2. Time to the first record: the CLI annotates ``--log-rows`` rows with ``--rubrix-dataset`` into the Rubrix
   test server (Argilla 1.29 flavor, tests/rubrix_server.py) and the clock runs from the command's start
   to the first record stored by the server; the run is then stopped.

    python benchmarks/bench_faults.py                  # ~4 minutes on 2 cores; writes results-faults.md
    python benchmarks/bench_faults.py --rows 20000 --log-rows 100000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from bench_engine import machine, write_section  # noqa: E402

from zs_ray.stages.model import ModelStage  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results-faults.md"
BEGIN, END = "<!-- bench_faults:begin -->", "<!-- bench_faults:end -->"


class CountingModelStage(ModelStage):
    """The model stage, also appending the ids it classified to $ZS_RAY_BENCH_IDS (one line per batch)."""

    def __call__(self, batch):
        out = super().__call__(batch)
        with open(os.environ["ZS_RAY_BENCH_IDS"], "a", encoding="utf-8") as fh:
            fh.write(" ".join(out.column("id").to_pylist()) + "\n")
        return out


def _driver(argv: list[str]) -> int:
    """The zs-ray CLI, with the counting model stage (runs in the subprocess)."""
    import zs_ray.pipeline
    from zs_ray.cli import main

    zs_ray.pipeline.ModelStage = CountingModelStage
    return main(argv)


def run(argv: list[str], env: dict) -> subprocess.Popen:
    code = "import sys, bench_faults; sys.exit(bench_faults._driver(sys.argv[1:]))"
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}
    full.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def committed_rows(partial: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in (partial / "checkpoint").glob("*.parquet")
               if not p.name.endswith(".pending.parquet"))


def resume_case(tmp: Path, model: str, rows: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.builders import mlsum_rows

    data = tmp / "resume.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(rows, seed=2)), data, row_group_size=1000)
    out, partial = tmp / "out", tmp / ".out.zs-ray-partial"
    argv = ["annotate", "--dataset", str(data), "--split", "train", "--model", model, "--output", str(out),
            "--precision", "fp32"]
    first_ids, second_ids = tmp / "ids-1.txt", tmp / "ids-2.txt"
    proc = run(argv, {"ZS_RAY_BENCH_IDS": str(first_ids)})
    while committed_rows(partial) < rows // 2 and proc.poll() is None:
        time.sleep(0.05)
    done = committed_rows(partial)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    start = time.perf_counter()
    again = run(argv, {"ZS_RAY_BENCH_IDS": str(second_ids)})
    stdout, stderr = again.communicate()
    assert again.returncode == 0, stderr[-2000:]
    first = set(first_ids.read_text().split()) if first_ids.exists() else set()
    second = set(second_ids.read_text().split())
    written = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert len(written) == len(set(written)) == rows
    return {"rows": rows, "committed_at_kill": done, "classified_before_kill": len(first),
            "classified_by_rerun": len(second), "computed_twice": len(first & second),
            "rerun_s": time.perf_counter() - start}


def first_record_case(tmp: Path, model: str, rows: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.builders import mlsum_rows
    from tests.rubrix_server import RubrixTestServer

    data = tmp / "log.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(rows, seed=3, empty_every=97)), data, row_group_size=2000)
    argv = ["annotate", "--dataset", str(data), "--split", "train", "--model", model, "--output",
            str(tmp / "logged"), "--rubrix-dataset", "bench_en_vivo"]
    with RubrixTestServer("argilla-1.29") as srv:
        start = time.perf_counter()
        proc = run(argv, {"RUBRIX_API_URL": srv.url, "RUBRIX_WORKSPACE": "rubrix",
                          "ZS_RAY_BENCH_IDS": str(tmp / "ids-log.txt")})
        while not srv.writes.get("bench_en_vivo") and proc.poll() is None:
            time.sleep(0.05)
        first = time.perf_counter() - start
        stored = len(srv.writes.get("bench_en_vivo", {}))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    return {"rows": rows, "first_record_s": first, "stored_then": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="rows of the resume case (default 20000)")
    parser.add_argument("--log-rows", type=int, default=100000, help="rows of the first-record case (default 100000)")
    args = parser.parse_args()
    from tests.builders import build_nli_model
    from zs_ray.output import ROWS_PER_FILE

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_nli_model(tmp / "model", entailment_index=2))
        (tmp / "r").mkdir()
        resume = resume_case(tmp / "r", model, args.rows)
        print(resume, flush=True)
        (tmp / "l").mkdir()
        logged = first_record_case(tmp / "l", model, args.log_rows)
        print(logged, flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""## Faults ({stamp})

{machine(os.cpu_count() or 1)}
- Tiny NLI model (tests/builders.py), MLSum-shaped summaries, local Ray on this machine, one CPU model
  actor; output files of at least {ROWS_PER_FILE} rows (what a file and its checkpoint commit together).

| | figure |
| --- | --- |
| resume: rows | {resume['rows']} |
| driver SIGKILLed with committed | {resume['committed_at_kill']} rows |
| classified by the first run before the kill | {resume['classified_before_kill']} rows |
| classified by the re-run | {resume['classified_by_rerun']} rows ({resume['rerun_s']:.1f} s) |
| **computed twice** | **{resume['computed_twice']} rows** (classified before the kill, not committed) |
| logging while predicting: rows | {logged['rows']} |
| **start of the command to the first record stored** | **{logged['first_record_s']:.1f} s** ({logged['stored_then']} records in that first chunk) |
"""
    write_section(RESULTS, BEGIN, END, body, "zs-ray fault benchmarks")


if __name__ == "__main__":
    main()
