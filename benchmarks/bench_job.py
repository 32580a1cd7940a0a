"""The Ray job (read -> tokenize stage -> model stage -> write) against the engine alone, same texts.

For the tiny test model and the SELECTRA-medium shape (random weights; tests/builders.py), an
MLSum-shaped Parquet dataset is written (tests/builders.write_mlsum), then
  * the engine alone: ``ZeroShotClassifier(precision=...)`` over the split's non-empty summaries,
    timed warm (model loaded) and cold (load included);
  * the job: ``zs_ray.annotate(AnnotateConfig(...))`` on a local Ray (started once, before timing),
    whose own clock runs from planning the stages to the written output (actor start and model load
    included, Ray start excluded).
Both report articles/s; the ratio job/engine says what the Ray stages cost (or hide) on this machine.

It also times the tokenize stage alone (``zs_ray.stages.tokenize.TokenizeStage`` on Arrow blocks of 256 texts,
one thread): the articles/s one tokenizer CPU supplies to the model stage, with each text tokenized
once (zs-ray) and once per label (the pipeline's tokenizer call), on summaries and full articles. On
a GPU node that rate, against the GPU's, says how many tokenizer CPUs keep it fed.

    python benchmarks/bench_job.py                    # ~6 minutes on 2 cores; writes its section of results-engine.md
    python benchmarks/bench_job.py --quick            # smoke run, prints only
    python benchmarks/bench_job.py --tiny-rows 20000 --medium-rows 1500 --precision auto
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
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

from bench_engine import LABELS, RESULTS, TEMPLATE, machine, write_section  # noqa: E402

BEGIN, END = "<!-- bench_job:begin -->", "<!-- bench_job:end -->"


def run_case(name: str, model: str, data: Path, rows: int, precision: str, threads: int, tmp: Path) -> dict:
    import pyarrow.parquet as pq
    import torch

    from zs_ray import AnnotateConfig, ZeroShotClassifier, annotate

    files = sorted((data / "es").glob("test-*.parquet"))
    texts = [t for f in files for t in pq.read_table(f).column("summary").to_pylist() if t is not None and t.strip()]
    torch.set_num_threads(threads)
    start = time.perf_counter()
    clf = ZeroShotClassifier(model, LABELS, TEMPLATE, precision=precision)
    clf(texts)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    clf(texts)
    warm = time.perf_counter() - start
    del clf

    config = AnnotateConfig(output=str(tmp / f"out-{name}"), dataset=str(data), config="es", split="test",
                            text_field="summary", model=model, labels=LABELS, hypothesis_template=TEMPLATE,
                            precision=precision, overwrite=True)
    summary = annotate(config)
    kept = summary.rows - summary.skipped
    assert kept == len(texts), (kept, len(texts))
    # The job once more on the first half of the split: the difference between the two runs is the
    # job's steady rate, without the fixed cost (actor start, model load, pipeline fill and drain).
    half = dataclasses.replace(config, split=f"test[0:{rows // 2}]", output=str(tmp / f"out-half-{name}"))
    first = annotate(half)
    steady = (kept - (first.rows - first.skipped)) / max(1e-9, summary.seconds - first.seconds)
    return {"name": name, "texts": len(texts), "engine_warm": len(texts) / warm, "engine_cold": len(texts) / cold,
            "job": summary.articles_per_s, "job_s": summary.seconds, "steady": steady,
            "fixed_s": summary.seconds - kept / steady, "workers": summary.workers.split(" of ")[0]}


def stage_rates(model: str, texts_per_set: int = 512, repeats: int = 3) -> list[dict]:
    """Articles/s of the tokenize stage on one thread: tokenize-once vs one tokenization per label."""
    import pyarrow as pa
    from bench_engine import datasets

    from zs_ray.stages.tokenize import TEXTS_PER_BATCH as TEXTS_PER_TOKENIZE_BATCH, TokenizeStage

    rows = []
    for name, texts in datasets(texts_per_set, texts_per_set).items():
        blocks = [pa.table({"text": texts[i:i + TEXTS_PER_TOKENIZE_BATCH]})
                  for i in range(0, len(texts), TEXTS_PER_TOKENIZE_BATCH)]
        rates = {}
        for how in ("once per text (zs-ray)", "once per label (pipeline's call)"):
            stage = TokenizeStage({None: {"model": model, "labels": LABELS, "hypothesis_template": TEMPLATE}}, "text")
            if how.startswith("once per label"):
                stage.encoders[None].template = None
            stage(blocks[0])  # warm-up; the first call also checks the joined pairs against the tokenizer's
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for block in blocks:
                    stage(block)
                best = min(best, time.perf_counter() - start)
            rates[how] = len(texts) / best
        rows.append({"data": name, "texts": len(texts), **rates})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny-rows", type=int, default=20000, help="rows for the tiny model (default 20000)")
    p.add_argument("--medium-rows", type=int, default=1500, help="rows for the SELECTRA-medium shape (default 1500)")
    p.add_argument("--precision", default="auto", help="engine and job precision (default auto)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the engine alone (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 300 / 60 rows, no results file")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.tiny_rows, args.medium_rows, args.no_write = 300, 60, True

    import ray
    from transformers.utils import logging as hf_logging

    from tests.builders import build_nli_model, selectra_medium_shape, write_mlsum
    from zs_ray.cluster import connect_ray

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("ray").setLevel(logging.WARNING)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = str(build_nli_model(tmp / "tiny", entailment_index=2))
        medium = str(selectra_medium_shape(tmp / "medium", max_length=512))
        stages = stage_rates(medium)
        for r in stages:
            print(r, flush=True)
        cluster = connect_ray(None)  # started before any clock runs
        for name, model, rows in (("tiny (2 layers, hidden 32)", tiny, args.tiny_rows),
                                  ("SELECTRA-medium shape", medium, args.medium_rows)):
            if rows <= 0:
                continue
            data = write_mlsum(tmp / f"data-{rows}", {"test": rows}, files=4, row_group_size=128, empty_every=50)
            cases.append(run_case(name, model, data, rows, args.precision, args.threads, tmp))
            c = cases[-1]
            print(f"{c['name']}: {c['texts']} texts; engine {c['engine_warm']:.1f}/s warm, "
                  f"{c['engine_cold']:.1f}/s cold; job {c['job']:.1f}/s, steady {c['steady']:.1f}/s ({c['workers']})", flush=True)
        ray.shutdown()

    lines = [
        "## Ray job vs engine alone (generated by benchmarks/bench_job.py)",
        "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; reproduce with "
        f"`python benchmarks/bench_job.py --tiny-rows {args.tiny_rows} --medium-rows {args.medium_rows} "
        f"--precision {args.precision}`.",
        "",
        machine(args.threads),
        f"- Local Ray with {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs; MLSum-shaped Parquet "
        "(4 files, 2% empty summaries, which the job skips); text = summary; precision "
        f"`{args.precision}`.",
        "- Engine: `ZeroShotClassifier` in the driver (warm: model loaded; cold: load included). Job: "
        "`annotate()`'s own clock (stages planned -> output written; actor start and model load included).",
        "",
        "- Job steady: (texts of the full run - texts of a run on the first half) / (difference of their "
        "times): the job's rate once started; fixed = what the full run took beyond that rate.",
        "",
        "| model | texts | engine warm texts/s | engine cold texts/s | job texts/s | job steady texts/s | "
        "job fixed s | job / engine warm | job steady / engine warm | model workers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        lines.append(f"| {c['name']} | {c['texts']} | {c['engine_warm']:.1f} | {c['engine_cold']:.1f} | {c['job']:.1f} | "
                     f"{c['steady']:.1f} | {c['fixed_s']:.1f} | {c['job'] / c['engine_warm']:.2f} | "
                     f"{c['steady'] / c['engine_warm']:.2f} | {c['workers']} |")
    lines += [
        "",
        "### Tokenize stage alone (one thread, Arrow blocks of 256 texts)",
        "",
        "What one tokenizer CPU supplies to the model stage (the SELECTRA tokenizer's vocabulary shape; "
        "6 labels). Full articles: ~950 tokens each before truncation to 512.",
        "",
        "| data | texts | tokenized once per text (zs-ray), articles/s | once per label (pipeline's call), "
        "articles/s | gain |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in stages:
        once, per_label = r["once per text (zs-ray)"], r["once per label (pipeline's call)"]
        lines.append(f"| {r['data']} | {r['texts']} | {once:.0f} | {per_label:.0f} | {once / per_label:.1f}x |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(RESULTS, BEGIN, END, body, "zs-ray engine benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
