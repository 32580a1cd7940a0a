"""ONNX Runtime int8 on CPU (``precision="onnx-int8"``): the fastest CPU mode measured on both ISAs.

The torch model (fp32, with its [CLS]-only last layer where ``kernels.first_token_last_layer`` fits) is
exported once by torch's TorchScript exporter (opset 17, dynamic batch and length), checked against
torch on a padded probe batch (1e-4), then quantized by ONNX Runtime's ``quantize_dynamic`` (int8
weights per output channel, uint8 activations quantized per call; 7-bit weights where the CPU has no
VNNI, as ONNX Runtime advises against the int16 saturation of AVX2's ``vpmaddubsw``) and run by an
``InferenceSession`` with all graph optimizations. The quantized file is cached under
zs-ray's cache directory (``zs_ray/cache.py``: ``$ZS_RAY_CACHE``, default ``~/.cache/zs-ray``), keyed by the model's files, the versions and the
options, so each machine exports a model once; concurrent actors write to their own temporary files and
rename.

onnxruntime and onnx are dependencies of zs-ray. Why this and not hand-written kernels:
benchmarks/results-engine.md (ONNX Runtime int8 ahead of torch's fbgemm int8 on AVX-512 and AVX2).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from zs_ray.errors import ZsRayError

EXPORT_VERSION = 1  # bump when the export or quantization changes: old cache entries are then ignored
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_available() -> bool:
    """Whether onnxruntime and onnx are installed (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def require_onnx() -> None:
    """Raise the one-line error of ``--precision onnx-int8`` on an install without ONNX Runtime."""
    if not onnx_available():
        raise ZsRayError('--precision onnx-int8 needs ONNX Runtime, which this install lacks: pip install onnxruntime onnx '
                         "(or choose fp32, int8 or auto)")


def cache_root() -> Path:
    from zs_ray.cache import cache_dir

    return cache_dir() / "onnx"


def _source_files(path: str) -> list:
    """(name, size, mtime) of the weight and config files of a local model directory."""
    if not os.path.isdir(path):
        return []
    return sorted((name, st.st_size, int(st.st_mtime)) for name in os.listdir(path)
                  if (name.endswith(WEIGHT_FILES) or name == "config.json")
                  for st in [os.stat(os.path.join(path, name))])


def cache_key(model_path: str, first_token_only: bool, reduce_range: bool) -> str:
    import onnxruntime
    import torch

    facts = {"v": EXPORT_VERSION, "path": os.path.realpath(model_path), "files": _source_files(model_path),
             "torch": torch.__version__, "ort": onnxruntime.__version__, "first_token_only": first_token_only,
             "reduce_range": reduce_range}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


class _Output:
    def __init__(self, logits):
        self.logits = logits


class OrtNliModel:
    """An ONNX Runtime session that ``NliScorer`` calls as it calls a torch model: keyword tensors in,
    ``.logits`` (a torch tensor) out; ``config`` is the torch model's."""

    def __init__(self, path: str, config, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config
        self.path = path

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        import torch

        ids = input_ids.numpy()
        given = {"input_ids": ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.inputs:
            value = given.get(name)
            if value is None:
                value = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
            elif not isinstance(value, np.ndarray):
                value = value.numpy().astype(np.int64, copy=False)
            feed[name] = value
        return _Output(torch.from_numpy(self.session.run(None, feed)[0]))


def _export(model, target: Path, reduce_range: bool, probe) -> None:
    """fp32 ONNX of ``model`` (checked against it on ``probe``) -> int8 at ``target`` (atomically)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        fp32 = os.path.join(tmp, "model.onnx")
        names = list(INPUTS)
        ids = torch.ones(2, 16, dtype=torch.long)
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), fp32, dynamo=False,
                              opset_version=17, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                            "logits": {0: "batch"}})
        probe(OrtNliModel(fp32, model.config, 1), 1e-4)
        int8 = os.path.join(tmp, "model-int8.onnx")
        logging.disable(logging.WARNING)  # its root-logger advice to run onnxruntime's pre-processing first
        try:
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=reduce_range)
        finally:
            logging.disable(logging.NOTSET)
        os.replace(int8, target)


def onnx_int8_model(model, model_path: str, first_token_only: bool, threads: int, probe,
                    reduce_range: bool) -> OrtNliModel:
    """The int8 ONNX Runtime form of the fp32 torch ``model`` (exported and quantized once per machine,
    then cached). ``probe(candidate, tol)`` raises unless ``candidate`` gives the torch model's logits;
    ``reduce_range``: 7-bit weights, for CPUs without VNNI (``device.onnx_int8_vnni``)."""
    require_onnx()
    target = cache_root() / cache_key(model_path, first_token_only, reduce_range) / "model-int8.onnx"
    if not target.exists():
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _export(model, target, reduce_range, probe)
        except ZsRayError:
            raise
        except Exception as exc:  # noqa: BLE001 - an architecture the exporter cannot trace
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ZsRayError(f"--precision onnx-int8: this model does not export to ONNX ({line}); "
                             "choose fp32, int8 or auto") from None
    return OrtNliModel(str(target), model.config, threads)
