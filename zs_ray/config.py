"""The settings of every zs-ray command: typed dataclasses, one mechanism for all.

Each command's settings are dataclasses: ``annotate`` takes ``AnnotateConfig`` (+ ``RubrixConfig`` to log),
``log`` takes ``LogConfig`` + ``RubrixConfig``, ``pull`` takes ``PullConfig`` + ``ServerConfig``; the other
commands' settings live beside them (``servers/config.py``, ``workflow/config.py``, ``workflow/tune_config.py``,
``train/config.py``), and only the CLI's table (``zs_ray.cli.COMMANDS``) lists them all: a settings module
imports other settings and the checks, never a command. From these come, with nothing written twice:

* the CLI flags (``zs_ray.cli``, through transformers' ``HfArgumentParser``: a field ``text_field`` is
  the flag ``--text-field``, its ``help`` metadata the help text, its default the default);
* ``--config-file FILE`` (YAML or JSON, the flags' names as keys; flags override the file);
* the Python API (``zs_ray.annotate(AnnotateConfig(...))``) and ``jobs/annotate_mlsum.py``.

Every field is checked in ``__post_init__``, so a bad value is one ``ZsRayError`` line whichever way it came.
The defaults reproduce the Rubrix tutorial: SELECTRA zero-shot on the first 500 summaries of MLSum-es' test.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional, Union

from zs_ray.checks import check_precision, check_template, parse_label_map, parse_labels
from zs_ray.errors import ZsRayError

_POOL = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class AnnotateConfig:
    """Settings of one annotation run: read -> tokenize -> model -> write (log: ``RubrixConfig``)."""

    output: str = field(default="", metadata=_help(
        "Output directory or URI (file://, s3://, ...) for the Parquet predictions and the manifest (required)."))
    dataset: str = field(default="mteb/mlsum", metadata=_help(
        "Hub dataset id, local directory laid out like a Hub Parquet dataset, fsspec URI, or one .parquet/"
        ".jsonl/.json file."))
    config: Optional[str] = field(default="es", metadata=_help(
        "Dataset config(s) (MLSum's languages): one (es), several (es,de), or all; ignored by datasets "
        "without configs. Several configs are one run and one output; each config gets its preset."))
    split: str = field(default="test[0:500]", metadata=_help(
        "Split in datasets' syntax, applied to each config: test, test[0:500], test[:10%%], train+validation, "
        "or all (every split of the config)."))
    text_field: str = field(default="summary", metadata=_help("Column holding the text to classify."))
    model: Optional[str] = field(default=None, metadata=_help(
        "NLI model (an 'entailment' label in its config), or a supervised text classifier (named classes, "
        "one forward pass per text; its classes are the labels): Hub id or local directory. Default: the "
        "config's preset (es: Recognai/zeroshot_selectra_medium)."))
    label_map: Optional[Union[dict, str]] = field(default=None, metadata=_help(
        "For a supervised classifier: JSON, or a YAML/JSON file, mapping the model's classes to candidate "
        "labels (classes left out are not candidates)."))
    labels: Optional[list[str]] = field(default=None, metadata=_help(
        "Candidate labels: comma-separated, or one per argument. Default: the config's preset (es: the six "
        "tutorial labels)."))
    hypothesis_template: Optional[str] = field(default=None, metadata=_help(
        "Hypothesis template; '{}' is replaced by each label. Default: the config's preset (es: 'Esta "
        "noticia habla de {}.')."))
    presets: Optional[str] = field(default=None, metadata=_help(
        "YAML file mapping each config to its model, hypothesis_template and labels (default: zs-ray's "
        "presets for the five MLSum languages); --model, --labels, --hypothesis-template override it."))
    multi_label: bool = field(default=False, metadata=_help(
        "Score each label on its own (entailment vs contradiction) instead of a softmax over labels."))
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "onnx-int8"] = field(default="auto", metadata=_help(
        "fp32 (exact: the pipeline's scores to 1e-4), bf16, fp16, int8 (CPU: dynamic int8 linears), onnx-int8 "
        "(CPU: the model exported to ONNX Runtime int8 once per machine), or auto (GPUs: bf16; CPUs: the "
        "fastest of this CPU's modes, measured once per machine and model, unless a more faithful one is within "
        "1.2x of it)."))
    batch_size: Optional[int] = field(default=None, metadata=_help(
        "Most (text, label) pairs per forward pass (default: 64 on CPU, 1024 on GPU); pairs are sorted by "
        "length and also cut by a padded-token budget."))
    num_workers: Optional[str] = field(default=None, metadata=_help(
        "Model actors: N (a fixed pool) or MIN-MAX (a pool that grows as the cluster autoscales). Default: "
        "with GPUs, from what is up now to as many as the cluster can ever hold; without GPUs, 1."))
    gpus_per_worker: Optional[float] = field(default=None, metadata=_help(
        "GPUs per model actor (default: 1 when the cluster has or can get GPUs, else 0 = CPU actors)."))
    cpus_per_worker: Optional[float] = field(default=None, metadata=_help(
        "CPUs per model actor (default: 1 with GPUs; without, the CPUs the other stages leave)."))
    resources_per_worker: Optional[Union[dict, str]] = field(default=None, metadata=_help(
        "Custom Ray resources per model actor, as JSON, e.g. '{\"accelerator_type:A10G\": 0.001}'."))
    overwrite: bool = field(default=False, metadata=_help(
        "Replace a non-empty output (only once the new output is complete)."))
    ray_address: Optional[str] = field(default=None, metadata=_help(
        "Ray cluster to join (default: $RAY_ADDRESS, the cluster of `ray job submit`, else a new local Ray)."))
    dry_run: bool = field(default=False, metadata=_help(
        "Print the plan (rows, pairs, model, pools and an estimated time per config and split, from a short "
        "calibration of each model on the cluster) and stop: reads only metadata, writes nothing."))

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = list(parse_labels(_comma_list(self.labels)))
        if self.hypothesis_template is not None:
            check_template(self.hypothesis_template)
        if self.label_map is not None:
            self.label_map = parse_label_map(self.label_map)
        check_precision(self.precision)
        if not self.output and not self.dry_run:
            raise ZsRayError("--output is required")
        if not self.text_field:
            raise ZsRayError("--text-field must name a column")
        if self.batch_size is not None and self.batch_size < 1:
            raise ZsRayError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.num_workers is not None:
            self.num_workers = str(self.num_workers).strip()
            self.worker_bounds()  # checks the syntax
        for name in ("gpus_per_worker", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ZsRayError(f"--{name.replace('_', '-')} must not be negative, got {value}")
        if isinstance(self.resources_per_worker, str):
            try:
                self.resources_per_worker = json.loads(self.resources_per_worker)
            except ValueError as exc:
                raise ZsRayError(f"--resources-per-worker is not JSON: {exc}") from None
        resources = self.resources_per_worker
        if resources is not None and (not isinstance(resources, dict) or not all(
                isinstance(v, (int, float)) and v >= 0 for v in resources.values())):
            raise ZsRayError(f"--resources-per-worker must map resource names to amounts, got {resources!r}")
        if self.config is not None:
            self.config = ",".join(c.strip() for c in str(self.config).split(",") if c.strip()) or None
        self.ray_address = self.ray_address or os.environ.get("RAY_ADDRESS") or None

    def worker_bounds(self) -> Optional[tuple[int, int]]:
        """``--num-workers`` as (min, max) actors; None when not set."""
        if self.num_workers is None:
            return None
        match = _POOL.match(self.num_workers)
        if not match:
            raise ZsRayError(f"--num-workers must be N or MIN-MAX, got {self.num_workers!r}")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if low < 1 or high < low:
            raise ZsRayError(f"--num-workers {self.num_workers}: need 1 <= MIN <= MAX")
        return low, high

    def to_dict(self) -> dict:
        """The settings as plain JSON-able values (for the manifest); where the job ran left out."""
        out = asdict(self)
        for key in ("ray_address", "dry_run"):
            out.pop(key, None)
        return out


@dataclass
class LogConfig:
    """``zs-ray log``: log (or finish logging) an existing output; the server settings are ``RubrixConfig``."""

    input: str = field(default="", metadata=_help("The annotation job's --output (directory or URI)."))
    update_suggestions: bool = field(default=False, metadata=_help(
        "Replace the prediction (2.x: the suggestion) and the score metadata of the logged records that no person "
        "answered by those of --input (e.g. a student model's output, same ids), exactly once; answered records "
        "are left as they are and counted, records not on the server counted, never created."))

    def __post_init__(self) -> None:
        if not self.input:
            raise ZsRayError("--input is required")


@dataclass
class PullConfig:
    """``zs-ray pull``: every record and annotation of a dataset to one Parquet file."""

    output: str = field(default="", metadata=_help("Parquet file to write (….parquet)."))
    status: Optional[list[str]] = field(default=None, metadata=_help(
        "Only records with these statuses (Default, Edited, Discarded, Validated)."))
    reviewers: Optional[list[str]] = field(default=None, metadata=_help(
        "Users whose answer decides a record over the majority (comma-separated or one per argument); the file "
        "holds every response either way, and the other commands take --consensus and --reviewers themselves."))

    def __post_init__(self) -> None:
        from zs_ray.team.config import parse_names

        if not self.output:
            raise ZsRayError("--output is required")
        self.reviewers = parse_names(self.reviewers)


def _comma_list(value) -> list[str]:
    """Labels as given: one comma-separated string, or a list whose items may hold commas."""
    items = [value] if isinstance(value, str) else list(value)
    return [part for item in items for part in str(item).split(",")]

