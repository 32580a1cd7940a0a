"""The settings of ``zs-ray train`` (``TrainConfig``): typed and documented, served to the CLI, config files
and the Python API as every command's are (``zs_ray.cli.COMMANDS``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from zs_ray.errors import ZsRayError
from zs_ray.workflow.config import BulkLabelConfig, LabelledInputConfig, _help


@dataclass
class TrainConfig(LabelledInputConfig):
    """``zs-ray train``: fine-tune a student classifier on the human labels with Ray Train (``zs_ray.train``)."""

    output: str = field(default="", metadata=_help(
        "Directory for the student (config with the label names, tokenizer, weights, metrics.json, "
        "zs-ray-train.json); written all or nothing."))
    base_model: str = field(default="", metadata=_help(
        "Encoder to fine-tune (local directory or Hub id), e.g. the NLI model (its head is replaced) or a small "
        "multilingual encoder."))
    labels: Optional[list[str]] = field(default=None, metadata=_help(
        "The student's labels, comma-separated or one per argument (default: the input's candidate labels); a "
        "human label outside them is refused."))
    sample_name: str = field(default="round-1", metadata=_help(
        "Metadata value of the round-1 sample (sample: NAME): its human labels are the test set, never trained on."))
    test_fraction: float = field(default=0.2, metadata=_help(
        "Only where no record is marked as the sample (e.g. an output with --gold-column): the seeded, stratified "
        "share of the human labels held out as the test set."))
    validation_fraction: float = field(default=0.1, metadata=_help(
        "Seeded, stratified share of the other human labels held out to choose the best epoch's checkpoint."))
    thresholds: Optional[str] = field(default=None, metadata=_help(
        "JSON of `zs-ray thresholds --output`: unlabelled records whose top score reaches its label's threshold "
        "join the training rows as zero-shot labels (source zero-shot, weight --zero-shot-weight)."))
    threshold: Optional[list[str]] = field(default=None, metadata=_help(
        "Per-label thresholds as LABEL=SCORE ... (instead of, or overriding, --thresholds)."))
    zero_shot_weight: float = field(default=0.5, metadata=_help(
        "Loss weight of a zero-shot label (a person's label weighs 1)."))
    epochs: int = field(default=3, metadata=_help("Training epochs (one evaluation and checkpoint each)."))
    batch_size: int = field(default=16, metadata=_help("Training rows per step and worker."))
    learning_rate: float = field(default=5e-5, metadata=_help("Peak learning rate (AdamW, linear decay)."))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay."))
    max_length: Optional[int] = field(default=None, metadata=_help(
        "Tokens per text (default: the base model's maximum, at most 512)."))
    num_workers: Optional[int] = field(default=None, metadata=_help(
        "Ray Train workers (data parallel). Default: one per GPU of the cluster, or 1 without GPUs."))
    device: Literal["auto", "cpu", "gpu"] = field(default="auto", metadata=_help(
        "auto: GPUs where the cluster has them, else CPUs."))
    storage_path: Optional[str] = field(default=None, metadata=_help(
        "Where Ray Train keeps the run's checkpoints (a cluster needs shared storage: s3://..., NFS). Default: a "
        "hidden directory beside --output, removed once the student is written."))
    max_failures: int = field(default=0, metadata=_help(
        "Worker failures Ray Train recovers from by restarting at the latest checkpoint."))
    overwrite: bool = field(default=False, metadata=_help(
        "Replace a non-empty --output (once the new student is written)."))
    seed: int = field(default=0, metadata=_help("Seed of the splits, the new head and the data order."))
    bootstrap: int = field(default=1000, metadata=_help("Bootstrap resamples for the macro-F1 intervals."))
    ray_address: Optional[str] = field(default=None, metadata=_help(
        "Ray cluster to join (default: RAY_ADDRESS, else a new local Ray)."))

    threshold_values = BulkLabelConfig.threshold_values  # the same --thresholds / --threshold as bulk-label

    def __post_init__(self) -> None:
        import os

        super().__post_init__()
        for name in ("output", "base_model"):
            if not getattr(self, name):
                raise ZsRayError(f"--{name.replace('_', '-')} is required")
        if self.labels:
            self.labels = [x.strip() for item in self.labels for x in str(item).split(",") if x.strip()]
            if len(set(self.labels)) < 2:
                raise ZsRayError("--labels needs at least two distinct labels")
        for name in ("test_fraction", "validation_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ZsRayError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        if not (math.isfinite(self.zero_shot_weight) and self.zero_shot_weight > 0):
            raise ZsRayError(f"--zero-shot-weight must be > 0, got {self.zero_shot_weight}")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0 or self.weight_decay < 0:
            raise ZsRayError("--epochs and --batch-size must be >= 1, --learning-rate > 0, --weight-decay >= 0")
        if (self.max_length or 8) < 8 or (self.num_workers or 1) < 1:
            raise ZsRayError("--max-length must be >= 8 and --num-workers >= 1")
        if self.max_failures < 0 or self.bootstrap < 0:
            raise ZsRayError("--max-failures and --bootstrap must be >= 0")
        self.ray_address = self.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.threshold_values()  # checks the file and the syntax
