"""CPU speed on both kinds of x86 CPU: zs-ray against the seed pipeline, ONNX Runtime and torch int8.

One run measures this machine natively and, in a second process, imitating an AVX2-only CPU
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2``: torch's own
kernels, oneDNN and fbgemm capped at AVX2). ONNX Runtime (1.32) has no runtime switch for its ISA (MLAS
picks its kernels from cpuid; its only ISA setting is a build option), so in the imitated run ONNX
Runtime still runs its AVX-512 / VNNI kernels: its imitated figures flatter it.

Models (``--shape``): the SELECTRA-medium shape (ELECTRA: 12 layers, hidden 384, 6 heads, FFN 1536, max 512
positions; a real cased WordPiece tokenizer) and the mDeBERTa-v3-base shape (DeBERTa-v2: 12 layers, hidden 768,
12 heads, FFN 3072, relative attention p2c/c2p over 256 log buckets, shared attention keys; a real Unigram
tokenizer), both from tests/builders.py, random weights with initializer range 0.1 (SELECTRA shape) and 0.07
(mDeBERTa shape) so that their scores are discriminative (fp32's top-1 margin is >= 0.05 on about half the
texts; at 0.02 every score is near 1/6 and top-1 agreement measures ties). A wider random network turns
chaotic sooner: at 0.1 the mDeBERTa shape's scores move with any rounding (transformers' own bf16 pipeline
agrees with its fp32 on 53% of texts), at 0.07 they do not (bf16 90%, 100% where fp32's margin is clear). Data: MLSum-like summaries and full articles (truncated at 512 tokens); 6
labels, template "Esta noticia habla de {}.".

Runners, all in one process per ISA, 2 torch / ORT intra-op threads:
  pipeline seed     transformers zero-shot pipeline, batch_size=8, fp32 (the reference for speed)
  pipeline tuned    the same pipeline, batch_size=64, bf16 where bf16 is native here, else fp32
  ORT fp32 / int8   ONNX Runtime CPU (graph optimizations ORT_ENABLE_ALL) on the model exported by torch's
                    TorchScript exporter (opset 17); int8: onnxruntime.quantization.quantize_dynamic
                    (int8 weights per channel, uint8 activations)
  torch int8        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, qint8), the plain model
  zs-ray fp32 / bf16 / int8 / onnx-int8   ZeroShotClassifier(precision=...); bf16 only where it is native;
                    onnx-int8 is zs-ray's ONNX Runtime backend (zs_ray/engine/onnx.py: the [CLS]-only
                    last layer, exported and quantized once into a cache under the run's temp dir)
The anchors (ORT, torch int8) get zs-ray's tokenization and the same length-sorted, token-budget batching.
"zs-ray auto" is the mode ``auto`` resolves to here (measured once, under that mode's row); "zs-ray
fastest" is the fastest zs-ray mode measured here.

Each runner is warmed up, then the runners take turns (round-robin) for ``--repeats`` rounds; medians
count. Agreement and max |diff| of every runner are against zs-ray fp32 (zs-ray fp32's against the seed
pipeline); "clear" = texts where fp32's top-1 margin is >= 0.05.

    python benchmarks/bench_cpu.py                # both shapes, both ISAs (~40 min on 2 cores); writes results-engine.md
    python benchmarks/bench_cpu.py --shape mdeberta --isa native   # one shape, this CPU as it is
    python benchmarks/bench_cpu.py --quick        # smoke run, prints only
    python benchmarks/bench_cpu.py --isa avx2 --json out.json   # one ISA (what the parent runs per ISA)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

import numpy as np  # noqa: E402

LABELS = ["política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"]
TEMPLATE = "Esta noticia habla de {}."
RESULTS = ROOT / "benchmarks" / "results-engine.md"
SHAPES = {  # name: (results-file markers, model description, default summaries, default articles)
    "selectra": (("<!-- bench_cpu:begin -->", "<!-- bench_cpu:end -->"),
                 "SELECTRA-medium shape (ELECTRA, 12 x 384, 6 heads, FFN 1536), real WordPiece tokenizer", 72, 16),
    "mdeberta": (("<!-- bench_cpu_mdeberta:begin -->", "<!-- bench_cpu_mdeberta:end -->"),
                 "mDeBERTa-v3-base shape (DeBERTa-v2, 12 x 768, 12 heads, FFN 3072, p2c/c2p, 256 position buckets), "
                 "real Unigram tokenizer", 36, 8),
}
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
MARGIN = 0.05


# --------------------------------------------------------------------------- machine facts

def isa_facts() -> dict:
    import torch

    from zs_ray.engine import cpu_capability, cpu_flags, cpu_int8_vnni, cpu_runs_native_bf16

    flags = cpu_flags()
    return {"flags": [f for f in FLAGS if f in flags], "torch_capability": cpu_capability(),
            "env": {k: os.environ[k] for k in AVX2_ENV if k in os.environ},
            "native_bf16": cpu_runs_native_bf16(), "int8_vnni": cpu_int8_vnni(), "torch": torch.__version__}


def auto_choice(model: str) -> dict:
    """What ``auto`` measures and picks here (zs_ray.engine.calibrate; its store is this ISA's cache dir)."""
    from zs_ray import ZeroShotClassifier
    from zs_ray.engine.calibrate import cache_file

    start = time.perf_counter()
    chosen = ZeroShotClassifier(model, LABELS, TEMPLATE, precision="auto").precision
    seconds = time.perf_counter() - start
    entries = json.loads(cache_file().read_text()).values() if cache_file().exists() else []
    rates = next((e["pairs_per_s"] for e in entries if e["choice"] == chosen), {})
    return {"auto": chosen, "auto_rates": rates, "auto_s": seconds}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- model, data, ONNX

def build(tmp: Path, shape: str) -> dict:
    """The model directory and its ONNX exports (ISA-independent; made once by the parent)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tests.builders import build_arch_nli_model, build_nli_model

    if shape == "mdeberta":
        model = build_arch_nli_model(tmp / "mdeberta-base-shape", "deberta-v2", layers=12, hidden=768, heads=12,
                                     ffn=3072, max_length=512, initializer_range=0.07, position_buckets=256)
    else:
        model = build_nli_model(tmp / "selectra-medium-shape", layers=12, hidden=384, heads=6, ffn=1536,
                                max_length=512, initializer_range=0.1, seed=0)
    fp32, int8 = tmp / "model.onnx", tmp / "model-int8.onnx"
    hf = AutoModelForSequenceClassification.from_pretrained(str(model), attn_implementation="eager").eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(hf, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32), dynamo=False,
                      opset_version=17, input_names=names, output_names=["logits"],
                      dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logits": {0: "batch"}})
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return {"model": str(model), "onnx_fp32": str(fp32), "onnx_int8": str(int8)}


def datasets(n_texts: int, n_articles: int) -> dict:
    from tests.builders import mlsum_rows

    summaries = [r["summary"] for r in mlsum_rows(n_texts, seed=11)]
    bodies = [r["text"] for r in mlsum_rows(n_articles * 5, seed=12)]
    return {"summaries": summaries, "articles": [" ".join(bodies[5 * i:5 * i + 5]) for i in range(n_articles)]}


# --------------------------------------------------------------------------- runners

def make_runners(paths: dict, threads: int, facts: dict) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, pipeline

    from zs_ray import ZeroShotClassifier

    model = paths["model"]
    runners = {}
    seed = pipeline("zero-shot-classification", model=model, tokenizer=model, device="cpu")
    runners["pipeline seed (bs 8, fp32)"] = lambda t: seed(t, candidate_labels=LABELS, hypothesis_template=TEMPLATE,
                                                           batch_size=8)
    tuned_dtype = "bf16" if facts["native_bf16"] else "fp32"
    tuned = pipeline("zero-shot-classification", model=model, tokenizer=model, device="cpu",
                     dtype=torch.bfloat16 if facts["native_bf16"] else torch.float32)
    runners[f"pipeline tuned (bs 64, {tuned_dtype})"] = lambda t: tuned(
        t, candidate_labels=LABELS, hypothesis_template=TEMPLATE, batch_size=64)

    def anchor(replacement):
        clf = ZeroShotClassifier(model, LABELS, TEMPLATE, precision="fp32")
        clf.scorer.model = replacement(clf.scorer.model.config)
        return clf

    from zs_ray.engine.onnx import OrtNliModel  # the ONNX Runtime session zs-ray's onnx-int8 runs in

    runners["ORT fp32"] = anchor(lambda cfg: OrtNliModel(paths["onnx_fp32"], cfg, threads))
    runners["ORT int8"] = anchor(lambda cfg: OrtNliModel(paths["onnx_int8"], cfg, threads))

    def torch_int8(cfg):
        plain = AutoModelForSequenceClassification.from_pretrained(model).eval()
        return torch.ao.quantization.quantize_dynamic(plain, {torch.nn.Linear}, dtype=torch.qint8)

    runners["torch int8 (quantize_dynamic)"] = anchor(torch_int8)
    from zs_ray.engine.onnx import onnx_available

    for mode in ("fp32", "bf16", "int8", "onnx-int8"):
        if mode == "bf16" and not facts["native_bf16"]:
            continue  # emulated bf16 runs at a tenth of fp32's speed: not a candidate here
        if mode == "onnx-int8" and not onnx_available():
            continue
        runners[f"zs-ray {mode}"] = ZeroShotClassifier(model, LABELS, TEMPLATE, precision=mode)
    return runners


def by_label(result: dict) -> dict:
    return dict(zip(result["labels"], result["scores"]))


def quality(ref: list, out: list) -> dict:
    same = np.array([a["labels"][0] == b["labels"][0] for a, b in zip(ref, out)])
    margins = np.array([r["scores"][0] - r["scores"][1] for r in ref])
    clear = margins >= MARGIN
    diff = max(abs(by_label(a)[k] - v) for a, b in zip(ref, out) for k, v in by_label(b).items())
    return {"agree": float(same.mean()), "agree_clear": float(same[clear].mean()) if clear.any() else None,
            "clear_share": float(clear.mean()), "max_diff": float(diff), "n": int(len(same))}


def run_isa(paths: dict, args) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    facts = {**isa_facts(), **auto_choice(paths["model"])}
    load = [loadavg()]
    runners = make_runners(paths, args.threads, facts)
    data = datasets(args.texts, args.articles)
    out = {"isa": facts, "data": {}, "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["model"])
    for name, texts in data.items():
        hyps = [TEMPLATE.format(label) for label in LABELS]
        enc = tok([t for t in texts for _ in hyps], hyps * len(texts), truncation="only_first", max_length=512)
        tokens = float(np.mean([len(x) for x in enc["input_ids"]]))
        for run in runners.values():
            run(texts[:4])
        times = {k: [] for k in runners}
        outputs = {}
        for _ in range(args.repeats):
            for k, run in runners.items():
                start = time.perf_counter()
                outputs[k] = run(texts)
                times[k].append(time.perf_counter() - start)
            load.append(loadavg())
        seed = next(k for k in runners if k.startswith("pipeline seed"))
        rows = {}
        for k in runners:
            ref = outputs[seed] if k == "zs-ray fp32" else outputs["zs-ray fp32"]
            rows[k] = {"median_s": statistics.median(times[k]), "times": times[k], **quality(ref, outputs[k])}
        out["data"][name] = {"texts": len(texts), "tokens_per_pair": tokens, "rows": rows}
        print(f"[{facts['torch_capability']}] {name}: " + ", ".join(
            f"{k} {len(texts) / r['median_s']:.1f}/s" for k, r in rows.items()), flush=True)
    out["load"] = load
    return out


# --------------------------------------------------------------------------- report

def fmt_isa(res: dict, imitated: bool) -> str:
    facts = res["isa"]
    kind = ("imitated AVX2-only (torch, oneDNN, fbgemm capped at AVX2: " + " ".join(f"{k}={v}" for k, v in facts["env"].items())
            + "; ONNX Runtime not capped: it has no such setting)") if imitated else "native (real)"
    lines = [f"### {kind}", "",
             f"- CPU flags: {', '.join(facts['flags']) or 'none of ' + ', '.join(FLAGS)}; torch capability: "
             f"{facts['torch_capability']}; native bf16: {facts['native_bf16']}; fbgemm VNNI: {facts['int8_vnni']}; "
             f"`auto` measured here and chose **{facts['auto']}** (probe pairs/s: "
             + ", ".join(f"{m} {r:.0f}" for m, r in facts.get("auto_rates", {}).items())
             + f"; first load with the measurement {facts.get('auto_s', 0):.1f} s)",
             f"- started {res['started']}; load average (1/5/15 min) at start and after each round: "
             f"{' | '.join(res['load'])}", ""]
    data = res["data"]
    names = list(data)
    header = "| runner | " + " | ".join(f"{n} texts/s | {n} vs seed" for n in names) + \
             " | top-1 agreement (all) | agreement where fp32 margin >= 0.05 | max abs diff |"
    lines += [header, "|---|" + "---:|---:|" * len(names) + "---:|---:|---:|"]
    zs_modes = [k for k in data[names[0]]["rows"] if k.startswith("zs-ray ")]
    fastest = min(zs_modes, key=lambda k: sum(data[n]["rows"][k]["median_s"] for n in names))
    for k in data[names[0]]["rows"]:
        label = k
        if k == f"zs-ray {facts['auto']}":
            label += " = auto"
        if k == fastest:
            label += " = fastest"
        cells = []
        for n in names:
            rows = data[n]["rows"]
            seed = next(r for r in rows if r.startswith("pipeline seed"))
            r = rows[k]
            cells.append(f"{data[n]['texts'] / r['median_s']:.2f} | {rows[seed]['median_s'] / r['median_s']:.2f}x")
        q = [data[n]["rows"][k] for n in names]
        n_all = sum(x["n"] for x in q)
        agree = sum(x["agree"] * x["n"] for x in q) / n_all
        clear_n = sum(x["clear_share"] * x["n"] for x in q)
        clear = (sum((x["agree_clear"] or 0) * x["clear_share"] * x["n"] for x in q) / clear_n) if clear_n else None
        ref = "vs seed" if k == "zs-ray fp32" else ("reference" if k.startswith("pipeline seed") else "")
        if k.startswith("pipeline seed"):
            lines.append(f"| {label} | " + " | ".join(cells) + " | - | - | - |")
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {agree:.1%} {ref} | "
                     + (f"{clear:.1%} ({clear_n / n_all:.0%} of texts)" if clear is not None else "n/a")
                     + f" | {max(x['max_diff'] for x in q):.2e} |")
    lines.append("")
    lines.append("Texts: " + "; ".join(f"{n} {data[n]['texts']} x 6 labels, {data[n]['tokens_per_pair']:.0f} tokens "
                                        "per pair" for n in names) + ". Agreement/diff vs zs-ray fp32 (zs-ray fp32: "
                 "vs the seed pipeline), both data sets pooled.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["both", *SHAPES], default="both")
    p.add_argument("--texts", type=int, help="summaries (default: 72 SELECTRA shape, 36 mDeBERTa shape)")
    p.add_argument("--articles", type=int, help="full articles (default: 16 SELECTRA shape, 8 mDeBERTa shape)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds; medians count (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--isa", choices=["both", "native", "avx2"], default="both")
    p.add_argument("--paths", help="(child) JSON of the model and ONNX paths")
    p.add_argument("--json", help="(child) where to write this ISA's results")
    p.add_argument("--quick", action="store_true", help="smoke run: 12 texts, 3 articles, 1 round, prints only")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.texts, args.articles, args.repeats, args.no_write = 12, 3, 1, True

    if args.paths:  # a child: one ISA
        result = run_isa(json.loads(Path(args.paths).read_text()), args)
        Path(args.json).write_text(json.dumps(result))
        return 0
    for shape in (list(SHAPES) if args.shape == "both" else [args.shape]):
        run_shape(shape, argparse.Namespace(**vars(args)))
    return 0


def run_shape(shape: str, args) -> None:
    (begin, end), description, texts, articles = SHAPES[shape]
    args.texts, args.articles = args.texts or texts, args.articles or articles
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = build(tmp, shape)
        (tmp / "paths.json").write_text(json.dumps(paths))
        results = {}
        for isa in (["native", "avx2"] if args.isa == "both" else [args.isa]):
            env = {**os.environ, **(AVX2_ENV if isa == "avx2" else {}), "ZS_RAY_CACHE": str(tmp / f"cache-{isa}")}
            out = tmp / f"{isa}.json"
            cmd = [sys.executable, __file__, "--paths", str(tmp / "paths.json"), "--json", str(out),
                   "--texts", str(args.texts), "--articles", str(args.articles), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            subprocess.run(cmd, env=env, check=True)
            results[isa] = json.loads(out.read_text())
    minutes = (time.perf_counter() - started) / 60
    import torch
    import transformers

    from zs_ray.engine.calibrate import _cpu_model

    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "n/a"
    body = "\n".join([
        f"## CPU speed, {description.split(' (')[0]}: zs-ray vs seed pipeline, ONNX Runtime, torch int8 "
        "(generated by benchmarks/bench_cpu.py)",
        "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} ({minutes:.0f} min); reproduce with "
        f"`python benchmarks/bench_cpu.py --shape {shape} --isa {args.isa} --texts {args.texts} --articles "
        f"{args.articles} --repeats {args.repeats} --threads {args.threads}`.",
        "",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores visible; {args.threads} threads per runner; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"onnxruntime {ort_version}",
        f"- Model: {description}, random weights with initializer range {0.07 if shape == 'mdeberta' else 0.1} "
        "(discriminative scores); 6 labels, "
        "template \"Esta noticia habla de {}.\"",
        f"- Wall-clock per call (tokenization included), median of {args.repeats} interleaved rounds after a "
        "warm-up; the load average shows what else ran on the machine meanwhile.",
        "",
        *[fmt_isa(results[isa], isa == "avx2") + "\n" for isa in results],
    ])
    print(body)
    if not args.no_write:
        from bench_engine import write_section

        write_section(RESULTS, begin, end, body, "zs-ray engine benchmarks")


if __name__ == "__main__":
    sys.exit(main())
