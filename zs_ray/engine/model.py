"""The model wrapper: ``NliScorer`` runs the NLI model over encoded pairs (GPU or CPU).

With ``kind="classifier"`` it runs a supervised text classifier the same way (``logits`` works on any
sequence classifier; ``supervised.ClassMap`` makes its probabilities)."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from zs_ray.engine import guard
from zs_ray.engine.batching import default_batch_size, default_max_tokens, plan_batches
from zs_ray.engine.calibrate import auto_cpu_precision
from zs_ray.engine.deberta import fast_attention
from zs_ray.engine.device import (
    cpu_candidates,
    cpu_int8_vnni,
    onnx_int8_vnni,
    resolve_device,
    resolve_dtype,
    resolve_precision,
)
from zs_ray.engine.kernels import (
    ATTENTION,
    _register_attention,
    first_token_last_layer,
    int8_linears,
    onednn_linears,
)
from zs_ray.engine.nli import nli_labels
from zs_ray.engine.onnx import onnx_int8_model
from zs_ray.engine.pairs import Pairs
from zs_ray.engine.postprocess import label_probabilities
from zs_ray.engine.supervised import NLI
from zs_ray.engine.verbalize import Verbalizer, label_logits
from zs_ray.errors import ZsRayError

log = logging.getLogger(__name__)


def _model_dir(model: str) -> str:
    """The local directory of a model (a Hub id: its snapshot in the Hugging Face cache)."""
    import os

    if os.path.isdir(model):
        return model
    try:
        from transformers.utils import cached_file

        return os.path.dirname(cached_file(model, "config.json"))
    except Exception:  # noqa: BLE001 - the id itself then keys the cache
        return model


class NliScorer:
    """Runs the NLI model over encoded pairs: sort by length, batch by a token budget, restore order."""

    def __init__(
        self,
        model: str,
        multi_label: bool = False,
        precision: str = "auto",
        device: Optional[str] = None,
        batch_size: Optional[int] = None,
        max_tokens: Optional[int] = None,
        kind: str = NLI,
    ):
        import torch

        self.device = resolve_device(device)
        self.asked = precision
        if precision == "auto" and self.device == "cpu":  # measured once per machine and model (calibrate)
            precision = auto_cpu_precision(model, _model_dir(model), torch.get_num_threads(), cpu_candidates(),
                                           lambda mode: NliScorer(model, multi_label, mode, "cpu", batch_size,
                                                                  max_tokens, kind))
        self.name, self.kind = model, kind
        self.multi_label = multi_label
        self.batch_size = max(1, int(batch_size or default_batch_size(self.device)))
        self.max_tokens = int(max_tokens) if max_tokens else default_max_tokens(self.device)
        self.pin = torch.device(self.device).type == "cuda"
        try:
            self._load(resolve_precision(precision, self.device))
        except guard.GuardFailed as exc:
            if self.asked != "auto":
                raise
            # auto's mode failed the guard here (e.g. a store measured by an older zs-ray): fp32 serves.
            log.warning("precision auto: %s; running fp32", exc)
            self._load("fp32")

    def _load(self, precision: str) -> None:
        """Load the model in fp32, score the probe batch with transformers' own code, put the model in
        ``precision`` (dtype, kernels, backend) and check it against those logits (``guard``)."""
        import torch
        from transformers import AutoModelForSequenceClassification

        self.precision, self.dtype = precision, resolve_dtype(precision, self.device)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(self.name, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ZsRayError(f"model {self.name!r} not found or not loadable: {exc}") from None
        self.model.to(self.device).eval()
        self.nli = nli_labels(self.model.config) if self.kind == NLI else None  # a classifier: ``supervised``
        self.pad_id = self.model.config.pad_token_id or 0
        flat, lengths = guard.probe_batch(self.model.config)
        reference = self.logits(flat, lengths, max_tokens=guard.PROBE_TOKENS)
        self._install(torch.device(self.device).type == "cpu")
        got = self.logits(flat, lengths, max_tokens=guard.PROBE_TOKENS)
        self.guard_difference = guard.check(self.precision, reference, got, self.name)

    def _install(self, on_cpu: bool) -> None:
        """Put the loaded fp32 model in ``self.precision`` with the kernels that apply to it."""
        import torch

        self.int8_linears = self.fast_linears = 0
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
            if on_cpu and type(self.model)._supports_attention_backend:  # not DeBERTa-v2: its own attention
                _register_attention()
                self.model.set_attn_implementation(ATTENTION)
        if self.precision == "onnx-int8":
            # The [CLS]-only last layer is checked in fp32, then the model goes to ONNX Runtime int8.
            if type(self.model)._supports_attention_backend:
                self.model.set_attn_implementation("eager")  # plain ops for the ONNX exporter
            self.fast_attention = 0  # DeBERTa-v2 exports with transformers' own attention
            self.first_token_only = self._prune_last_layer()
            self.model = onnx_int8_model(self.model, _model_dir(self.name), self.first_token_only,
                                         torch.get_num_threads(), self._logit_check(), not onnx_int8_vnni())
            return
        self.fast_attention = fast_attention(self.model)  # DeBERTa-v2's disentangled attention
        if self.precision == "int8":
            # The [CLS]-only last layer is checked in fp32 (exact), then the encoder goes int8.
            self.first_token_only = self._prune_last_layer()
            encoder = getattr(getattr(self.model, "base_model", None), "encoder", None) or self.model
            self.int8_linears = int8_linears(encoder, vnni=cpu_int8_vnni())
            if not self.int8_linears:
                raise ZsRayError("--precision int8: this torch cannot run int8 linears here; choose fp32 or auto")
            self.fast_linears = onednn_linears(self.model)  # the fp32 head
        else:
            self.fast_linears = onednn_linears(self.model) if on_cpu else 0
            self.first_token_only = self._prune_last_layer()

    def _probe(self):
        rng = np.random.default_rng(0)
        lengths = np.array([11, 7, 7, 3])
        return rng.integers(1, max(2, self.model.config.vocab_size), size=int(lengths.sum())), lengths

    def _logit_check(self):
        """A check that a candidate model gives the current model's logits on a padded probe batch."""
        flat, lengths = self._probe()
        expected = self.logits(flat, lengths)

        def check(candidate, tol: float) -> None:
            kept, self.model = self.model, candidate
            try:
                got = self.logits(flat, lengths)
            finally:
                self.model = kept
            if not np.allclose(got, expected, rtol=tol, atol=tol * (np.abs(expected).max() + 1e-6)):
                raise ZsRayError(f"the exported model's logits differ from torch's by "
                                 f"{float(np.abs(got - expected).max()):.2g}: choose fp32, int8 or auto")

        return check

    def _prune_last_layer(self) -> bool:
        """Compute the last layer for the first token only, if the model allows it and a padded probe
        batch gives the same logits (fp32: 1e-4; half precision: its own rounding)."""
        import torch

        flat, lengths = self._probe()
        before = self.logits(flat, lengths)
        undo = first_token_last_layer(self.model)
        if undo is None:
            return False
        try:
            after = self.logits(flat, lengths)
            tol = 1e-4 if self.dtype == torch.float32 else 5e-2
            if np.allclose(after, before, rtol=tol, atol=tol * (np.abs(before).max() + 1e-6)):
                return True
        except Exception:  # noqa: BLE001 - any model whose layer does not fit; it keeps its own layer
            pass
        undo()
        return False

    def _batch_tensors(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
                       flat_types: Optional[np.ndarray]):
        """Padded input tensors for pairs ``idx`` (longest first), built with numpy, no per-token Python."""
        import torch

        width = int(lengths[idx[0]])
        rows = len(idx)
        lens = lengths[idx]
        cols = np.arange(width)
        valid = cols[None, :] < lens[:, None]  # [rows, width]
        gather = (starts[idx][:, None] + cols[None, :])[valid]
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        ids[valid] = flat[gather]
        inputs = {"input_ids": torch.from_numpy(ids)}
        if flat_types is not None:
            types = np.zeros((rows, width), dtype=np.int64)
            types[valid] = flat_types[gather]
            inputs["token_type_ids"] = torch.from_numpy(types)
        if lens[-1] < width:  # padding present (rows are sorted longest first)
            if self.model.config._attn_implementation == ATTENTION:
                mask = torch.zeros((rows, 1, 1, width), dtype=self.dtype)
                mask.masked_fill_(torch.from_numpy(~valid)[:, None, None, :], torch.finfo(self.dtype).min)
            else:
                mask = torch.from_numpy(valid.astype(np.int64))
            inputs["attention_mask"] = mask
        return {k: self._to_device(v) for k, v in inputs.items()}

    def _to_device(self, tensor):
        """Host tensor -> the model's device; on a GPU through pinned memory, without waiting for the GPU."""
        if self.pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def logits(self, flat: np.ndarray, lengths: np.ndarray, flat_types: Optional[np.ndarray] = None,
               max_tokens: Optional[int] = None) -> np.ndarray:
        """Logits [pairs, nli_classes] (fp32), in input order, of pairs given as one array of all their token
        ids end to end and their lengths (what an Arrow list column holds: no Python list per pair)."""
        import torch

        n = len(lengths)
        num_labels = self.model.config.num_labels
        if n == 0:
            return np.empty((0, num_labels), dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        batches = plan_batches(lengths, self.batch_size, max_tokens or self.max_tokens)
        # Logits stay on the device until the end: no per-batch synchronisation, so on a GPU the host
        # builds batch k+1 while batch k runs.
        out = torch.empty((n, num_labels), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            for idx in batches:
                inputs = self._batch_tensors(flat, starts, lengths, idx, flat_types)
                out[self._to_device(torch.from_numpy(idx))] = self.model(**inputs).logits.float()
        return out.cpu().numpy()

    def probabilities(self, pairs: Pairs, verbalizer: Optional[Verbalizer] = None) -> np.ndarray:
        """Per text, the probability of each candidate label (in label order): [texts, labels]. With a
        ``verbalizer``, the pairs are its hypotheses and each label's score comes from its phrasings'."""
        n_labels = len(verbalizer.labels) if verbalizer is not None else pairs.n_labels
        if pairs.n_texts == 0:
            return np.empty((0, n_labels))
        logits = self.logits(pairs.ids, pairs.lengths, pairs.type_ids).reshape(pairs.n_texts, pairs.n_labels, -1)
        if verbalizer is not None:
            logits = label_logits(logits, verbalizer.groups, verbalizer.aggregate, self.nli, self.multi_label)
        return label_probabilities(logits, self.nli, self.multi_label)
