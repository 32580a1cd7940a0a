"""A student trained by ``zs-ray train`` against the zero-shot teacher: texts/s and macro-F1, same machine.

**Speed** (same texts, same process, same threads): the teacher is an NLI model of the SELECTRA-medium shape
(ELECTRA, 12 layers, hidden 384, 6 heads, FFN 1536, a real cased WordPiece tokenizer; random weights, as in
``bench_cpu.py``) scoring the 6 tutorial labels with the template: 6 (text, hypothesis) pairs per text. The
student is the same encoder with a 6-class head, what ``zs-ray train --base-model <that NLI model>`` writes:
one pass per text. Both run in zs-ray's engine (``ZeroShotClassifier``: the NLI path and the supervised
classifier path that ``annotate --model STUDENT`` runs), in fp32 and in bf16 (the fastest mode on this CPU,
``results-engine.md``). Texts: MLSum-like summaries (``tests.builders.mlsum_rows``). Each runner is warmed
up, then the runners take turns for ``--repeats`` rounds; the best round counts.

**Quality** (a synthetic corpus whose topics are learnable from its words, ``tests.builders.write_pulled``):
the teacher is a tiny random NLI model (the tests' ``build_nli_model``) scoring the 5 topics; its
predictions and the true topics as human labels make a `zs-ray pull` file: records 0..S-1 are the labelled
round-1 sample (the test set), S..L-1 other human labels, the rest unlabelled. ``zs_ray.train.train`` (the
command's code, on a local Ray) fine-tunes a tiny ELECTRA base (hidden 64) on it and scores student and
teacher on the same test records. A random-weight teacher is near chance by construction, so the
comparison says that the student learns what the labels hold, not how a real zero-shot model does.

    python benchmarks/bench_student.py            # both parts (~5 min on 2 cores); writes results-student.md
    python benchmarks/bench_student.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
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

from bench_engine import LABELS, TEMPLATE, cpu_model  # noqa: E402  (the tutorial's labels; machine facts)

RESULTS = ROOT / "benchmarks" / "results-student.md"
MARKERS = ("<!-- bench_student:begin -->", "<!-- bench_student:end -->")


def build_speed_models(tmp: Path) -> tuple[str, dict[str, str]]:
    """The SELECTRA-medium-shape NLI teacher and two students with a 6-class head: the same encoder (what
    ``zs-ray train --base-model <the NLI model>`` writes) and a 6-layer one of the same width (its first 6
    layers: the depth of the small multilingual encoders a user may name instead, e.g. MiniLM-L6-H384)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tests.builders import build_nli_model

    teacher = build_nli_model(tmp / "teacher", layers=12, hidden=384, heads=6, ffn=1536, max_length=512,
                              initializer_range=0.1, seed=0)
    students = {}
    for name, layers in (("student", 12), ("student-6L", 6)):
        config = AutoConfig.from_pretrained(str(teacher), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                                            label2id={x: i for i, x in enumerate(LABELS)}, num_hidden_layers=layers)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(teacher), config=config,
                                                                   ignore_mismatched_sizes=True)
        model.save_pretrained(str(tmp / name))
        AutoTokenizer.from_pretrained(str(teacher)).save_pretrained(str(tmp / name))
        students[name] = str(tmp / name)
    return str(teacher), students


def speed(tmp: Path, n_texts: int, repeats: int, modes: list[str]) -> dict:
    import torch

    from tests.builders import mlsum_rows
    from zs_ray import ZeroShotClassifier

    torch.set_num_threads(2)
    teacher, students = build_speed_models(tmp)
    texts = [r["summary"] for r in mlsum_rows(n_texts, seed=11)]
    runners = {}
    for mode in modes:
        runners[f"teacher {mode}"] = ZeroShotClassifier(teacher, LABELS, TEMPLATE, precision=mode)
        for name, path in students.items():
            runners[f"{name} {mode}"] = ZeroShotClassifier(path, precision=mode)
    for run in runners.values():
        run(texts[:8])  # warm-up
    best = {name: float("inf") for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return {"texts": len(texts), "repeats": repeats, "seconds": best,
            "texts_per_s": {name: len(texts) / s for name, s in best.items()}}


def quality(tmp: Path, n: int, sample: int, labelled: int, epochs: int) -> dict:
    from tests.builders import TOPICS, build_nli_model, write_pulled
    from zs_ray import ZeroShotClassifier
    from zs_ray.train import train
    from zs_ray.train.config import TrainConfig

    teacher = ZeroShotClassifier(str(build_nli_model(tmp / "tiny-teacher")), list(TOPICS), TEMPLATE, precision="fp32")
    write_pulled(tmp / "pulled.parquet", n, labelled=labelled, sample=sample, teacher=teacher)
    base = build_nli_model(tmp / "tiny-base", hidden=64, ffn=128, initializer_range=0.02)
    start = time.perf_counter()
    summary = train(TrainConfig(input=str(tmp / "pulled.parquet"), base_model=str(base), output=str(tmp / "student-q"),
                                epochs=epochs, learning_rate=2e-3, bootstrap=1000))
    seconds = time.perf_counter() - start
    pick = ("records", "accuracy", "accuracy_ci95", "macro_f1", "macro_f1_ci95")
    return {"rows": summary.data.counts(), "train_s": seconds, "epochs": epochs,
            "student": {k: summary.student[k] for k in pick}, "teacher": {k: summary.teacher[k] for k in pick},
            "best_epoch": summary.run["best"].get("epoch")}


def report(facts: dict, sp: dict, q: dict) -> str:
    tps = sp["texts_per_s"]
    modes = sorted({name.split()[1] for name in tps}, key=["fp32", "bf16", "int8"].index)
    rows = ["| runner | layers | passes per text | best time (s) | texts/s | student / teacher |",
            "|---|---|---|---|---|---|"]
    for mode in modes:
        for who, layers in (("teacher", 12), ("student", 12), ("student-6L", 6)):
            name = f"{who} {mode}"
            ratio = f"**{tps[name] / tps[f'teacher {mode}']:.2f}x**" if who != "teacher" else "1x"
            rows.append(f"| {name} | {layers} | {len(LABELS) if who == 'teacher' else 1} | {sp['seconds'][name]:.2f} | "
                        f"{tps[name]:.1f} | {ratio} |")
    fastest_t = max(tps[f"teacher {m}"] for m in modes)
    ratio = max(tps[f"student {m}"] for m in modes) / fastest_t
    ratio6 = max(tps[f"student-6L {m}"] for m in modes) / fastest_t

    def ci(m, key):
        lo, hi = m[f"{key}_ci95"]
        return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    c = q["rows"]
    met = q["student"]["macro_f1"] >= q["teacher"]["macro_f1"]
    lines = [
        f"Run {facts['date']}: {facts['cpu']} ({', '.join(facts['flags'])}), {facts['cores']} cores, torch "
        f"{facts['torch']}, transformers {facts['transformers']}, 2 torch threads; load average {facts['load_before']} "
        f"before, {facts['load_after']} after"
        + (" (other processes were running on this shared machine)." if busy(facts) else " (machine quiet)."),
        "",
        f"**Speed**: {sp['texts']} MLSum-like summaries, best of {sp['repeats']} round-robin rounds; teacher = "
        f"SELECTRA-medium-shape NLI model x {len(LABELS)} labels; students = the same encoder with a "
        f"{len(LABELS)}-class head, and its first 6 layers with that head.",
        "",
        *rows,
        "",
        f"Fastest student vs fastest teacher: **{ratio:.2f}x** texts/s with the teacher's own encoder, "
        f"**{ratio6:.2f}x** with a 6-layer encoder of its width.",
        "",
        f"**Quality**: synthetic corpus of {sum(v['rows'] for v in c.values())} labelled records "
        f"(train {c['train']['rows']}, validation {c['validation']['rows']}, test = the labelled round-1 sample, "
        f"{c['test']['rows']}); student = tiny ELECTRA (2 x 64) trained by `zs-ray train` for {q['epochs']} epochs "
        f"on a local Ray ({q['train_s']:.0f} s, best epoch {q['best_epoch']:g}); teacher = tiny random NLI model.",
        "",
        "| on the test set | accuracy [95% CI] | macro-F1 [95% CI] |",
        "|---|---|---|",
        f"| student | {ci(q['student'], 'accuracy')} | {ci(q['student'], 'macro_f1')} |",
        f"| zero-shot teacher (random weights) | {ci(q['teacher'], 'accuracy')} | {ci(q['teacher'], 'macro_f1')} |",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| student >= 6x the teacher's texts/s | {ratio:.2f}x (same encoder), {ratio6:.2f}x (6 layers); fastest "
        f"vs fastest | {'yes' if ratio >= 6 else 'no'} (same encoder), {'yes' if ratio6 >= 6 else 'no'} (6 layers) |",
        f"| student macro-F1 >= teacher's | {q['student']['macro_f1']:.3f} vs {q['teacher']['macro_f1']:.3f} | "
        f"{'yes' if met else 'no'} (against a random teacher: see below) |",
    ]
    return "\n".join(lines)


def busy(facts: dict) -> bool:
    """Whether something else ran: a 1-minute load average above 1.5 before or after (2 cores)."""
    return any(float(str(facts[k]).split()[0]) > 1.5 for k in ("load_before", "load_after"))


def write_results(text: str) -> None:
    begin, end = MARKERS
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if begin in old and end in old:
        new = old[:old.index(begin) + len(begin)] + "\n" + text + "\n" + old[old.index(end):]
    else:
        new = (old or "# Student vs zero-shot teacher\n\n") + f"{begin}\n{text}\n{end}\n"
    RESULTS.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run; prints, writes nothing")
    parser.add_argument("--texts", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args(argv)
    import platform

    import torch
    import transformers

    from bench_cpu import isa_facts, loadavg

    facts = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
             "flags": isa_facts()["flags"], "cores": os.cpu_count(), "torch": torch.__version__,
             "transformers": transformers.__version__, "python": platform.python_version(), "load_before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-student-") as tmp:
        tmp = Path(tmp)
        modes = ["fp32", "bf16"] if isa_facts()["native_bf16"] else ["fp32"]
        sp = speed(tmp, 12 if args.quick else args.texts, 1 if args.quick else args.repeats, modes)
        print(json.dumps(sp["texts_per_s"], indent=1), flush=True)
        q = quality(tmp, 300 if args.quick else 600, 60 if args.quick else 150, 240 if args.quick else 480,
                    3 if args.quick else 6)
    facts["load_after"] = loadavg()
    text = report(facts, sp, q)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "speed": sp, "quality": q}, indent=2))
    if not args.quick:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
