"""One typed, documented configuration for an annotation run.

``AnnotateConfig`` is shared by the CLI (``zs-ray annotate``), the Python API
(``zs_ray.annotate(AnnotateConfig(...))``) and the job entrypoint
(``jobs/annotate_mlsum.py``): the CLI flags are generated from its fields, so a
field, its default and its help text live in one place.

The defaults reproduce the Rubrix tutorial this project grew from: SELECTRA
zero-shot on the first 500 summaries of MLSum-es' test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from zs_ray.checks import check_precision, check_template, parse_labels
from zs_ray.errors import ZsRayError
from zs_ray.rubrix.config import RubrixConfig

DEFAULT_LABELS = ("política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología")


def _opt(help: str, **extra: Any) -> dict:
    return {"help": help, **extra}


@dataclass
class AnnotateConfig:
    """Settings of one annotation run: read -> classify -> write (-> log to Rubrix)."""

    output: str = field(metadata=_opt("Output directory (or URI) for the Parquet predictions and the manifest."))
    dataset: str = field(
        default="mteb/mlsum",
        metadata=_opt(
            "Hugging Face Hub dataset id, or a local path: a directory laid out like a Hub parquet dataset "
            "(CONFIG/SPLIT.parquet, CONFIG/SPLIT-*.parquet, CONFIG/SPLIT/*.parquet, or SPLIT.parquet without configs), "
            "or a single .parquet/.jsonl file."
        ),
    )
    config: Optional[str] = field(
        default="es",
        metadata=_opt("Dataset config (MLSum: the language, es/de/fr/ru/tu); ignored by datasets without configs."),
    )
    split: str = field(
        default="test[0:500]",
        metadata=_opt("Split in datasets' syntax: test, test[0:500], test[:10%%], train+validation."),
    )
    text_field: str = field(default="summary", metadata=_opt("Column holding the text to classify."))
    model: str = field(
        default="Recognai/zeroshot_selectra_medium",
        metadata=_opt("NLI model: Hub id or local directory (needs an 'entailment' label in its config)."),
    )
    labels: tuple[str, ...] = field(
        default=DEFAULT_LABELS,
        metadata=_opt("Candidate labels, comma-separated.", parse=lambda s: parse_labels(s), show=",".join),
    )
    hypothesis_template: str = field(
        default="Esta noticia habla de {}.",
        metadata=_opt("Hypothesis template; '{}' is replaced by each label."),
    )
    multi_label: bool = field(
        default=False,
        metadata=_opt("Score each label independently (entailment vs contradiction) instead of a softmax over labels."),
    )
    precision: str = field(
        default="auto",
        metadata=_opt(
            "Model precision: fp32 (exact), bf16, fp16, or auto (bf16 on GPUs and on CPUs with native bf16, else fp32)."
        ),
    )
    batch_size: Optional[int] = field(
        default=None,
        metadata=_opt("Most (text, label) pairs per forward pass (default: 64 on CPU, 1024 on GPU); pairs are "
                      "sorted by length and also cut by a padded-token budget."),
    )
    num_workers: Optional[int] = field(
        default=None,
        metadata=_opt("Model workers in the actor pool (default: one per GPU in the cluster, or 1 without GPUs)."),
    )
    gpus_per_worker: Optional[float] = field(
        default=None,
        metadata=_opt("GPUs per model worker (default: 1 when the cluster has GPUs, else 0 = CPU workers)."),
    )
    cpus_per_worker: Optional[float] = field(
        default=None,
        metadata=_opt("CPUs per model worker (default: 1 with GPUs; without GPUs, the cluster's CPUs shared among workers)."),
    )
    overwrite: bool = field(default=False, metadata=_opt("Replace a non-empty output directory."))
    ray_address: Optional[str] = field(
        default=None,
        metadata=_opt("Ray cluster to join (default: $RAY_ADDRESS, the cluster of `ray job submit`, else a new local Ray)."),
    )
    rubrix: Optional[RubrixConfig] = field(
        default=None,
        metadata=_opt("Where to log the predictions after writing them (None: do not log).", cli=False),
    )

    def __post_init__(self) -> None:
        self.labels = parse_labels(self.labels)
        check_template(self.hypothesis_template)
        check_precision(self.precision)
        if not self.output:
            raise ZsRayError("--output is required")
        if not self.text_field:
            raise ZsRayError("--text-field must name a column")
        if self.batch_size is not None and self.batch_size < 1:
            raise ZsRayError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ZsRayError(f"--num-workers must be at least 1, got {self.num_workers}")
        for name in ("gpus_per_worker", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ZsRayError(f"--{name.replace('_', '-')} must not be negative, got {value}")
        if self.config == "":
            self.config = None
        self.ray_address = self.ray_address or os.environ.get("RAY_ADDRESS") or None

    def to_dict(self) -> dict:
        """The settings as plain JSON-able values (for the manifest); secrets left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("cli", True)}
        out["labels"] = list(self.labels)
        out.pop("ray_address", None)
        return out


# --------------------------------------------------------------------------- CLI glue

def _flag(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``AnnotateConfig`` field, with its default and help text."""
    for f in dataclasses.fields(AnnotateConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        default = None if f.default is dataclasses.MISSING else f.default
        if f.type in ("bool",) or isinstance(default, bool):
            parser.add_argument(_flag(f), action="store_true", **kwargs)
            continue
        shown = meta.get("show", str)(default) if default is not None else None
        if shown is not None:
            kwargs["help"] += f" (default: {shown})"
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        kwargs["default"] = default
        kwargs["type"] = _arg_type(f)
        parser.add_argument(_flag(f), **kwargs)


def _arg_type(f: dataclasses.Field):
    if "parse" in f.metadata:
        return str  # parsed (and validated) in __post_init__, where errors become one line
    t = str(f.type)
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def config_from_args(args: argparse.Namespace, rubrix: Optional[RubrixConfig] = None) -> AnnotateConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AnnotateConfig) if f.metadata.get("cli", True)}
    return AnnotateConfig(**values, rubrix=rubrix)
