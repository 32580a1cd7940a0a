"""``zs-ray train``: the driver. Check, split, train on Ray Train, choose the best checkpoint, test, publish.

1. Before Ray starts: the settings, the base model (its config and tokenizer must load), the input and its
   splits (``zs_ray.train.data``), and ``--output`` (a non-empty one needs ``--overwrite``). Every problem is
   one line, and nothing is written.
2. ``ray.train.torch.TorchTrainer`` runs ``zs_ray.train.loop.train_loop`` on ``--num-workers`` workers
   (``ScalingConfig``; GPUs where the cluster has them). ``RunConfig(storage_path, name)`` puts the run's
   checkpoints in ``--storage-path`` (default: a hidden ``.<output>.zs-ray-train/`` beside ``--output``) under
   a name made from the settings and the training rows: the same command again finds the same run, and Ray
   Train hands its latest checkpoint to the loop, which resumes there (a run stopped by Ctrl-C, a lost node
   or a failure). ``CheckpointConfig`` keeps the two best checkpoints by validation macro-F1, and the latest.
3. The student is the checkpoint with the best validation macro-F1 (ties: lower validation loss, then the
   later one; no validation rows: the latest). It is written to a hidden directory beside ``--output`` with
   the base model's tokenizer, run on the test texts by the engine's supervised classifier (what ``annotate
   --model`` runs), scored against the test labels beside the zero-shot teacher's predictions for the same
   records (``workflow.evaluate.compute_metrics``, both), and then renamed to ``--output``: all or nothing.
   The default storage is removed once the student is in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from zs_ray.errors import ZsRayError
from zs_ray.train.data import TrainData, prepare

log = logging.getLogger(__name__)
MANIFEST = "zs-ray-train.json"
METRICS = "metrics.json"
ROWS = "training-rows.parquet"
SUMMARY_METRICS = ("records", "accuracy", "accuracy_ci95", "macro_f1", "macro_f1_ci95")
HYPER = ("base_model", "epochs", "batch_size", "learning_rate", "weight_decay", "max_length", "seed", "device")


class TrainFailed(Exception):
    """Training stopped with an error; the run's checkpoints are kept for the same command to resume."""


@dataclass
class TrainSummary:
    output: str
    data: TrainData
    run: dict  # Ray Train: storage, name, workers, device, best checkpoint, its metrics, resumed_from_step
    student: dict
    teacher: dict

    def __str__(self) -> str:
        c = self.data.counts()
        tr = c["train"]
        best = self.run["best"]
        lines = [
            f"trained a student of {len(self.data.labels)} labels on {tr['rows']} rows ({tr.get('human', 0)} human, "
            f"{tr.get('zero-shot', 0)} zero-shot); validation {c['validation']['rows']}, test {c['test']['rows']}",
            f"  Ray Train: {self.run['workers']} worker(s) on {self.run['device']}, run {self.run['name']}; "
            f"resumed from step {self.run['resumed_from_step']}; student = epoch {float(best.get('epoch', 0)):g}"
            + (f" (validation macro-F1 {best['eval_macro_f1']:.3f})" if "eval_macro_f1" in best else " (the last)"),
            f"  test ({self.data.test_rule}): " + "; ".join(
                f"{who} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}"
                for who, m in (("student", self.student), ("zero-shot teacher", self.teacher))),
        ]
        lines += [f"  note: {n}" for n in self.data.notes]
        lines.append(f"  wrote {self.output}: annotate with it: zs-ray annotate --model {self.output} ...")
        return "\n".join(lines)


def check_base_model(name: str):
    """The base model's tokenizer, or one line saying it cannot be loaded."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(name)
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ZsRayError(f"--base-model {name}: not found or not loadable: {first}") from None


def check_output(output: str, overwrite: bool) -> str:
    if "://" in output:
        raise ZsRayError(f"--output {output}: the student is written to a local directory")
    path = os.path.abspath(output)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ZsRayError(f"--output {output} exists and is not a directory")
        if os.listdir(path) and not overwrite:
            raise ZsRayError(f"--output {output} is not empty: pass --overwrite to replace it")
    return path


def _hidden(path: str, suffix: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{suffix}")


def run_name(config, data: TrainData, workers: int) -> str:
    settings = {k: getattr(config, k) for k in HYPER} | {"workers": workers, "rows": data.fingerprint()}
    return "train-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _best(result, with_validation: bool):
    """(checkpoint, metrics) of the student: best validation macro-F1, then lower loss, then later."""
    candidates = list(result.best_checkpoints or [])
    if not with_validation or not candidates:
        return result.checkpoint, dict(result.metrics or {})
    return max(candidates, key=lambda cm: (cm[1].get("eval_macro_f1", -1.0), -cm[1].get("eval_loss", 0.0),
                                           cm[1].get("step", 0)))


def fit(config, data: TrainData, storage: str, name: str, workers: int, gpu: bool, callbacks: Sequence = ()):
    """Ray Train: the result of ``TorchTrainer.fit`` (the run resumes from its storage when it has a checkpoint)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from zs_ray.train.loop import train_loop

    loop_config = {k: getattr(config, k) for k in HYPER} | {
        "labels": data.labels, "callbacks": list(callbacks),
        "data": ray.put({"train": data.train.for_workers(data.labels),
                         "validation": data.validation.for_workers(data.labels)})}
    with_validation = len(data.validation) > 0
    checkpoints = CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="eval_macro_f1",
                                   checkpoint_score_order="max") if with_validation else CheckpointConfig(num_to_keep=1)
    trainer = TorchTrainer(train_loop, train_loop_config=loop_config,
                           scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
                           run_config=RunConfig(storage_path=storage, name=name, checkpoint_config=checkpoints,
                                                failure_config=FailureConfig(max_failures=config.max_failures)))
    try:
        return trainer.fit()
    except TrainingFailedError as exc:
        raise TrainFailed(f"training failed: {_reason(exc)}; its checkpoints are kept in {storage}/{name}: run the "
                          "same command again to resume from the latest") from None


def _reason(exc) -> str:
    """One line for a failed run: the first worker's error (its last line: ``Type: message``), or the controller's."""
    cause = next(iter(getattr(exc, "worker_failures", {}).values()), None) or getattr(exc, "controller_failure", exc)
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


def _student_metrics(model_dir: str, data: TrainData, bootstrap: int, seed: int) -> tuple[dict, dict]:
    import numpy as np

    from zs_ray.engine.classifier import ZeroShotClassifier
    from zs_ray.workflow.evaluate import compute_metrics

    rows = ZeroShotClassifier(model_dir, precision="fp32")(list(data.test.text))
    pred = np.array([r["labels"][0] for r in rows], dtype=object)
    score = np.array([r["scores"][0] for r in rows], dtype=float)
    gold = np.array(data.test.label, dtype=object)
    student = compute_metrics(gold, pred, score, data.labels, bootstrap=bootstrap, seed=seed)
    teacher = compute_metrics(gold, data.teacher_pred, data.teacher_score, data.labels, bootstrap=bootstrap, seed=seed)
    return student, teacher


def _write_rows(path: str, data: TrainData) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"id": [], "label": [], "source": [], "weight": [], "split": []}
    for split in ("train", "validation", "test"):
        rows = getattr(data, split)
        cols["id"] += [str(x) for x in rows.ids]
        cols["label"] += rows.label
        cols["source"] += rows.source
        cols["weight"] += rows.weight
        cols["split"] += [split] * len(rows)
    pq.write_table(pa.table(cols), path)


def train(config, callbacks: Sequence = ()) -> TrainSummary:
    """Run ``zs-ray train`` (``TrainConfig``). ``callbacks``: extra transformers ``TrainerCallback`` objects
    for the workers' ``Trainer`` (picklable), after Ray Train's report callback."""
    from zs_ray.cluster import connect_ray

    tokenizer = check_base_model(config.base_model)
    values = config.threshold_values()
    data = prepare(config, values or None)
    output = check_output(config.output, config.overwrite)
    resources = connect_ray(config.ray_address)
    gpus = int(resources.get("GPU", 0))
    if config.device == "gpu" and not gpus:
        raise ZsRayError("--device gpu: the Ray cluster has no GPUs")
    gpu = config.device == "gpu" or (config.device == "auto" and gpus > 0)
    workers = config.num_workers or (gpus if gpu else 1)
    work = _hidden(output, "zs-ray-train")
    storage = config.storage_path or work
    storage = storage if "://" in storage else os.path.abspath(storage)
    name = run_name(config, data, workers)
    result = fit(config, data, storage, name, workers, gpu, callbacks)
    checkpoint, best = _best(result, len(data.validation) > 0)
    run = {"storage": storage, "name": name, "workers": workers, "device": "gpu" if gpu else "cpu",
           "resumed_from_step": int((result.metrics or {}).get("resumed_from_step", 0)),
           "steps": int((result.metrics or {}).get("step", 0)), "best": _plain(best),
           "last": _plain(result.metrics or {})}
    tmp = _hidden(output, "zs-ray-student")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _save_student(checkpoint, tmp, tokenizer, config.max_length)
        student, teacher = _student_metrics(tmp, data, config.bootstrap, config.seed)
        with open(os.path.join(tmp, METRICS), "w", encoding="utf-8") as fh:
            json.dump({"test": {"rule": data.test_rule, "records": len(data.test)}, "student": student,
                       "teacher": teacher}, fh, indent=2, ensure_ascii=False)
        _write_rows(os.path.join(tmp, ROWS), data)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(_manifest(config, data, run, student, teacher), fh, indent=2, ensure_ascii=False)
        if os.path.exists(output):
            shutil.rmtree(output)
        os.rename(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not config.storage_path:
        shutil.rmtree(work, ignore_errors=True)
    return TrainSummary(config.output, data, run, student, teacher)


def _save_student(checkpoint, path: str, tokenizer, max_length: Optional[int]) -> None:
    from transformers import AutoModelForSequenceClassification

    from zs_ray.train.loop import CHECKPOINT

    with checkpoint.as_directory() as ckpt:
        model = AutoModelForSequenceClassification.from_pretrained(os.path.join(ckpt, CHECKPOINT))
    model.save_pretrained(path)
    if max_length:
        tokenizer.model_max_length = min(max_length, 512)
    tokenizer.save_pretrained(path)


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _manifest(config, data: TrainData, run: dict, student: dict, teacher: dict) -> dict:
    import ray
    import torch
    import transformers

    settings = {k: v for k, v in asdict(config).items() if k not in ("ray_address",)}
    return {"kind": "zs-ray student", "base_model": config.base_model, "labels": data.labels,
            "input": data.source, "rows": data.counts(), "test_rule": data.test_rule, "notes": data.notes,
            "seed": config.seed, "settings": settings, "ray_train": run,
            "test_metrics": {who: {k: m[k] for k in SUMMARY_METRICS}
                             for who, m in (("student", student), ("teacher", teacher))},
            "versions": {"ray": ray.__version__, "torch": torch.__version__, "transformers": transformers.__version__}}
