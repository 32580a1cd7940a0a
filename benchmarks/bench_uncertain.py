"""The round-2 uncertainty queue on an output of all of MLSum's size: streamed top-k beside collect-and-sort.

An output of ROWS rows (default 1.26M, all of MLSum; six labels, softmax scores from random logits, 4096 rows
a file as the job writes them) is made once; then, side by side in one run, each in a fresh process (so each
peak is its own):

* **streamed** (zs-ray): ``workflow.uncertain.make_uncertain_rule``, one pass over the Parquet batches, at
  most N candidates per label;
* **collect-and-sort**: every row's ``id``, ``scores`` and ``prediction`` read into the driver at once, the
  same uncertainty (``output.uncertainty``) and seeded tie key for every row, one sort per label.

Both must choose the same ids. Reported: wall seconds and the process's peak RSS (``ru_maxrss``).

    python benchmarks/bench_uncertain.py [rows] [n]      # writes benchmarks/results-uncertain.md
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

LABELS = ["política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"]
ROWS_PER_FILE = 4096


def make(path: str, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zs_ray.output import MANIFEST

    rng = np.random.default_rng(0)
    os.makedirs(path)
    for f, lo in enumerate(range(0, rows, ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - lo)
        logits = rng.normal(0, 2, (n, len(LABELS)))
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        order = np.argsort(-p, axis=1)
        scores = np.take_along_axis(p, order, 1)
        offsets = pa.array(np.arange(0, n * len(LABELS) + 1, len(LABELS), dtype=np.int32))
        labels = pa.ListArray.from_arrays(offsets, pa.array(np.array(LABELS, dtype=object)[order].ravel()))
        table = pa.table({"summary": pa.array(["t"] * n), "id": [f"es-test-{i:07d}" for i in range(lo, lo + n)],
                          "labels": labels, "scores": pa.ListArray.from_arrays(offsets, pa.array(scores.ravel())),
                          "prediction": labels.flatten().take(pa.array(np.arange(0, n * len(LABELS), len(LABELS)))),
                          "score": pa.array(scores[:, 0])})
        pq.write_table(table, os.path.join(path, f"part-{f:05d}.parquet"))
    with open(os.path.join(path, MANIFEST), "w") as fh:
        json.dump({"text_field": "summary", "multi_label": False, "candidate_labels": LABELS, "rows": rows,
                   "skipped": 0}, fh)


def streamed(path: str, n: int) -> list:
    from zs_ray.output import open_output
    from zs_ray.workflow.uncertain import make_uncertain_rule

    return sorted(make_uncertain_rule(open_output(path), n, "margin", 0, "round-2").ids)


def collect_and_sort(path: str, n: int) -> list:
    import numpy as np

    from zs_ray.output import open_output, uncertainty
    from zs_ray.workflow.sample import sample_keys, share

    table = open_output(path).dataset.to_table(columns=["id", "scores", "prediction"])
    ids = np.array(table.column("id").to_pylist(), dtype=object)
    preds = np.array(table.column("prediction").to_pylist(), dtype=object)
    margins = np.array(uncertainty(table.column("scores").to_pylist(), False)[0])
    u = sample_keys(0, ids)
    sizes = {lab: int((preds == lab).sum()) for lab in set(preds)}
    quota = share(n, sizes)
    chosen = []
    for lab, q in quota.items():
        mine = np.nonzero(preds == lab)[0]
        chosen += list(ids[mine[np.lexsort((u[mine], margins[mine]))[:q]]])
    return sorted(chosen)


def child(variant: str, path: str, n: int) -> None:
    t0 = time.perf_counter()
    ids = (streamed if variant == "streamed" else collect_and_sort)(path, n)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mib": peak, "ids": ids}))


def machine() -> str:
    model, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx"))]
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs ({' '.join(sorted(set(flags)))})"


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_260_000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out")
        t0 = time.perf_counter()
        make(path, rows)
        print(f"made {rows} rows in {time.perf_counter() - t0:.0f}s", flush=True)
        results = {}
        for variant in ("streamed", "collect-and-sort"):
            run = subprocess.run([sys.executable, __file__, "--child", variant, path, str(n)], check=True,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
            results[variant] = json.loads(run.stdout.strip().splitlines()[-1])
            print(variant, {k: round(v, 1) for k, v in results[variant].items() if k != "ids"}, flush=True)
    same = results["streamed"]["ids"] == results["collect-and-sort"]["ids"]
    lines = [
        "# The round-2 uncertainty queue at all of MLSum's size",
        "",
        f"`python benchmarks/bench_uncertain.py {rows} {n}`, {time.strftime('%Y-%m-%d')}, on {machine()}. "
        f"An output of {rows:,} rows (six labels, {ROWS_PER_FILE} rows a file), `--uncertain {n}` by margin; "
        "each variant in its own process, side by side in one run. Same ids chosen: "
        f"{'yes' if same else 'NO'}. Load average at the end: {os.getloadavg()[0]:.1f} (other work shares this "
        "machine; it falls on both variants alike). Peak RSS includes the imports (pyarrow, numpy, zs_ray).",
        "",
        "| variant | wall s | peak RSS MiB |",
        "| --- | --- | --- |",
        *[f"| {v} | {r['wall_s']:.1f} | {r['peak_mib']:.0f} |" for v, r in results.items()],
        "",
        "streamed = `workflow.uncertain.make_uncertain_rule` (batches of 65,536 rows, at most N candidates per "
        "label); collect-and-sort = every row's id, scores and prediction in the driver, one sort per label.",
    ]
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results-uncertain.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
