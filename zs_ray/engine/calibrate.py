"""``auto`` on CPU: the fastest faithful mode of this machine for this model, measured once and cached.

Which CPU mode is fastest depends on the machine (native bf16 or not, VNNI or not, two CPUs of the same ISA
differ by up to 1.5x in their ratios) and on what is installed (ONNX Runtime): see
benchmarks/results-engine.md. So ``auto`` measures rather than guesses. Every candidate mode of this
machine (``device.cpu_candidates``: fp32; bf16 where it runs natively; torch int8 where torch has an x86
int8 engine; ONNX Runtime int8 with the ``onnx`` extra) scores the same probe batch (short pairs and
full-length ones, as summaries and articles), best of ``REPEATS`` runs after a warm-up, with the threads
the caller will use. ``auto`` is the fastest, unless a more faithful mode is within ``FAITHFUL_MARGIN`` of
its speed: the tiers, most faithful first, are ``TIERS`` (each mode's agreement with fp32 is held to
``device.AGREEMENT_BOUNDS`` by the tests).

The choice is stored in ``precision.json`` in zs-ray's cache directory (``zs_ray/cache.py``) under a key of the
model's files, the CPU (model name, ISA flags, torch's kernel capability, the oneDNN / fbgemm / ATen caps
of the environment), the thread count and the versions; later loads on the same machine read it (no
measurement). Processes on one machine that load the model at once (a job's Ray actors) wait for the
first one's measurement (a file lock) instead of measuring beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TIERS = (("fp32",), ("bf16",), ("int8", "onnx-int8"))
FAITHFUL_MARGIN = 1.2  # a less faithful tier must be this much faster than the best more faithful one
REPEATS = 2
SHORT_PAIRS, SHORT_TOKENS = 32, 64  # about MLSum summaries with a hypothesis (~56 tokens a pair) ...
LONG_PAIRS, LONG_TOKENS = 4, 512  # ... and full articles (the model's length limit)
VERSION = 2  # bump when what a mode computes changes (2: the load guard; DeBERTa-v2's own kernels): re-measure
_ENV_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")


def cache_file() -> Path:
    from zs_ray.cache import cache_dir

    return cache_dir() / "precision.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(model_path: str, threads: int, candidates: list) -> str:
    """What makes two measurements interchangeable: the model's files, this CPU, the kernels torch and its
    libraries run here, the threads, the versions (zs-ray's measurement's too) and the candidates."""
    import torch

    from zs_ray.engine.device import cpu_capability, cpu_flags
    from zs_ray.engine.onnx import _source_files

    isa = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    facts = {"version": VERSION, "path": os.path.realpath(model_path), "files": _source_files(model_path), "cpu": _cpu_model(),
             "isa": isa, "capability": cpu_capability(), "env": {k: os.environ.get(k) for k in _ENV_CAPS},
             "threads": threads, "torch": torch.__version__, "ort": ort, "candidates": candidates}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def choose(rates: dict) -> str:
    """The mode ``auto`` takes from measured speeds (mode -> pairs/s): the fastest, unless a more faithful
    tier's best is within ``FAITHFUL_MARGIN`` of it."""
    fastest = max(rates.values())
    for tier in TIERS:
        measured = {m: r for m, r in rates.items() if m in tier}
        if measured and max(measured.values()) * FAITHFUL_MARGIN >= fastest:
            return max(measured, key=measured.get)
    return max(rates, key=rates.get)


def _probe(vocab_size: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = np.array([min(SHORT_TOKENS, max_len)] * SHORT_PAIRS + [min(LONG_TOKENS, max_len)] * LONG_PAIRS)
    return rng.integers(1, max(2, vocab_size), size=int(lengths.sum())), lengths


def measure(model: str, candidates: list, scorer_for) -> dict:
    """pairs/s of each candidate mode on the probe batch; ``scorer_for(mode)`` loads the model in it."""
    rates = {}
    from zs_ray.errors import ZsRayError

    for mode in candidates:
        try:
            scorer = scorer_for(mode)
        except ZsRayError as exc:  # e.g. a model the ONNX exporter cannot trace: not a candidate here
            log.info("precision auto: %s is not a candidate for %s (%s)", mode, model, exc)
            continue
        config = scorer.model.config
        max_len = min(LONG_TOKENS, int(getattr(config, "max_position_embeddings", LONG_TOKENS) or LONG_TOKENS) - 2)
        flat, lengths = _probe(int(config.vocab_size), max_len)
        scorer.logits(flat, lengths)  # warm-up: packed weights, oneDNN primitives, ONNX Runtime's arena
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            scorer.logits(flat, lengths)
            best = min(best, time.perf_counter() - start)
        rates[mode] = len(lengths) / best
        del scorer
    return rates


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stored_choice(model_path: str, threads: int, candidates: list):
    """The stored choice of ``auto`` for this model, machine and thread count, or None (nothing measured)."""
    if len(candidates) == 1:
        return candidates[0]
    entry = _read(cache_file()).get(machine_key(model_path, threads, candidates))
    return entry and entry["choice"]


def auto_cpu_precision(model: str, model_path: str, threads: int, candidates: list, scorer_for) -> str:
    """The mode ``auto`` runs ``model`` in on this CPU: stored, or measured now (see the module's doc)."""
    if len(candidates) == 1:
        return candidates[0]
    key = machine_key(model_path, threads, candidates)
    path = cache_file()
    with _locked(path):
        entry = _read(path).get(key)
        if entry is None:
            start = time.perf_counter()
            rates = measure(model, candidates, scorer_for) or {"fp32": 0.0}
            entry = {"model": model, "threads": threads, "pairs_per_s": {m: round(r, 1) for m, r in rates.items()},
                     "choice": choose(rates), "seconds": round(time.perf_counter() - start, 1),
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            stored = _read(path)
            stored[key] = entry
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
            os.replace(tmp, path)
            log.info("precision auto for %s on this CPU: %s (pairs/s measured: %s; stored in %s)", model,
                     entry["choice"], entry["pairs_per_s"], path)
    return entry["choice"]
