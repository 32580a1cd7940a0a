"""Team agreement and consensus at 100,000 records x 5 annotators, beside crowd-kit on the same data.

A planted team: TRUE labels drawn over 6 labels (unequal class sizes), 4 careful annotators (90% right, errors
uniform over the other labels) and 1 careless (a uniform random label); every record answered by 3 of the 5
at random. A planted zero-shot model for ``model-weighted``: 75% right, its scores a softmax of noisy logits.

Timed, best of ``--repeats``, one process: ``zs_ray.team.report`` (with 1000 bootstrap replicates of alpha and
kappa), ``resolve`` with each method; and the accuracy of each consensus against the planted truth (an
unresolved record counts as wrong). Side by side in the same run, when ``/tmp/crowdkit-venv`` has crowd-kit
(``python3 -m venv /tmp/crowdkit-venv && /tmp/crowdkit-venv/bin/pip install crowd-kit``; a throwaway venv,
crowd-kit is no dependency of zs-ray): its MajorityVote and DawidSkene in a subprocess on the same answers
(passed as .npz), timed the same way from the DataFrame it needs (building that frame not counted).

    python benchmarks/bench_team.py                    # ~1 minute on 2 cores; writes results-team.md
    python benchmarks/bench_team.py --records 20000 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from bench_engine import cpu_flags, cpu_model, write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results-team.md"
BEGIN, END = "<!-- bench_team:begin -->", "<!-- bench_team:end -->"
CROWDKIT_PY = "/tmp/crowdkit-venv/bin/python"
N_LABELS, N_ANNOTATORS, PER_RECORD = 6, 5, 3

CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd
from crowdkit.aggregation import DawidSkene, MajorityVote
import crowdkit
data = np.load(sys.argv[1]); repeats = int(sys.argv[2]); out = {"version": crowdkit.__version__}
df = pd.DataFrame({"task": data["record"], "worker": data["annotator"], "label": data["label"]})
for name, make in (("MajorityVote", MajorityVote), ("DawidSkene", lambda: DawidSkene(n_iter=100, tol=1e-6))):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); pred = make().fit_predict(df); best = min(best, time.perf_counter() - t0)
    labels = np.full(int(data["n_records"]), -1); labels[pred.index.to_numpy()] = pred.to_numpy()
    out[name] = {"seconds": best, "label": labels.tolist()}
print(json.dumps(out))
"""


def planted(n_records: int, seed: int = 0):
    from zs_ray.team import Responses

    rng = np.random.default_rng(seed)
    prior = np.array([0.3, 0.25, 0.15, 0.12, 0.1, 0.08])
    truth = rng.choice(N_LABELS, n_records, p=prior)
    accuracy = [0.9, 0.9, 0.9, 0.9, None]
    chosen = np.argsort(rng.random((n_records, N_ANNOTATORS)), axis=1)[:, :PER_RECORD]
    record = np.repeat(np.arange(n_records), PER_RECORD)
    annotator = chosen.ravel()
    label = truth[record].copy()
    for j, acc in enumerate(accuracy):
        mine = annotator == j
        if acc is None:
            label[mine] = rng.integers(0, N_LABELS, mine.sum())
        else:
            wrong = mine & (rng.random(len(label)) > acc)
            label[wrong] = (label[wrong] + rng.integers(1, N_LABELS, wrong.sum())) % N_LABELS
    model_wrong = (truth + rng.integers(1, N_LABELS, n_records)) % N_LABELS
    model_pred = np.where(rng.random(n_records) < 0.75, truth, model_wrong)
    logits = rng.normal(0, 1, (n_records, N_LABELS))
    logits[np.arange(n_records), model_pred] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = ["careful-1", "careful-2", "careful-3", "careful-4", "careless"]
    r = Responses(record, annotator, label, ids=[f"r{i}" for i in range(n_records)], annotators=names,
                  labels=[f"label-{k}" for k in range(N_LABELS)])
    return r, truth, probs


def best_of(repeats: int, fn):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def crowdkit(r, repeats: int) -> dict | None:
    if not os.path.exists(CROWDKIT_PY):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "answers.npz")
        np.savez(path, record=r.record, annotator=r.annotator, label=r.label, n_records=r.n_records)
        run = subprocess.run([CROWDKIT_PY, "-c", CHILD, path, str(repeats)], capture_output=True, text=True)
    if run.returncode != 0:
        print("crowd-kit failed:", run.stderr[-2000:], flush=True)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def machine() -> str:
    flags = cpu_flags()
    isa = " ".join(sorted(f for f in flags if f == "avx2" or f.startswith(("avx512", "amx")))) or "none"
    return f"{cpu_model()}, {os.cpu_count()} CPUs ({isa})"


def main() -> None:
    import scipy
    import sklearn

    from zs_ray.team import report, resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t_start = time.perf_counter()
    r, truth, probs = planted(args.records)
    model_pred = probs.argmax(1)
    rows, ours = [], {}
    sec, rep = best_of(args.repeats, lambda: report(r, model_pred=model_pred, n_boot=args.boot))
    sec0, _ = best_of(args.repeats, lambda: report(r, model_pred=model_pred, n_boot=0))
    print(f"report: {sec:.2f} s, without the bootstrap {sec0:.2f} s", flush=True)
    for method in ("majority", "dawid-skene", "model-weighted"):
        s, c = best_of(args.repeats, lambda: resolve(r, method, model_probs=probs))
        acc = float(np.mean(c.label == truth))
        ours[method] = c.label
        rows.append(("zs-ray", method, s, acc, c.unresolved, ""))
        print(f"zs-ray {method}: {s:.2f} s, accuracy {acc:.4f}, unresolved {c.unresolved}", flush=True)
    ck = crowdkit(r, args.repeats)
    if ck:
        for name in ("MajorityVote", "DawidSkene"):
            label = np.array(ck[name]["label"])
            mine = ours["dawid-skene" if name == "DawidSkene" else "majority"]
            decided = mine >= 0
            same = f"{np.mean(label[decided] == mine[decided]):.2%} of zs-ray's {decided.sum():,} decided"
            rows.append((f"crowd-kit {ck['version']}", name, ck[name]["seconds"], float(np.mean(label == truth)),
                         int(np.sum(label < 0)), same))
            print(f"crowd-kit {name}: {ck[name]['seconds']:.2f} s, accuracy {rows[-1][3]:.4f}", flush=True)
    total = time.perf_counter() - t_start
    q = resolve(r, "dawid-skene").annotator_quality
    w = resolve(r, "model-weighted", model_probs=probs).annotator_quality
    a, k = rep["krippendorff_alpha"], rep["fleiss_kappa"]
    body = "\n".join([
        f"`python benchmarks/bench_team.py --records {args.records} --boot {args.boot} --repeats {args.repeats}`, "
        f"{time.strftime('%Y-%m-%d')}, on {machine()}; Python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}"
        + (f", crowd-kit {ck['version']} (its own venv, a subprocess)" if ck else ", crowd-kit: not installed")
        + f". Load average at the end: {os.getloadavg()[0]:.1f} (other work shares this machine). "
        f"Whole run {total:.0f} s.",
        "",
        f"Data: {args.records:,} records x {N_ANNOTATORS} annotators (4 careful at 90%, 1 careless at random), "
        f"each record answered by {PER_RECORD} of them ({len(r.label):,} answers), {N_LABELS} labels of unequal "
        "size; a planted model 75% right for `model-weighted`. Seconds: best of "
        f"{args.repeats}. Accuracy: against the planted truth, an unresolved record counted as wrong.",
        "",
        "| implementation | what | seconds | accuracy | unresolved | same label as zs-ray's |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| zs-ray | `report` ({args.boot} bootstrap replicates of alpha and kappa, Cohen's kappa per pair, "
        f"per label) | {sec:.3f} | | | |",
        f"| zs-ray | the same `report` without the bootstrap (`n_boot=0`) | {sec0:.3f} | | | |",
        *[f"| {impl} | {what} | {s:.3f} | {acc:.2%} | {un:,} | {same} |" for impl, what, s, acc, un, same in rows],
        "",
        f"The report: alpha {a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}], Fleiss' kappa {k['value']:.3f} "
        f"[{k['low']:.3f}, {k['high']:.3f}], observed agreement {rep['observed_agreement']:.3f}; flagged: "
        f"{', '.join(rep['flagged']) or 'none'}"
        + (f" ({rep['annotators'][rep['flagged'][0]]['why']})" if rep["flagged"] else "") + ".",
        "Dawid-Skene's estimated accuracies: " + ", ".join(f"{n} {v:.3f}" for n, v in q.items()) + ".",
        "Model-weighted weights: " + ", ".join(f"{n} {v:.3f}" for n, v in w.items()) + ".",
    ])
    print(body)
    if not args.no_write:
        write_section(RESULTS, BEGIN, END, body, "Team agreement and consensus: 100,000 records x 5 annotators")


if __name__ == "__main__":
    main()
